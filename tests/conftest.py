"""Shared test fixtures.

JIT compilation of an env's reset and step dominates the tests' run time (tens of seconds per task on a
CPU), so the compiled functions of each task are built once per test session and shared by every test
module that asks for them.
"""

from __future__ import annotations

import os

# MuJoCo picks its OpenGL backend once, when `mujoco` is first imported (by any test module), so the
# headless EGL backend of the OpenGL oracle tests has to be chosen before anything imports it.
os.environ.setdefault("MUJOCO_GL", "egl")

import dataclasses  # noqa: E402
from typing import Any, Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ExpertSim:
  """One task's physics env and its jitted functions, driven by the scripted expert without noise.

  The env renders 1x1 shadowless images: its observations are not what the tests look at, and a bigger
  image would only slow every step down. The states it produces (`State.inner`) are valid for any env of
  the same task, whatever its image size.
  """

  env: Any  # rsr.envs.tabletop.env.TabletopEnv
  reset: Callable  # (key, scene) -> State
  init: Callable  # () -> expert carry
  # (state, carry, n) -> (state, carry, action): n expert control steps, each env.step(state,
  # expert action); action is the last one taken (zeros when n == 0). n is traced: one compilation
  # serves every n.
  advance: Callable


def _build_expert_sim(task: str) -> ExpertSim:
  from rsr.envs import make
  from rsr.eval import rollout

  env = make(task, height=1, width=1, shadows=False)
  policy = rollout.expert_policy(env, noise=0.0)
  key = jax.random.PRNGKey(0)  # unused with noise=0.0

  def advance(state, carry, n):
    def body(_, x):
      s, c, _ = x
      c, a = policy.act(c, s, key)
      return env.step(s, a), c, a

    action = jnp.zeros(env.action_spec().shape, jnp.float32)
    return jax.lax.fori_loop(0, n, body, (state, carry, action))

  return ExpertSim(env=env, reset=jax.jit(env.reset), init=jax.jit(policy.init), advance=jax.jit(advance))


@pytest.fixture(scope="session")
def expert_sim() -> Callable[[str], ExpertSim]:
  """expert_sim(task) -> ExpertSim, built (and compiled) once per task per session."""
  cache: dict[str, ExpertSim] = {}

  def get(task: str) -> ExpertSim:
    if task not in cache:
      cache[task] = _build_expert_sim(task)
    return cache[task]

  return get
