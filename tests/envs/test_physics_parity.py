"""MJX physics against C MuJoCo (the oracle): the cubes follow the same trajectories under the expert.

Each task is reset with a fixed key in an in-domain scene and its C twin is built right after the reset
(`oracle.to_mujoco`). Then, for N_STEPS control steps, the scripted expert (no noise) picks an action
from the MJX state; MJX steps with it (`env.step`), and C MuJoCo steps with the same action, mapped to
servo targets by `action_to_ctrl` from the twin's own joint positions (`oracle.step`). Every cube's
position must agree within TOL at every step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsr.envs import TASK_NAMES
from rsr.envs.tabletop import mjcf, oracle, scenes
from rsr.envs.tabletop.env import action_to_ctrl

N_STEPS = 50
TOL = 0.01  # m
MIN_TRAVEL = 0.03  # m: the expert must move a cube this far, or the comparison says little


@pytest.mark.parametrize("task", TASK_NAMES)
def test_cube_trajectories_match_c_mujoco(task, expert_sim):
  sim = expert_sim(task)  # jitted reset and expert step (env.step), shared per session
  env = sim.env
  state = sim.reset(jax.random.PRNGKey(1), scenes.sample(jax.random.PRNGKey(0), "id"))
  carry = sim.init()
  m, d = oracle.to_mujoco(env, state.inner)
  cube_adr = env._cube_qadr  # qpos addresses of the cubes' free joints

  def cube_pos(qpos):
    return np.stack([np.asarray(qpos[a:a + 3], np.float64) for a in cube_adr])

  start = cube_pos(d.qpos)
  deviation = np.zeros(N_STEPS)
  travel = 0.0
  for t in range(N_STEPS):
    state, carry, action = sim.advance(state, carry, 1)
    ctrl = np.asarray(action_to_ctrl(jnp.asarray(d.qpos), action), np.float64)
    oracle.step(m, d, ctrl, mjcf.N_SUBSTEPS)
    mjx_pos, c_pos = cube_pos(state.inner.data.qpos), cube_pos(d.qpos)
    deviation[t] = np.linalg.norm(mjx_pos - c_pos, axis=-1).max()
    travel = max(travel, np.linalg.norm(mjx_pos - start, axis=-1).max())

  worst = int(deviation.argmax())
  print(f"{task}: max cube position deviation {deviation.max() * 1e3:.3f} mm (step {worst}), "
        f"cube travel {travel * 1e3:.0f} mm")
  assert travel > MIN_TRAVEL, f"{task}: the expert moved no cube more than {travel * 1e3:.1f} mm"
  over = np.flatnonzero(deviation > TOL)
  assert over.size == 0, (
      f"{task}: MJX and C MuJoCo cube positions differ by up to {deviation.max() * 1e3:.1f} mm (step "
      f"{worst}), over {TOL * 1e3:.0f} mm from step {over[0]} on; per-step max deviation (mm): "
      " ".join(f"{x * 1e3:.1f}" for x in deviation))
