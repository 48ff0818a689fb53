"""A missing, unfinished, truncated, corrupted or mismatched dataset gives an error naming the file/field."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from data_pipelines import dataset


@pytest.fixture
def copy(tiny_dataset, tmp_path):
  """A private copy of the tiny dataset's directory, free to damage."""
  dst = tmp_path / "ds"
  shutil.copytree(dataset.find(tiny_dataset), dst)
  return dst


def _shard(path) -> str:
  return str(sorted(path.glob("rsr_tabletop-train.array_record-*"))[0])


def test_missing_and_unfinished(tmp_path):
  with pytest.raises(dataset.DatasetError, match=f"no dataset at {tmp_path}/nothing: the path does not exist"):
    dataset.open_dataset(str(tmp_path / "nothing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(dataset.DatasetError, match="looked for MANIFEST.json"):
    dataset.open_dataset(str(tmp_path / "empty"))


def test_dataset_without_manifest(copy):
  os.remove(copy / "MANIFEST.json")
  with pytest.raises(dataset.DatasetError, match="has no MANIFEST.json: it is not a finished dataset"):
    dataset.open_dataset(str(copy))


def test_truncated_shard_names_the_file(copy):
  shard = _shard(copy)
  size = os.path.getsize(shard)
  with open(shard, "r+b") as f:
    f.truncate(size // 2)
  with pytest.raises(dataset.DatasetError, match=f"shard {shard} is truncated or altered: {size // 2} bytes, "
                                                 f"the manifest says {size}"):
    dataset.open_dataset(str(copy))


def test_corrupted_shard_names_the_file(copy):
  shard = _shard(copy)
  with open(shard, "r+b") as f:
    f.seek(os.path.getsize(shard) // 2)
    b = f.read(16)
    f.seek(-16, 1)
    f.write(bytes(x ^ 0xFF for x in b))
  with pytest.raises(dataset.DatasetError, match=f"shard {shard} is corrupted: its SHA-256 differs"):
    dataset.open_dataset(str(copy))
  # Without the checksum pass, reading the damaged record still fails loudly, naming file and record.
  ds = dataset.open_dataset(str(copy), verify="size")
  with pytest.raises(dataset.DatasetError, match=f"{shard}: record \\d+ cannot be read"):
    for i in range(ds.num_episodes("train")):
      ds.read("train", i)


def test_mismatched_config_names_the_fields(tiny_dataset):
  with pytest.raises(dataset.DatasetError, match="height: dataset has 16, config expects 64; width: dataset "
                                                 "has 16, config expects 64; cameras: dataset has"):
    dataset.open_dataset(tiny_dataset, expect={"height": 64, "width": 64, "cameras": ("front", "wrist")})
  with pytest.raises(dataset.DatasetError, match="action_dim: dataset has 5, config expects 7"):
    dataset.open_dataset(tiny_dataset, expect={"action_dim": 7})


def test_features_disagreeing_with_manifest(copy):
  m = json.loads((copy / "MANIFEST.json").read_text())
  m["spec"]["height"] = 32
  (copy / "MANIFEST.json").write_text(json.dumps(m))
  with pytest.raises(dataset.DatasetError, match="features.json: steps/observation/rgb has shape \\(16, 16, 3\\); "
                                                 "the manifest says \\(32, 16, 3\\)"):
    dataset.open_dataset(str(copy))


def test_unknown_split(tiny_dataset):
  ds = dataset.open_dataset(tiny_dataset)
  with pytest.raises(dataset.DatasetError, match="has no split 'test'; it has: train, val, ood_color"):
    ds.num_episodes("test")
