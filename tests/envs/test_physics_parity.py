"""MJX physics against C MuJoCo (the oracle): the cubes follow the same trajectories under the expert.

Each task is reset in one scene of every split (distractors included) and a C twin of every environment
is built right after the reset (`oracle.to_mujoco`). Then, for N_STEPS control steps, the scripted expert
(no noise) picks actions from the MJX states; MJX steps with them (`env.step`, vmapped), and each C twin
steps with the same action, mapped to servo targets by `action_to_ctrl` from the twin's own joint
positions (`oracle.step`). Every cube's position must agree within TOL at every step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsr.envs import TASK_NAMES
from rsr.envs.tabletop import mjcf, oracle
from rsr.envs.tabletop.env import action_to_ctrl
from tests.conftest import BATCH_SPLITS, take

N_STEPS = 50
TOL = 0.01  # m
MIN_TRAVEL = 0.03  # m: the expert must move a cube this far, or the comparison says little


@pytest.mark.parametrize("task", TASK_NAMES)
def test_cube_trajectories_match_c_mujoco(task, batched_env):
  be = batched_env(task)
  env = be.env
  state, carry = be.start(jax.random.PRNGKey(1))
  twins = [oracle.to_mujoco(env, take(state.inner, i)) for i in range(len(BATCH_SPLITS))]
  adr = env._cube_qadr  # qpos addresses of the cubes' free joints

  def cubes(qpos):
    return np.stack([np.asarray(qpos[a:a + 3], np.float64) for a in adr])

  start = np.stack([cubes(d.qpos) for _, d in twins])
  deviation = np.zeros((N_STEPS, len(twins)))
  travel = np.zeros(len(twins))
  for t in range(N_STEPS):
    state, carry, action = be.expert_step(state, carry)
    qpos = np.asarray(state.inner.data.qpos)
    for i, (m, d) in enumerate(twins):
      ctrl = np.asarray(action_to_ctrl(jnp.asarray(d.qpos), action[i]), np.float64)
      oracle.step(m, d, ctrl, mjcf.N_SUBSTEPS)
      deviation[t, i] = np.linalg.norm(cubes(qpos[i]) - cubes(d.qpos), axis=-1).max()
      travel[i] = max(travel[i], np.linalg.norm(cubes(qpos[i]) - start[i], axis=-1).max())

  per_split = {s: f"{deviation[:, i].max() * 1e3:.2f}" for i, s in enumerate(BATCH_SPLITS)}
  print(f"{task}: max cube position deviation (mm) per split {per_split}")
  assert np.all(travel > MIN_TRAVEL), f"{task}: the expert moved no cube far enough: {travel * 1e3} mm"
  bad = {s: per_split[s] for i, s in enumerate(BATCH_SPLITS) if deviation[:, i].max() > TOL}
  assert not bad, (f"{task}: MJX and C MuJoCo cube positions differ by more than {TOL * 1e3:.0f} mm "
                   f"within {N_STEPS} steps in splits {bad} (mm)")
