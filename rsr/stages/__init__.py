"""The stages of each binary, in the order they run, and how a `--config.stages` value is read.

One definition for the binaries (experiments.train_world_model, experiments.train_policy) and for
`reproduce`, which runs the same stages as sub-runs: a stage added here is one every caller knows.

  world model  tokenizer -> tokenize -> dynamics -> goal -> reward   (tokenizer.py, world_model.py, reward.py)
  policy       bc -> ppo | dyna                                      (bc.py, ppo.py, dyna.py; environments.py,
                                                                      and policy_config.py reads their config)
"""

from __future__ import annotations

from rsr.utils import checks

WORLD_MODEL = ("tokenizer", "tokenize", "dynamics", "goal", "reward")
POLICY = ("bc", "ppo", "dyna")


def parse(value: str, valid: tuple[str, ...]) -> list[str]:
  """A comma list of stage names -> the list; a ValueError names the unknown ones and the valid ones."""
  return checks.expand(value, valid, "stage(s)", allow_all=False)
