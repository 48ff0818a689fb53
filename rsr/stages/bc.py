"""The `bc` stage: behaviour cloning on the dataset's train split, every task at once (the policy is
task-conditioned), so that one initialisation serves every method and task (WORKDIR/checkpoints/bc).
Runs in the shared resumable loop (rsr/train/loop.py)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
import optax

from data_pipelines.loader import WindowConfig, WindowLoader
from rsr.agents import bc as bc_lib
from rsr.agents.networks import ActorCritic, init_params
from rsr.stages import policy_config
from rsr.train import loop
from rsr.train.checkpoint import Checkpointer
from rsr.train.state import TrainState


def _optimizer(config) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config.bc.lr))


def _initial_state(config, hw: tuple[int, int]) -> TrainState:
  """Step 0 of the seed's network: what a run starts from and what a checkpoint restores into."""
  params = init_params(policy_config.agent_config(config), jax.random.PRNGKey(config.seed), hw)
  return TrainState.create(params, _optimizer(config))


def run(config, workdir: str, ds, progress: bool = True, max_steps_this_run: int | None = None) -> dict:
  """Behaviour cloning on the train split (every task; windows of one frame)."""
  policy_config.check(config, ("bc",))

  acfg = policy_config.agent_config(config)
  model = ActorCritic(acfg)
  hw = (ds.spec.height, ds.spec.width)
  state = _initial_state(config, hw)
  inner = bc_lib.make_bc_step(model.apply, _optimizer(config), shift=config.bc.shift)
  base_key = jax.random.PRNGKey(config.seed + 7)
  front = ds.frame_keys[0]

  def to_batch(b):
    obs = {"rgb": b[front][:, 0], "task": b["task"]}
    if acfg.use_goal:  # demonstrations carry no goal image: the policy learns to act without one first
      obs["goal"] = np.zeros_like(obs["rgb"])
    return {"obs": obs, "action": b["action"][:, 0]}

  def step_fn(state: TrainState, batch):
    # The augmentation's key follows the step: a resumed run draws the same shifts.
    params, opt_state, m = inner(state.params, state.opt_state, batch, jax.random.fold_in(base_key, state.step))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), m

  loader = WindowLoader(ds, "train", WindowConfig(batch_size=config.bc.batch_size, window=1), seed=config.seed,
                        select=policy_config.bc_episodes(config, ds, "train"))
  held = to_batch(WindowLoader(ds, "val", WindowConfig(batch_size=256, window=1), seed=3,
                               select=policy_config.bc_episodes(config, ds, "val")).batch(0))
  val_loss = jax.jit(lambda p: bc_lib.bc_loss(model.apply, p, held)[1])

  def evaluate(state):
    return {f"val/bc_{k}": float(v) for k, v in val_loss(state.params).items()}

  state, last, finished = loop.run(
      "bc", workdir, state, step_fn, evaluate, loop.Schedule(config.bc.steps, config.bc.steps,
                                                            config.bc.checkpoint_every),
      compat(config, hw), loader=loader, batch_fn=to_batch, progress=progress, max_steps_this_run=max_steps_this_run)
  return {"steps": config.bc.steps, **last} if finished else {}


def compat(config, hw: tuple[int, int]) -> dict:
  """The fields a BC checkpoint must agree on with the config that loads it."""
  return {"agent": dataclasses.asdict(policy_config.agent_config(config)), "image": list(hw),
          "bc_batch": config.bc.batch_size, "bc_episodes": config.bc.episodes, "bc_shift": config.bc.shift,
          "seed": config.seed}


def load(config, workdir: str, hw: tuple[int, int]) -> Any:
  """The parameters of the finished BC stage in WORKDIR (a ValueError while it is unfinished)."""
  directory = os.path.join(workdir, "checkpoints", "bc")
  ckpt = Checkpointer(directory, compat=compat(config, hw))
  try:
    if ckpt.latest_step() != config.bc.steps:
      raise ValueError(f"behaviour cloning in {directory} is not finished: run the 'bc' stage first")
    state, _ = ckpt.restore(_initial_state(config, hw))
  finally:
    ckpt.close()
  return state.params
