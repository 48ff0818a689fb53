r"""Quickstart: the whole RoboScape-R chain on one task, sized for a 2-core CPU (README command 1).

    python -m experiments.quickstart [--config=experiments/configs/quickstart.py:cpu] [--workdir=runs/quickstart]

collect expert data in the simulator -> train the world model (tokenizer, action-conditioned dynamics with
the done head, the learned reward head) -> behaviour cloning -> PPO in the simulator (`ppo_sim`), in the
world model with the learned reward (`ppo_wm_learned`) and with the endogenous reward (`roboscape_r`) ->
evaluation of all four policies in the real simulator, in-domain and out of domain -> the results table.
A progress bar per stage; every stage is a resumable sub-run, so re-running the command continues. At the
cpu preset: about 30 minutes and under 8 GB (docs/results.md). The same chain at full scale, every task and
3 seeds: experiments.reproduce.
"""

from __future__ import annotations

import os

from absl import flags

from experiments.common import define_config_file, run, run_and_report

_CONFIG = define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "quickstart.py") + ":cpu",
    "Quickstart config file and preset (tiny, cpu, paper).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Where every sub-run and the tables go.")


def main(argv):
  del argv
  run_and_report(_CONFIG.value, _WORKDIR.value)
  print("The paper's table (every task, 3 seeds): python -m experiments.reproduce "
        "--config=experiments/configs/reproduce.py:cpu")


if __name__ == "__main__":
  run(main)
