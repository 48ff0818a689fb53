"""pick_cube: grasp the cube and lift it to the visible goal marker (a sphere in the air)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsr.envs.tabletop import mjcf
from rsr.envs.tabletop.tasks import base

GOAL_THRESHOLD = 0.025  # m between cube centre and goal


class PickCube(base.Task):
  name = "pick_cube"
  task_id = 1
  layout = mjcf.SceneLayout(marker="sphere")
  horizon = 60
  instruction = "pick up the cube and lift it to the goal"
  goal_source = "marker"

  def sample_init(self, key, layout_half):
    k_xy, k_z, k_yaw, k_tcp = jax.random.split(key, 4)
    xy = base.sample_separated(k_xy, 2, layout_half, 0.06)
    goal = jnp.concatenate([xy[1], jax.random.uniform(k_z, (1,), minval=0.06, maxval=0.2)])
    return base.Init(cube_xy=jnp.stack([xy[0], xy[0]]),
                     cube_yaw=jax.random.uniform(k_yaw, (2,), minval=-jnp.pi, maxval=jnp.pi),
                     goal=goal, tcp=_start_tcp(k_tcp))

  def success(self, view):
    return jnp.linalg.norm(view.cube_pos[0] - view.goal) < GOAL_THRESHOLD

  def reward(self, view):
    w = base.Staged()
    reach = 1.0 - jnp.tanh(10.0 * jnp.linalg.norm(view.tcp - view.cube_pos[0]))
    grasped = base.is_grasped(view).astype(jnp.float32)
    move = grasped * (1.0 - jnp.tanh(5.0 * jnp.linalg.norm(view.cube_pos[0] - view.goal)))
    success = self.success(view).astype(jnp.float32)
    return w.reach * reach + w.grasp * grasped + w.move * move + w.success * success

  def expert_act(self, carry, view):
    return base.pick_and_place_expert(carry, view, view.goal, final_hold=True)


def _start_tcp(key):
  """Initial gripper position: above the middle of the table."""
  xy = jax.random.uniform(key, (2,), minval=-0.08, maxval=0.08)
  return jnp.concatenate([xy, jnp.array([0.18])])
