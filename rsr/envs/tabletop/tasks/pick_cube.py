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
    return base.Init(cube_xy=jnp.stack([xy[0], xy[0]]), cube_yaw=base.random_yaws(k_yaw), goal=goal,
                     tcp=base.start_tcp(k_tcp))

  def success(self, view):
    return jnp.linalg.norm(view.cube_pos[0] - view.goal) < GOAL_THRESHOLD

  def reward(self, view):
    # Nothing is placed: the cube is held at the goal, so the place stage never pays.
    return base.staged_pick_reward(view, view.goal, jnp.zeros((), bool), self.success(view))

  def expert_act(self, carry, view):
    return base.pick_and_place_expert(carry, view, view.goal, final_hold=True)

