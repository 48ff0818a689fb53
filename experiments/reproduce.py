r"""Reproduces the paper's comparison: in-domain vs out-of-domain success of RoboScape-R and its baselines.

    python -m experiments.reproduce --config=experiments/configs/reproduce.py:cpu --workdir=runs/reproduce

The whole chain for the grid methods x tasks x seeds (rsr/eval/reproduce.py): collect -> world model ->
one behaviour-cloning initialisation per seed -> PPO for `ppo_sim`, `ppo_wm_learned` and `roboscape_r`
(same BC weights, same number of updates) -> evaluation of every method (`bc` included) in the real
simulator on `id` and the OOD splits -> WORKDIR/tables/ (results.md, results.csv, improvement.csv,
results.tex, results.png). Every sub-run is a normal workdir of its binary; re-running the same command
skips what is done and resumes the rest. Use existing runs with --config.data_dir / --config.world_model_dir.
"""

from __future__ import annotations

import os
import resource
import time

from absl import app, flags
from ml_collections import config_flags

from experiments.common import usage_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "reproduce.py") + ":cpu",
    "Reproduce config file and preset (tiny, cpu, paper).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/reproduce", "Where every sub-run and the tables go.")


def run_and_report(config, workdir: str) -> dict:
  """Runs (or resumes) the chain, then prints the table, the wall time, the peak memory and every output."""
  from absl import logging

  from rsr.eval import reproduce

  logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO
  t0 = time.time()
  with usage_errors():
    reproduce.plan(config, workdir)  # every config error before anything runs
    out = reproduce.run(config, workdir)
  p, files = out["plan"], out["files"]
  with open(files["markdown"]) as f:
    print("\n" + f.read())
  # ru_maxrss is in KiB on Linux: the peak resident memory of this process (every stage runs in it).
  peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"Finished in {(time.time() - t0) / 60:.1f} min (this invocation; finished sub-runs are skipped), "
        f"peak memory {peak_gb:.1f} GB.")
  print(f"Files in {p.workdir}:")
  for what, path in reproduce.outputs(p):
    print(f"  {what}: {path}")
  for kind, path in files.items():
    print(f"  table ({kind}): {path}")
  return out


def main(argv):
  del argv
  run_and_report(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
