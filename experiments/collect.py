r"""Collects tabletop episodes into an RLDS dataset (TFDS, array_record), resumably and atomically.

    python -m experiments.collect --config=experiments/configs/collect.py:cpu --workdir=runs/data

The scripted experts run as jitted, vmapped rollouts (noisy and exploratory behaviour mixed in, failed
episodes kept) on in-domain scenes for train/val and on held-out OOD scenes only in their own splits.
The dataset appears at WORKDIR/data/rsr_tabletop/1.0.0/ when it is complete, with card.md/card.json (counts,
success, lengths, size) and config.json beside the data. Killed at any moment, the same command resumes;
run on a finished workdir it checks every shard against the manifest's SHA-256 and says so. Load it with
`data_pipelines.open_dataset(WORKDIR)` or `tfds.builder_from_directory(WORKDIR/data/rsr_tabletop/1.0.0)`.
"""

from __future__ import annotations

import os

from absl import flags

from experiments.common import define_config_file, run

_CONFIG = define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "collect.py") + ":cpu",
    "Collection config file and preset (tiny, cpu, paper).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/data", "Where the chunks, the dataset and its card go.")


def main(argv):
  del argv
  from data_pipelines import collect as collect_lib
  from data_pipelines import dataset as dataset_lib

  collect_lib.CollectConfig.from_config(_CONFIG.value)  # every config error before anything compiles
  path = collect_lib.collect(_CONFIG.value, _WORKDIR.value)  # a finished one: its shards' hashes checked
  ds = dataset_lib.open_dataset(path, verify="size")
  with open(os.path.join(ds.path, "card.md")) as f:
    print(f.read())
  print(f"dataset: {ds.path}")


if __name__ == "__main__":
  run(main)
