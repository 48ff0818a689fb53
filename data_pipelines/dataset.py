"""Opening a published dataset: find it, verify it, check it against what the config expects, read episodes.

A published dataset directory (`WORKDIR/data/rsr_tabletop/1.0.0/`) holds TFDS's own files
(`dataset_info.json`, `features.json`, `rsr_tabletop-SPLIT.array_record-NNNNN-of-MMMMM`), the dataset card,
the collection config and, written last, `MANIFEST.json`: every shard's size and SHA-256, and per split
an index of episodes (length, task, success, ...). The directory only ever appears by an atomic rename of
a finished one (see `collect.py`), so a missing manifest means the directory was not made by `collect`.

Every failure is a `DatasetError` that names the file or field and what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from typing import Any, Mapping

import numpy as np

from data_pipelines import rlds

MANIFEST = "MANIFEST.json"
FORMAT = 1
VERIFY = ("none", "size", "checksum")


class DatasetError(ValueError):
  """A dataset is missing, incomplete, corrupted, or not what the config expects."""


def dataset_dir(workdir: str) -> str:
  """Where `collect --workdir=WORKDIR` publishes its dataset."""
  return os.path.join(workdir, "data", rlds.NAME, rlds.VERSION)


def find(path: str) -> str:
  """The dataset directory at or below `path` (itself, DATA_DIR/rsr_tabletop/1.0.0, or a collect workdir)."""
  path = os.path.abspath(os.path.expanduser(path))
  candidates = [path, os.path.join(path, rlds.NAME, rlds.VERSION), dataset_dir(path)]
  for c in candidates:
    if os.path.exists(os.path.join(c, MANIFEST)):
      return c
  for c in candidates:
    if os.path.exists(os.path.join(c, "dataset_info.json")):
      raise DatasetError(f"{c} has no {MANIFEST}: it is not a finished dataset from experiments.collect")
  if os.path.isdir(os.path.join(path, ".collect")):
    from data_pipelines import collect  # it imports this module

    try:
      command = collect.resume_command(path)
    except (OSError, ValueError, KeyError):  # no readable config: the user knows best how it was started
      command = f"python -m experiments.collect --config=... --workdir={path}"
    raise DatasetError(f"{path} holds an unfinished collection; finish it with `{command}`")
  if not os.path.exists(path):
    raise DatasetError(f"no dataset at {path}: the path does not exist")
  raise DatasetError(f"no dataset at {path}: looked for {MANIFEST} in " + ", ".join(candidates))


def sha256(path: str, chunk: int = 1 << 22) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


@dataclasses.dataclass
class Dataset:
  """A verified dataset. `read(split, i)` -> one episode as stacked numpy arrays (see `_episode`)."""

  path: str
  spec: rlds.DatasetSpec
  manifest: dict
  features: Any  # tfds FeaturesDict

  def __post_init__(self):
    self._readers: dict[str, Any] = {}
    self._lock = threading.Lock()  # a loader's prefetch thread and its owner may read at once
    self._parser = example_parser(self.features)

  @property
  def splits(self) -> list[str]:
    return list(self.manifest["splits"])

  @property
  def frame_keys(self) -> tuple[str, ...]:
    """The per-step image fields a loader windows (one per camera)."""
    return tuple(rlds.camera_key(c) for c in self.spec.cameras)

  def index(self, split: str) -> dict[str, np.ndarray]:
    """Per-episode arrays of a split: length, task_id, success, noise, explore (data-source order)."""
    s = self._split(split)
    return {k: np.asarray(v) for k, v in s["episodes"].items()}

  def num_episodes(self, split: str) -> int:
    return int(sum(sh["records"] for sh in self._split(split)["shards"]))

  def _split(self, split: str) -> dict:
    if split not in self.manifest["splits"]:
      raise DatasetError(f"{self.path} has no split {split!r}; it has: {', '.join(self.splits)}")
    return self.manifest["splits"][split]

  def _locate(self, split: str, i: int) -> tuple[str, int]:
    for shard in self._split(split)["shards"]:
      if i < shard["records"]:
        return shard["file"], i
      i -= shard["records"]
    raise IndexError(f"episode index out of range for split {split!r} ({self.num_episodes(split)} episodes)")

  def raw(self, split: str, i: int) -> tuple[str, int, bytes]:
    from array_record.python import array_record_module

    name, j = self._locate(split, i)
    path = os.path.join(self.path, name)
    try:
      with self._lock:
        if name not in self._readers:
          self._readers[name] = array_record_module.ArrayRecordReader(path)
        return path, j, self._readers[name].read([j])[0]
    except (RuntimeError, OSError) as e:
      raise DatasetError(f"{path}: record {j} cannot be read ({str(e).splitlines()[0][:200]})") from None

  def read(self, split: str, i: int) -> dict[str, Any]:
    """Episode i of `split`: {obs keys: [L, ...], action, reward, success, is_first, is_last, is_terminal,
    discount: [L] or [L, A], "meta": episode_metadata}."""
    path, j, record = self.raw(split, i)
    try:
      ex = self._parser.parse_example(record)
    except Exception as e:  # a protobuf or shape error: the bytes are not an episode of this schema
      raise DatasetError(f"{path}: record {j} does not decode as an episode ({type(e).__name__}: {e})") from None
    return self._episode(ex, path, j, int(self._split(split)["episodes"]["length"][i]))

  def _episode(self, ex: Mapping[str, Any], path: str, j: int, length: int) -> dict[str, Any]:
    steps = ex["steps"]
    out = {k: np.asarray(v) for k, v in steps["observation"].items()}
    for k in ("action", "reward", "discount", "success", "is_first", "is_last", "is_terminal"):
      out[k] = np.asarray(steps[k])
    meta = {k: _text(v) for k, v in ex["episode_metadata"].items() if k != "scene"}
    meta["scene"] = dict(ex["episode_metadata"]["scene"])
    out["meta"] = meta
    want = (length, self.spec.height, self.spec.width, 3)
    for c in self.spec.cameras:
      got = out[rlds.camera_key(c)].shape
      if got != want:
        raise DatasetError(f"{path}: record {j} has observation/{rlds.camera_key(c)} of shape {got}; "
                           f"the manifest says {want}")
    if out["action"].shape != (length, self.spec.action_dim):
      raise DatasetError(f"{path}: record {j} has action of shape {out['action'].shape}; "
                         f"the manifest says {(length, self.spec.action_dim)}")
    return out


def example_parser(features):
  """TFDS's numpy parser of serialized examples: whole episodes as stacked arrays, no TensorFlow.

  The public path (`deserialize_example_np`) returns `steps` as a lazy per-step sequence, which costs a
  Python call per step to restack; the parser behind it is what we need (pinned TFDS version).
  """
  return features._example_parser_np  # pylint: disable=protected-access


def _text(v):
  v = np.asarray(v)
  if v.dtype.kind in "SO" and v.ndim == 0:
    return v.item().decode() if isinstance(v.item(), bytes) else v.item()
  return v.item() if v.ndim == 0 else v


def open_dataset(path: str, expect: Mapping[str, Any] | None = None, verify: str = "checksum") -> Dataset:
  """Finds, verifies and opens a dataset.

  expect: fields of DatasetSpec the caller's config requires (e.g. {"height": 64, "width": 64,
    "cameras": ("front",), "action_dim": 5}); any difference raises a DatasetError naming the field.
  verify: "checksum" (size and SHA-256 of every shard), "size" (sizes only) or "none".
  """
  import tensorflow_datasets as tfds

  if verify not in VERIFY:
    raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")
  path = find(path)
  mpath = os.path.join(path, MANIFEST)
  try:
    with open(mpath) as f:
      manifest = json.load(f)
    spec = rlds.DatasetSpec.from_dict(manifest["spec"])
    if manifest.get("format") != FORMAT:
      raise DatasetError(f"{mpath}: format {manifest.get('format')!r}; this code reads format {FORMAT}")
    shards = [sh for s in manifest["splits"].values() for sh in s["shards"]]
  except (OSError, ValueError, KeyError, TypeError) as e:
    if isinstance(e, DatasetError):
      raise
    raise DatasetError(f"{mpath} is unreadable or malformed ({type(e).__name__}: {e})") from None

  if verify != "none":
    for sh in shards:
      p = os.path.join(path, sh["file"])
      if not os.path.exists(p):
        raise DatasetError(f"shard {p} is missing")
      size = os.path.getsize(p)
      if size != sh["bytes"]:
        raise DatasetError(f"shard {p} is truncated or altered: {size} bytes, the manifest says {sh['bytes']}")
      if verify == "checksum" and sha256(p) != sh["sha256"]:
        raise DatasetError(f"shard {p} is corrupted: its SHA-256 differs from the manifest's")

  try:
    feats = tfds.builder_from_directory(path).info.features
  except Exception as e:  # TFDS raises many kinds; all mean the same thing to a user
    raise DatasetError(f"{path}: TFDS cannot read dataset_info.json/features.json ({type(e).__name__}: {e})") from None
  # The features TFDS will decode must agree with the manifest (a hand-edited or mixed-up directory).
  obs = feats["steps"]["observation"]
  for c in spec.cameras:
    k = rlds.camera_key(c)
    got = tuple(obs[k].shape) if k in obs else None
    if got != (spec.height, spec.width, 3):
      raise DatasetError(f"{path}/features.json: steps/observation/{k} has shape {got}; the manifest says "
                         f"{(spec.height, spec.width, 3)}")
  check_spec(spec, expect, path)
  return Dataset(path=path, spec=spec, manifest=manifest, features=feats)


def check_spec(spec: rlds.DatasetSpec, expect: Mapping[str, Any] | None, path: str) -> None:
  """Raises a DatasetError naming every field where the dataset differs from what the config expects."""
  if not expect:
    return
  have = spec.as_dict()
  bad = []
  for field, want in expect.items():
    if field not in have:
      raise ValueError(f"unknown dataset field {field!r}; fields: {', '.join(have)}")
    got = have[field]
    norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
    if norm(got) != norm(want):
      bad.append(f"{field}: dataset has {got!r}, config expects {want!r}")
  if bad:
    raise DatasetError(f"dataset {path} does not match the config: " + "; ".join(bad))
