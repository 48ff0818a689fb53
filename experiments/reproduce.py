r"""Reproduces the paper's comparison: in-domain vs out-of-domain success of RoboScape-R and its baselines.

    python -m experiments.reproduce --config=experiments/configs/reproduce.py:cpu --workdir=runs/reproduce

The whole chain for the grid methods x tasks x seeds (rsr/stages/reproduce.py): collect -> world model ->
one behaviour-cloning initialisation per seed -> PPO for `ppo_sim`, `ppo_wm_learned` and `roboscape_r`
(same BC weights, same number of updates) -> evaluation of every method (`bc` included) in the real
simulator on `id` and the OOD splits -> WORKDIR/tables/ (results.md, results.csv, improvement.csv,
results.tex, results.png). Every sub-run is a normal workdir of its binary; re-running the same command
skips what is done and resumes the rest. Use existing runs with --config.data_dir / --config.world_model_dir.
"""

from __future__ import annotations

import os

from absl import flags

from experiments.common import define_config_file, run, run_and_report

_CONFIG = define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "reproduce.py") + ":cpu",
    "Reproduce config file and preset (tiny, cpu, paper).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/reproduce", "Where every sub-run and the tables go.")


def main(argv):
  del argv
  run_and_report(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  run(main)
