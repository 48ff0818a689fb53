"""Writing a finished dataset: TFDS into a staging area, a full read-back, the manifest, one atomic rename.

    WORKDIR/.staging/rsr_tabletop/1.0.0/   TFDS writes here (itself via an `incomplete.*` directory)
      -> every record is decoded once: the episode index and the shard checksums go into MANIFEST.json,
         written last, after card.json, card.md and config.json; files and directory are fsynced
      -> os.rename to WORKDIR/data/rsr_tabletop/1.0.0/ (atomic on a POSIX file system)
A reader never sees a half-written dataset: before the rename there is nothing at the published path.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from absl import logging
from tqdm.auto import tqdm

from data_pipelines import card as card_lib
from data_pipelines import dataset as dataset_lib
from data_pipelines import rlds
from rsr.utils import media

STAGING = ".staging"


def write_dataset(workdir: str, spec: rlds.DatasetSpec,
                  examples: Mapping[str, Callable[[], Iterator[tuple[str, dict]]]], episodes: int,
                  config: Mapping[str, Any], seconds: Mapping[str, float] | None = None,
                  progress: bool = True) -> dict:
  """Writes, verifies and publishes `examples` (per split: a generator function of (key, example)) as the
  dataset of `workdir`; returns its card. `episodes` (the total) only sizes the progress bar."""
  seconds = dict(seconds or {})
  staging = os.path.join(workdir, STAGING)
  shutil.rmtree(staging, ignore_errors=True)  # a previous write that was killed
  t0 = time.time()
  version_dir = _write_tfds(spec, staging, examples, episodes, progress)
  seconds["write"] = time.time() - t0
  t0 = time.time()
  manifest = build_manifest(version_dir, spec, list(examples), progress)
  seconds["verify"] = time.time() - t0
  card = card_lib.make_card(manifest, version_dir, config, seconds=seconds)
  media.write_json(os.path.join(version_dir, "card.json"), card)
  media.write_text(os.path.join(version_dir, "card.md"), card_lib.markdown(card))
  media.write_json(os.path.join(version_dir, "config.json"), dict(config))
  media.write_json(os.path.join(version_dir, dataset_lib.MANIFEST), manifest)
  _fsync_tree(version_dir)
  publish(version_dir, dataset_lib.dataset_dir(workdir))
  shutil.rmtree(staging, ignore_errors=True)
  return card


def _write_tfds(spec: rlds.DatasetSpec, staging: str,
                examples: Mapping[str, Callable[[], Iterator[tuple[str, dict]]]], episodes: int,
                progress: bool) -> str:
  import tensorflow_datasets as tfds

  bar = tqdm(total=episodes, desc="write", unit="ep", disable=not progress, dynamic_ncols=True)

  def counted(gen_fn):
    def gen():
      for item in gen_fn():
        bar.update(1)
        yield item
    return gen

  tfds.disable_progress_bar()  # ours counts episodes across splits
  builder = rlds.RsrTabletop(spec=spec, examples={s: counted(g) for s, g in examples.items()},
                             data_dir=staging, file_format="array_record")
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)  # TFDS logs every shard at INFO
  try:
    with bar:
      builder.download_and_prepare(download_dir=os.path.join(staging, "downloads"))
  finally:
    logging.set_verbosity(verbosity)
  return builder.data_dir


def build_manifest(version_dir: str, spec: rlds.DatasetSpec, splits: list[str], progress: bool) -> dict:
  """Reads every record back (so a dataset that cannot be decoded is never published) and indexes it."""
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module

  info = tfds.builder_from_directory(version_dir).info
  parser = dataset_lib.example_parser(info.features)
  out, tasks = {}, set()
  total = sum(info.splits[s].num_examples for s in splits)
  with tqdm(total=total, desc="verify", unit="ep", disable=not progress, dynamic_ncols=True) as bar:
    for split in splits:
      s = info.splits[split]
      shards, index = [], {k: [] for k in ("episode_id", "length", "task_id", "success", "noise", "explore")}
      for name, n in zip(s.filenames, s.shard_lengths, strict=True):
        path = os.path.join(version_dir, name)
        reader = array_record_module.ArrayRecordReader(path)
        for j in range(n):
          ex = parser.parse_example(reader.read([j])[0])
          meta = ex["episode_metadata"]
          length = len(ex["steps"]["success"])
          if length != int(meta["length"]):
            raise dataset_lib.DatasetError(f"{path}: record {j} has {length} steps, its metadata says "
                                           f"{int(meta['length'])}")
          index["episode_id"].append(_str(meta["episode_id"]))
          index["length"].append(length)
          index["task_id"].append(int(meta["task_id"]))
          index["success"].append(bool(meta["success"]))
          index["noise"].append(float(meta["noise"]))
          index["explore"].append(_str(meta["policy"]) == "explore")
          tasks.add(_str(meta["task"]))
          bar.update(1)
        reader.close()
        shards.append({"file": name, "records": int(n), "bytes": os.path.getsize(path),
                       "sha256": dataset_lib.sha256(path)})
      out[split] = {"shards": shards, "episodes": index}
  return {"format": dataset_lib.FORMAT, "name": rlds.NAME, "version": rlds.VERSION,
          "spec": spec.as_dict(), "tasks": sorted(tasks), "splits": out}


def _str(v) -> str:
  v = np.asarray(v).item()
  return v.decode() if isinstance(v, bytes) else str(v)


def publish(src: str, dst: str) -> None:
  """Moves a finished directory into place with one rename (atomic on a POSIX file system)."""
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  if os.path.exists(dst):  # e.g. a directory copied in by hand: never overwrite what we did not make
    raise dataset_lib.DatasetError(f"{dst} exists but is not a finished dataset; move it away and re-run")
  os.rename(src, dst)
  _fsync_dir(os.path.dirname(dst))


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _fsync_tree(path: str) -> None:
  for f in glob.glob(os.path.join(path, "*")):
    if os.path.isfile(f):
      with open(f, "rb") as fh:
        os.fsync(fh.fileno())
  _fsync_dir(path)
