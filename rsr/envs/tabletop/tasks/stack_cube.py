"""stack_cube: put the red cube (cube_a) on top of the green cube (cube_b) and let go."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsr.envs.tabletop import mjcf
from rsr.envs.tabletop.tasks import base


class StackCube(base.Task):
  name = "stack_cube"
  task_id = 2
  layout = mjcf.SceneLayout(cube_b=True)
  horizon = 80
  instruction = "stack the red cube on the green cube"
  goal_source = "cube_b"

  def sample_init(self, key, layout_half):
    k_xy, k_yaw, k_tcp = jax.random.split(key, 3)
    xy = base.sample_separated(k_xy, 2, layout_half, 0.09)
    return base.Init(cube_xy=xy, cube_yaw=base.random_yaws(k_yaw), goal=jnp.zeros(3),
                     tcp=base.start_tcp(k_tcp))

  def _stacked(self, view):
    rel = view.cube_pos[0] - view.cube_pos[1]
    on_top = jnp.abs(rel[2] - view.cube_half[0] - view.cube_half[1]) < 0.008
    return (jnp.linalg.norm(rel[:2]) < 0.02) & on_top

  def success(self, view):
    return self._stacked(view) & base.is_released(view)

  def reward(self, view):
    above = view.cube_pos[1] + jnp.array([0.0, 0.0, 1.0]) * (view.cube_half[0] + view.cube_half[1])
    return base.staged_pick_reward(view, above, self._stacked(view), self.success(view))

  def expert_act(self, carry, view):
    place_at = view.cube_pos[1] + jnp.array([0.0, 0.0, 1.0]) * (view.cube_half[0] + view.cube_half[1] + 0.004)
    return base.pick_and_place_expert(carry, view, place_at, final_hold=False)
