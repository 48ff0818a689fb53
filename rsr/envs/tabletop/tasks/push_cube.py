"""push_cube: push the cube along the table onto the marked target (a disc on the table)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsr.envs.tabletop import mjcf
from rsr.envs.tabletop.tasks import base

GOAL_THRESHOLD = 0.025  # m between cube and target centres, in the table plane
PUSH_Z = 0.018  # TCP height while pushing: finger tips just above the table
# Closed fingers form a paddle whose face is normal to the gripper's y axis; its half thickness:
PADDLE_HALF = 2 * mjcf.FINGER_HALF[1]

ALIGN, LOWER, PUSH = range(3)
PUSH_SPEED = 0.4  # action units while in contact (1.6 cm per step): a gentle push keeps the cube flat


class PushCube(base.Task):
  name = "push_cube"
  task_id = 0
  layout = mjcf.SceneLayout(marker="disc")
  horizon = 60
  instruction = "push the cube onto the target"
  goal_source = "marker"

  def sample_init(self, key, layout_half):
    k_xy, k_dir, k_dist, k_yaw, k_tcp = jax.random.split(key, 5)
    cube = jax.random.uniform(k_xy, (2,), minval=-1.0, maxval=1.0) * layout_half
    angle = jax.random.uniform(k_dir, (), minval=-jnp.pi, maxval=jnp.pi)
    dist = jax.random.uniform(k_dist, (), minval=0.08, maxval=0.14)
    goal = jnp.clip(cube + dist * jnp.array([jnp.cos(angle), jnp.sin(angle)]), -0.2, 0.2)
    return base.Init(cube_xy=jnp.stack([cube, cube]), cube_yaw=base.random_yaws(k_yaw),
                     goal=jnp.concatenate([goal, jnp.array([0.001])]), tcp=base.start_tcp(k_tcp))

  def keep_out(self, init, cube_half):
    # The cube's path to the target must stay clear too: footprints at quarter points along it.
    centres, radii = super().keep_out(init, cube_half)
    path = init.cube_xy[0] + jnp.array([0.25, 0.5, 0.75])[:, None] * (init.goal[:2] - init.cube_xy[0])
    return (jnp.concatenate([centres, path]),
            jnp.concatenate([radii, jnp.full((3,), base.footprint_radius(cube_half[0]))]))

  def success(self, view):
    return jnp.linalg.norm(view.cube_pos[0, :2] - view.goal[:2]) < GOAL_THRESHOLD

  def _push_frame(self, view):
    cube = view.cube_pos[0]
    to_goal = view.goal[:2] - cube[:2]
    direction = to_goal / jnp.maximum(jnp.linalg.norm(to_goal), 1e-6)
    standoff = view.cube_half[0] * jnp.sqrt(2.0) + PADDLE_HALF + 0.012
    behind = jnp.concatenate([cube[:2] - direction * standoff, jnp.array([PUSH_Z])])
    return direction, behind

  def reward(self, view):
    w = base.Staged()
    _, behind = self._push_frame(view)
    reach = 1.0 - jnp.tanh(10.0 * jnp.linalg.norm(view.tcp - behind))
    move = 1.0 - jnp.tanh(5.0 * jnp.linalg.norm(view.cube_pos[0, :2] - view.goal[:2]))
    success = self.success(view).astype(jnp.float32)
    return w.reach * reach + (w.grasp + w.move) * move + w.success * success

  def expert_act(self, carry, view):
    cube = view.cube_pos[0]
    direction, behind = self._push_frame(view)
    # Face the paddle (gripper y axis) along the push direction; the paddle is symmetric under pi.
    yaw = jnp.arctan2(direction[1], direction[0]) - jnp.pi / 2
    yaw = yaw + jnp.round((view.yaw - yaw) / jnp.pi) * jnp.pi
    hover = behind.at[2].set(base.HOVER)
    finish = jnp.concatenate([view.goal[:2] - direction * (view.cube_half[0] + PADDLE_HALF) + direction * 0.01,
                              jnp.array([PUSH_Z])])
    phase = carry.phase
    target = jnp.stack([hover, behind, finish])[phase]
    gain = jnp.where(phase == PUSH, 0.6, 1.5)
    action = base.move_to(view, target, jnp.where(phase == PUSH, view.yaw, yaw), 1.0, gain=gain,
                          max_speed=jnp.where(phase == PUSH, PUSH_SPEED, 1.0))
    # Leaving the cube (to realign, or once it is on the target, where the push direction means nothing)
    # goes back away from it at table height first, then straight up: a paddle dragged up or sideways
    # along a cube's face flips it.
    arrived = jnp.linalg.norm(view.goal[:2] - cube[:2]) < 0.6 * GOAL_THRESHOLD
    leaving = ((phase == ALIGN) & (view.tcp[2] < base.HOVER - 0.02)) | arrived
    away = view.tcp[:2] - cube[:2]
    gap = jnp.linalg.norm(away)
    back = jnp.concatenate([away / jnp.maximum(gap, 1e-6) * 0.5, jnp.zeros(2), jnp.ones(1)])
    up = jnp.array([0.0, 0.0, 1.0, 0.0, 1.0])
    clear = gap > view.cube_half[0] * jnp.sqrt(2.0) + PADDLE_HALF + 0.02
    action = jnp.where(leaving, jnp.where(clear, up, back), action)

    rel = cube[:2] - view.tcp[:2]
    lateral = jnp.abs(rel[0] * direction[1] - rel[1] * direction[0])
    ahead = rel @ direction
    yaw_err = jnp.abs(base.wrap_angle(yaw - view.yaw, jnp.pi))
    done_phase = jnp.select(
        [phase == ALIGN, phase == LOWER],
        [(jnp.linalg.norm(hover[:2] - view.tcp[:2]) < 0.008) & (yaw_err < 0.08),
         jnp.abs(view.tcp[2] - PUSH_Z) < 0.006],
        False)
    # Realign when the cube has slid off the paddle's line or the paddle is no longer behind it.
    lost = (phase == PUSH) & ((lateral > 0.01) | (ahead < 0.0)) & (carry.timer >= 1)
    carry = base.advance(carry, done_phase)
    carry = base.advance(carry, lost, jnp.asarray(ALIGN))
    return carry, action
