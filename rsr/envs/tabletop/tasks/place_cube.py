"""place_cube: pick the cube and place it in the container (plate or bowl), the paper's task."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsr.envs.tabletop import mjcf
from rsr.envs.tabletop.tasks import base

CONTAINER_OUTER_HALF = mjcf.CONTAINER_HALF + 2 * mjcf.CONTAINER_WALL


class PlaceCube(base.Task):
  name = "place_cube"
  task_id = 3
  layout = mjcf.SceneLayout(container=True)
  horizon = 80
  instruction = "put the cube in the container"
  goal_source = "container"

  def sample_init(self, key, layout_half):
    k_xy, k_yaw, k_tcp = jax.random.split(key, 3)
    # The cube must start clear of the (axis-aligned, square) container whatever its yaw: along x or y,
    # the centres are at least the container's outer half + the cube's footprint radius + 1 cm apart.
    xy = base.sample_separated(k_xy, 2, layout_half, CONTAINER_OUTER_HALF + base.footprint_radius(mjcf.CUBE_HALF)
                               + 0.01, metric="chebyshev")
    return base.Init(cube_xy=jnp.stack([xy[0], xy[0]]), cube_yaw=base.random_yaws(k_yaw),
                     goal=jnp.concatenate([xy[1], jnp.zeros(1)]), tcp=base.start_tcp(k_tcp))

  def keep_out(self, init, cube_half):
    # The container's whole footprint (the circle around its square) instead of the goal point.
    centres = jnp.concatenate([init.cube_xy, init.goal[None, :2]])
    radii = jnp.concatenate([base.footprint_radius(cube_half), jnp.array([CONTAINER_OUTER_HALF * jnp.sqrt(2.0)])])
    return centres, radii

  def _inside(self, view):
    rel = view.cube_pos[0] - view.goal
    inside_xy = jnp.all(jnp.abs(rel[:2]) < mjcf.CONTAINER_HALF - 0.5 * view.cube_half[0])
    resting = rel[2] < 2 * mjcf.CONTAINER_BASE_HALF_Z + view.cube_half[0] + 0.01
    return inside_xy & resting

  def success(self, view):
    return self._inside(view) & base.is_released(view)

  def reward(self, view):
    above = view.goal + jnp.array([0.0, 0.0, 0.06])
    return base.staged_pick_reward(view, above, self._inside(view), self.success(view))

  def expert_act(self, carry, view):
    place_at = view.goal + jnp.array([0.0, 0.0, 2 * mjcf.CONTAINER_BASE_HALF_Z + view.cube_half[0] + 0.006])
    return base.pick_and_place_expert(carry, view, place_at, final_hold=False)
