"""What every tabletop task is made of, and the mechanics the tasks share.

A task sees the simulation through a `SimView` (privileged positions, the scene's sizes) and defines:
where objects start (`sample_init`), `success`, a staged dense handcrafted reward, and a scripted expert
(a small phase machine over waypoints, run as a proportional controller on the TCP).
"""

from __future__ import annotations

import abc
import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from rsr.envs.tabletop import mjcf

# Action scaling: one action unit moves the TCP target this far per control step.
MAX_DELTA_POS = 0.04  # m
MAX_DELTA_YAW = 0.3  # rad
ACTION_DIM = 5  # dx, dy, dz, dyaw, gripper (> 0 closed, <= 0 open)

HOVER = 0.07  # m above an object before descending onto it
CARRY_Z = 0.13  # m: carrying height, above every distractor
GOAL_CLEARANCE = 0.03  # m: radius around a goal point that distractors keep clear


@struct.dataclass
class SimView:
  """The privileged state a task reasons about (one environment)."""

  tcp: jax.Array  # f32[3] tool centre point
  yaw: jax.Array  # f32[]
  fingers: jax.Array  # f32[2] inner-face distance of each finger from the centre line
  cube_pos: jax.Array  # f32[2, 3] cube_a, cube_b (cube_b = cube_a's values when absent)
  cube_quat: jax.Array  # f32[2, 4]
  cube_half: jax.Array  # f32[2]
  goal: jax.Array  # f32[3] the task's goal point (marker, container centre, or cube_b)
  container_wall_half_h: jax.Array  # f32[]


@struct.dataclass
class Init:
  """Where a task's objects start."""

  cube_xy: jax.Array  # f32[2, 2]
  cube_yaw: jax.Array  # f32[2]
  goal: jax.Array  # f32[3] marker / container position (ignored by tasks without one)
  tcp: jax.Array  # f32[3] initial gripper position


@struct.dataclass
class ExpertCarry:
  phase: jax.Array  # i32[]
  timer: jax.Array  # i32[] control steps spent in the current phase


def cube_yaw(quat: jax.Array) -> jax.Array:
  """Yaw of a cube from its quaternion (w, x, y, z), folded to [-pi/4, pi/4) by its 90 deg symmetry."""
  w, x, y, z = quat[0], quat[1], quat[2], quat[3]
  yaw = jnp.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
  return jnp.mod(yaw + jnp.pi / 4, jnp.pi / 2) - jnp.pi / 4


def wrap_angle(a: jax.Array, period: float = 2 * jnp.pi) -> jax.Array:
  return jnp.mod(a + period / 2, period) - period / 2


def sample_separated(key: jax.Array, n: int, half: jax.Array, min_dist: float, tries: int = 32,
                     metric: str = "euclidean") -> jax.Array:
  """n points uniform in the square |x|, |y| <= half, pairwise >= min_dist apart when possible: f32[n, 2].

  `metric` "euclidean" keeps round footprints apart; "chebyshev" (the larger of |dx| and |dy|) keeps an
  axis-aligned square footprint clear of another object's. Draws `tries` candidate sets and keeps the
  first valid one (the last one if none is), so it stays a fixed-shape, jittable computation.
  """
  pts = jax.random.uniform(key, (tries, n, 2), minval=-1.0, maxval=1.0) * half
  diff = pts[:, :, None, :] - pts[:, None, :, :]
  if metric == "euclidean":
    dist = jnp.linalg.norm(diff, axis=-1)
  elif metric == "chebyshev":
    dist = jnp.max(jnp.abs(diff), axis=-1)
  else:
    raise ValueError(f"metric must be 'euclidean' or 'chebyshev', got {metric!r}")
  ok = jnp.all(dist + jnp.eye(n) * 1e3 >= min_dist, axis=(1, 2))
  idx = jnp.where(jnp.any(ok), jnp.argmax(ok), tries - 1)
  return pts[idx]


def footprint_radius(cube_half: jax.Array) -> jax.Array:
  """Radius of the circle that holds a cube's footprint on the table whatever its yaw."""
  return cube_half * jnp.sqrt(2.0)


def is_grasped(view: SimView, i: int = 0) -> jax.Array:
  """Cube i is held: it sits between the finger pads and the fingers press on it."""
  rel = view.cube_pos[i] - view.tcp
  near = (jnp.linalg.norm(rel[:2]) < 0.02) & (jnp.abs(rel[2]) < 0.025)
  gap = view.fingers[0] + view.fingers[1]
  squeezing = (gap < 2 * view.cube_half[i] + 0.008) & (gap > 2 * view.cube_half[i] - 0.01)
  return near & squeezing


def is_released(view: SimView, i: int = 0) -> jax.Array:
  """The fingers are open wider than cube i (it is not held)."""
  return view.fingers[0] + view.fingers[1] > 2 * view.cube_half[i] + 0.012


def move_to(view: SimView, target: jax.Array, yaw: jax.Array, grip: jax.Array,
            gain: float = 1.0, max_speed: float | jax.Array = 1.0) -> jax.Array:
  """Proportional controller: the action that moves the TCP towards target (f32[5]).

  No position component exceeds max_speed action units (1 = MAX_DELTA_POS per step).
  """
  dpos = (target - view.tcp) / MAX_DELTA_POS * gain
  # Scale the whole vector (not each axis) so the TCP moves in a straight line.
  dpos = dpos / jnp.maximum(1.0, jnp.max(jnp.abs(dpos)) / max_speed)
  dyaw = jnp.clip(wrap_angle(yaw - view.yaw) / MAX_DELTA_YAW, -1.0, 1.0)
  return jnp.concatenate([dpos, dyaw[None], jnp.asarray(grip, jnp.float32)[None]])


def grasp_yaw(view: SimView, i: int = 0) -> jax.Array:
  """The gripper yaw that aligns the fingers with cube i's faces, nearest to the current yaw."""
  base = cube_yaw(view.cube_quat[i])
  k = jnp.round((view.yaw - base) / (jnp.pi / 2))
  return base + k * jnp.pi / 2


class Task(abc.ABC):
  """A tabletop task. Subclasses set the class attributes and implement the methods."""

  name: str
  task_id: int
  layout: mjcf.SceneLayout
  horizon: int  # control steps before truncation
  instruction: str
  goal_source: str  # what SimView.goal is: "marker", "container" (mocap bodies) or "cube_b"

  @abc.abstractmethod
  def sample_init(self, key: jax.Array, layout_half: jax.Array) -> Init:
    """Initial object layout inside the square |x|, |y| <= layout_half."""

  def keep_out(self, init: Init, cube_half: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Circles on the table that distractors must stay off: centres f32[K, 2] and radii f32[K].

    By default the cubes' footprints and the goal point; tasks add what else they need clear (a path, a
    container).
    """
    centres = jnp.concatenate([init.cube_xy, init.goal[None, :2]])
    radii = jnp.concatenate([footprint_radius(cube_half), jnp.array([GOAL_CLEARANCE])])
    return centres, radii

  @abc.abstractmethod
  def success(self, view: SimView) -> jax.Array:
    """bool[]: the task is achieved in this state."""

  @abc.abstractmethod
  def reward(self, view: SimView) -> jax.Array:
    """f32[]: staged dense handcrafted reward (reach, grasp, move, place), success = the maximum."""

  def expert_init(self) -> ExpertCarry:
    return ExpertCarry(phase=jnp.zeros((), jnp.int32), timer=jnp.zeros((), jnp.int32))

  @abc.abstractmethod
  def expert_act(self, carry: ExpertCarry, view: SimView) -> tuple[ExpertCarry, jax.Array]:
    """The scripted expert: next carry and action f32[5] in [-1, 1] (noise is added by the caller)."""


def advance(carry: ExpertCarry, cond: jax.Array, new_phase: jax.Array | None = None) -> ExpertCarry:
  """Moves to the next phase (or new_phase) when cond holds; counts steps spent in the phase."""
  nxt = carry.phase + 1 if new_phase is None else new_phase
  phase = jnp.where(cond, nxt, carry.phase)
  timer = jnp.where(phase != carry.phase, 0, carry.timer + 1)
  return ExpertCarry(phase=phase.astype(jnp.int32), timer=timer.astype(jnp.int32))


# Phases of the pick-and-place expert shared by pick_cube, stack_cube and place_cube.
APPROACH, DESCEND, GRASP, LIFT, MOVE, LOWER, RELEASE, RETREAT = range(8)


def pick_and_place_expert(carry: ExpertCarry, view: SimView, place_at: jax.Array,
                          final_hold: bool) -> tuple[ExpertCarry, jax.Array]:
  """Pick cube_a and bring it to place_at (the TCP target when the cube is placed).

  With final_hold the expert stops in MOVE holding the cube at place_at (pick_cube); otherwise it lowers,
  releases and retreats. If the cube slips out of the gripper while carried, it starts over.
  """
  cube = view.cube_pos[0]
  yaw = grasp_yaw(view)
  held = is_grasped(view)
  open_, close = -1.0, 1.0
  phase = carry.phase
  err_xy = jnp.linalg.norm(cube[:2] - view.tcp[:2])
  yaw_err = jnp.abs(wrap_angle(yaw - view.yaw, jnp.pi / 2))

  above = cube + jnp.array([0.0, 0.0, HOVER])
  carry_target = jnp.array([cube[0], cube[1], jnp.maximum(CARRY_Z, place_at[2])])
  over_goal = jnp.array([place_at[0], place_at[1], jnp.maximum(CARRY_Z, place_at[2])])
  targets = jnp.stack([above, cube, cube, carry_target, over_goal if not final_hold else place_at,
                       place_at, place_at, place_at + jnp.array([0.0, 0.0, 0.08])])
  grips = jnp.array([open_, open_, close, close, close, close, open_, open_])
  target, grip = targets[phase], grips[phase]
  # Keep the yaw of the grasp while carrying; align it only before grasping.
  yaw_t = jnp.where(phase <= DESCEND, yaw, view.yaw)
  action = move_to(view, target, yaw_t, grip, gain=jnp.where(phase == MOVE, 1.0, 1.5))

  dist = jnp.linalg.norm(target - view.tcp)
  done_phase = jnp.select(
      [phase == APPROACH, phase == DESCEND, phase == GRASP, phase == LIFT, phase == MOVE,
       phase == LOWER, phase == RELEASE],
      [(err_xy < 0.008) & (jnp.abs(view.tcp[2] - above[2]) < 0.02) & (yaw_err < 0.08),
       (jnp.abs(view.tcp[2] - cube[2]) < 0.006) & (err_xy < 0.01),
       carry.timer >= 3,
       view.tcp[2] > carry_target[2] - 0.015,
       (dist < 0.01) & (not final_hold),
       dist < 0.008,
       carry.timer >= 3],
      False)
  carried = (phase >= LIFT) & (phase <= LOWER)
  dropped = carried & ~held & (carry.timer >= 2)
  carry = advance(carry, done_phase)
  carry = advance(carry, dropped, jnp.asarray(APPROACH))
  return carry, action


@dataclasses.dataclass(frozen=True)
class Staged:
  """Weights of the staged reward terms (ManiSkill-style: each stage adds up to its weight)."""

  reach: float = 1.0
  grasp: float = 1.0
  move: float = 2.0
  place: float = 1.0
  success: float = 5.0


def staged_pick_reward(view: SimView, target: jax.Array, placed: jax.Array, success: jax.Array) -> jax.Array:
  """reach cube_a, grasp it, move it to `target`, place it (`placed`), succeed; f32[].

  A placed cube keeps the grasp and move stages' credit after it is released, so letting go of a
  well-placed cube never lowers the reward.
  """
  w = Staged()
  cube = view.cube_pos[0]
  placed = placed.astype(jnp.float32)
  reach = 1.0 - jnp.tanh(10.0 * jnp.linalg.norm(view.tcp - cube))
  grasped = is_grasped(view).astype(jnp.float32)
  move = grasped * (1.0 - jnp.tanh(5.0 * jnp.linalg.norm(cube - target)))
  return (w.reach * reach + w.grasp * jnp.maximum(grasped, placed) + w.move * jnp.maximum(move, placed)
          + w.place * placed + w.success * success.astype(jnp.float32))


def start_tcp(key: jax.Array) -> jax.Array:
  """Initial gripper position f32[3]: above the middle of the table."""
  xy = jax.random.uniform(key, (2,), minval=-0.08, maxval=0.08)
  return jnp.concatenate([xy, jnp.array([0.18])])


def random_yaws(key: jax.Array) -> jax.Array:
  """Initial yaw of both cubes, f32[2]."""
  return jax.random.uniform(key, (2,), minval=-jnp.pi, maxval=jnp.pi)
