"""A policy trained by experiments.train_policy, loaded from its workdir for evaluation in the simulator.

    trained = load("runs/policy")          # WORKDIR/config.json + WORKDIR/checkpoints/{bc,ppo}
    trained.stage, trained.step, trained.finished, trained.image_size
    policy = trained.make_policy(trained.params)   # rollout.Policy: the actor-critic's mean action

The latest stage is evaluated: the Dyna loop's latest round if it has one, else PPO if it has a checkpoint
(finished or not; `finished` says which), else the finished behaviour cloning. What is evaluated is the
deterministic mean action (clipped to [-1, 1]), as in the PPO stage's own evaluation. Anything missing or
unreadable is a ValueError that names the path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import ml_collections

from rsr.agents.networks import ActorCritic
from rsr.envs import rollout as rollout_lib
from rsr.stages import bc as stage_bc
from rsr.stages import dyna as stage_dyna
from rsr.stages import policy_config
from rsr.stages import ppo as stage_ppo
from rsr.train.checkpoint import CheckpointError
from rsr.utils import configs as configs_lib

# The starts of the errors rsr.train raises about a checkpoint directory (unfinished, another config).
_OWN_ERRORS = ("behaviour cloning in ", "the checkpoints in ", "no PPO checkpoint in ")


@dataclasses.dataclass(frozen=True)
class TrainedPolicy:
  workdir: str
  config: ml_collections.ConfigDict  # the run's config.json
  stage: str  # "ppo", "dyna" (its last round's PPO) or "bc"
  step: int  # the checkpoint's step (PPO: compiled calls; BC: gradient steps)
  finished: bool  # the stage ran to its configured end
  image_size: tuple[int, int]  # (height, width) the policy was trained on
  params: Any  # the actor-critic's parameters

  @property
  def task(self) -> str | None:
    """The task PPO trained on; None for behaviour cloning (one policy for every task)."""
    return self.config.task if self.stage in ("ppo", "dyna") else None

  def make_policy(self, params: Any) -> rollout_lib.Policy:
    """The mean-action policy of these weights (params is an argument so that one compiled rollout serves
    any weights of the same network)."""

    model = ActorCritic(policy_config.agent_config(self.config))
    return stage_ppo.agent_policy(model.apply, params, self.config.agent.use_goal)

  def describe(self) -> dict:
    """What a results file records about the evaluated policy."""
    return {"policy": self.workdir, "stage": self.stage, "step": self.step, "finished": self.finished}


def _steps(directory: str) -> list[int]:
  """The checkpoint steps orbax committed in `directory` (step folders are named by the integer)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if re.fullmatch(r"\d+", d))


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def load(workdir: str) -> TrainedPolicy:
  """Loads the latest stage of a train_policy workdir (see the module docstring).

  Raises:
    ValueError: naming the path, when the workdir, its config.json or a finished checkpoint is missing,
      or when a checkpoint cannot be read or comes from another config.
  """

  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise ValueError(f"no policy at {workdir}: the path does not exist (expected a train_policy workdir)")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"{workdir} is not a train_policy workdir: {path} is missing")
  try:
    config = configs_lib.read(path, "policy")
    missing = [k for k in ("agent", "bc", "ppo", "seed", "task") if k not in config]
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot read {path}: {_one_line(e)}") from None
  if missing:
    raise ValueError(f"{path} is not a train_policy config: it lacks {', '.join(missing)}")
  bc_compat = os.path.join(workdir, "checkpoints", "bc", "compat.json")
  if not _steps(os.path.dirname(bc_compat)) or not os.path.isfile(bc_compat):
    raise ValueError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: behaviour cloning has not "
                     "saved one (run experiments.train_policy there first)")
  try:
    with open(bc_compat) as f:
      image_size = tuple(int(v) for v in json.load(f)["image"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"cannot read {bc_compat}: {_one_line(e)}") from None

  ppo_dir = os.path.join(workdir, "checkpoints", "ppo")
  stage = "ppo" if _steps(ppo_dir) and os.path.isfile(os.path.join(ppo_dir, "compat.json")) else "bc"
  if any(_steps(os.path.join(stage_dyna.round_dir(workdir, r), "checkpoints", "ppo"))
         for r in range(config.dyna.rounds)):
    stage = "dyna"
  directory = os.path.join(workdir, "checkpoints", stage) if stage != "dyna" else os.path.join(workdir, "dyna")
  try:
    if stage == "dyna":
      params, r, step = stage_dyna.load_params(config, workdir, image_size)
      finished = r == config.dyna.rounds - 1 and step == stage_ppo.calls(stage_dyna.round_config(config, r))
    elif stage == "ppo":
      params, step = stage_ppo.load_params(config, workdir, image_size)
      finished = step == stage_ppo.calls(config)
    else:
      params, step, finished = stage_bc.load(config, workdir, image_size), config.bc.steps, True
  except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds; the user needs the path
    if isinstance(e, CheckpointError) or (isinstance(e, ValueError) and str(e).startswith(_OWN_ERRORS)):
      raise ValueError(str(e).strip().splitlines()[0]) from None  # ours: they name the directory and step
    raise ValueError(f"cannot read the {stage} checkpoint in {directory}: {_one_line(e)}") from None
  return TrainedPolicy(workdir=workdir, config=config, stage=stage, step=int(step), finished=finished,
                       image_size=image_size, params=params)
