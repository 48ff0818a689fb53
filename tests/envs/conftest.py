"""Fixtures of the env tests: one compiled, batched env per task, shared by every module."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import pytest

from rsr import envs
from rsr.envs.tabletop import scenes as scenes_lib

# One environment per split: every batch mixes all of them, which is itself part of what is tested.
BATCH_SPLITS = tuple(scenes_lib.SPLITS)


@dataclasses.dataclass(frozen=True)
class BatchedEnv:
  env: Any
  reset: Callable  # (keys[B], scenes[B]) -> State[B]
  step: Callable  # (State[B], actions[B, 5]) -> State[B]

  def scenes(self, key: jax.Array):
    """One scene of every split: a SceneParams batch of len(BATCH_SPLITS)."""
    parts = [scenes_lib.sample(jax.random.fold_in(key, i), s) for i, s in enumerate(BATCH_SPLITS)]
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *parts)


@pytest.fixture(scope="session")
def batched_env() -> Callable[[str], BatchedEnv]:
  """batched_env(task): tiny images from both cameras, compiled once per task per session."""
  cache: dict[str, BatchedEnv] = {}

  def get(task: str) -> BatchedEnv:
    if task not in cache:
      env = envs.make(task, height=16, width=16, cameras=("front", "wrist"))
      cache[task] = BatchedEnv(env=env, reset=jax.jit(jax.vmap(env.reset)), step=jax.jit(jax.vmap(env.step)))
    return cache[task]

  return get
