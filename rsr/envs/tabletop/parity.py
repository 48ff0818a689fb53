"""How far MJX and C MuJoCo drift apart under the same actions, and how far C MuJoCo drifts from itself.

`compare(env, reset, step, expert, noise, ...)` resets a batch of environments (one noise level per
episode, splits cycled), builds a C MuJoCo twin of each right after the reset (`oracle.to_mujoco`) and,
optionally, a second twin with cube_a nudged by `nudge` metres. Then for `steps` control steps the scripted
expert picks actions from the MJX states, Gaussian noise of the episode's level is added (as
`data_pipelines/behaviour.py` does), MJX steps the batch and every twin steps with the same action, mapped
to servo targets by `action_to_ctrl` from the twin's own joint positions. The result is the largest cube
position difference per step and episode, MJX vs C and C vs nudged C: the second says how chaotic the
episode is, so that a model difference (the first large, the second small) is told from chaos (both large).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from rsr.envs.tabletop import mjcf, oracle
from rsr.envs.tabletop import scenes as scenes_lib
from rsr.envs.tabletop.env import TabletopEnv, action_to_ctrl


@dataclasses.dataclass(frozen=True)
class Drift:
  noise: np.ndarray  # f32[E] action noise std of each episode
  split: tuple[str, ...]  # E split names
  mjx_vs_c: np.ndarray  # f32[T, E] largest cube position difference (m) after each step
  c_vs_nudged: np.ndarray | None  # f32[T, E], or None without a nudge
  travel: np.ndarray  # f32[E] farthest any cube moved from its start (m)

  def parted(self, tol: float) -> np.ndarray:
    """bool[E]: MJX and C MuJoCo cubes more than `tol` apart at some step."""
    return self.mjx_vs_c.max(axis=0) > tol


def compare(env: TabletopEnv, reset: Callable, step: Callable, expert: Callable, noise: Sequence[float],
            splits: Sequence[str], key: jax.Array, steps: int = 50, nudge: float | None = None,
            seed: int = 0) -> Drift:
  """reset/step/expert: jitted vmapped env.reset, env.step and the noise-free expert's act
  ((carries, states, keys) -> (carries, actions)); noise, splits: per episode (splits cycled)."""
  noise = np.asarray(noise, np.float32)
  n = len(noise)
  split = tuple(splits[i % len(splits)] for i in range(n))
  scenes = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[
      scenes_lib.sample(jax.random.fold_in(key, i), s) for i, s in enumerate(split)])
  state = reset(jax.random.split(key, n), scenes)
  carry = jax.tree_util.tree_map(lambda x: jnp.stack([x] * n), env.task.expert_init())
  inner = jax.device_get(state.inner)
  twins = [oracle.to_mujoco(env, jax.tree_util.tree_map(lambda x, i=i: x[i], inner)) for i in range(n)]
  adr = env._cube_qadr  # qpos addresses of the cubes' free joints
  nudged = None
  if nudge is not None:
    nudged = []
    for m, d in twins:
      d2 = mujoco.MjData(m)
      d2.qpos[:], d2.qvel[:], d2.ctrl[:] = d.qpos, d.qvel, d.ctrl
      d2.mocap_pos[:], d2.mocap_quat[:] = d.mocap_pos, d.mocap_quat
      d2.qpos[adr[0]] += nudge
      mujoco.mj_forward(m, d2)
      nudged.append(d2)

  def cubes(qpos):
    return np.stack([np.asarray(qpos[a:a + 3], np.float64) for a in adr])

  def c_step(m, d, action):
    oracle.step(m, d, np.asarray(action_to_ctrl(jnp.asarray(d.qpos), action), np.float64), mjcf.N_SUBSTEPS)

  start = np.stack([cubes(d.qpos) for _, d in twins])
  apart = np.zeros((steps, n))
  chaos = np.zeros((steps, n)) if nudged is not None else None
  travel = np.zeros(n)
  rng = np.random.default_rng(seed)
  keys = jax.random.split(jax.random.PRNGKey(0), n)  # the expert itself is deterministic
  for t in range(steps):
    carry, action = expert(carry, state, keys)
    action = np.clip(np.asarray(action) + noise[:, None] * rng.standard_normal(action.shape), -1.0, 1.0)
    state = step(state, jnp.asarray(action, jnp.float32))
    qpos = np.asarray(state.inner.data.qpos)
    for i, (m, d) in enumerate(twins):
      c_step(m, d, action[i])
      apart[t, i] = np.linalg.norm(cubes(qpos[i]) - cubes(d.qpos), axis=-1).max()
      travel[i] = max(travel[i], np.linalg.norm(cubes(qpos[i]) - start[i], axis=-1).max())
      if nudged is not None:
        c_step(m, nudged[i], action[i])
        chaos[t, i] = np.linalg.norm(cubes(nudged[i].qpos) - cubes(d.qpos), axis=-1).max()
  return Drift(noise=noise, split=split, mjx_vs_c=apart, c_vs_nudged=chaos, travel=travel)
