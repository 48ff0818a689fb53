"""The tabletop scene as MJCF, built in code from primitives (nothing is downloaded).

One builder serves every task: a task names which optional objects its scene holds (a second cube, a
goal marker, a container), and everything else (colours, sizes, layout, lights, camera jitter) is scene
*data* applied at reset (see `scenes.py`, `env.py`). The same XML loads in C MuJoCo, which the tests use
as a physics oracle and whose OpenGL renderer is the oracle for the JAX renderer.

Conventions
- World frame: table top is the plane z = 0, the table spans |x|, |y| <= TABLE_HALF. The front camera
  looks from +x towards the origin.
- The gripper is a Cartesian robot: slide joints x, y, z and a yaw hinge on one body whose origin is the
  tool centre point (TCP, between the finger pads), plus two fingers on slide joints along the gripper's
  local y axis. All of it is gravity compensated and driven by position servos.
- Collision groups (contype/conaffinity bits) keep the pair count small, which is what MJX pays for:
  cubes collide with everything; the table, container and distractors (static, mocap) and the gripper
  only collide with cubes. The gripper therefore passes through static scenery; the workspace limits
  keep it above the table.
"""

from __future__ import annotations

import dataclasses

import numpy as np

TABLE_HALF = 0.45  # m, half extent of the rendered table top.
CONTROL_DT = 0.1  # s: 10 Hz control, as the issue asks.
# s: physics step; CONTROL_DT / SIM_DT substeps per action. At 10 ms the default contact time constant
# (solref 0.02) is only two steps: grasps and pushes under noisy actions then drifted apart in MJX and C
# MuJoCo (a model difference, beyond what a 0.1 mm nudge does to C MuJoCo alone); at 5 ms they agree as
# closely as C MuJoCo agrees with itself (docs/decisions.md).
SIM_DT = 0.005
N_SUBSTEPS = int(round(CONTROL_DT / SIM_DT))

# Gripper geometry (metres). TCP = gripper body origin, at the height of the finger pads' centre.
FINGER_HALF = (0.028, 0.006, 0.024)  # x (paddle half width: wider than a cube), y (thickness), z
FINGER_CENTER_Z = 0.008
FINGER_OPEN = 0.05  # inner-face distance from the centre line when fully open
PALM_HALF = (0.022, 0.065, 0.012)
PALM_CENTER_Z = FINGER_CENTER_Z + FINGER_HALF[2] + PALM_HALF[2]
ARM_RADIUS = 0.018

# Default object sizes; scenes override them (as data) within small ranges.
CUBE_HALF = 0.02
SLIDE_FRICTION = 0.5  # cubes on the table, container, distractors and each other
MARKER_RADIUS = 0.018
CONTAINER_HALF = 0.075  # inner half width of the container's base
CONTAINER_WALL = 0.006  # half thickness of the walls
CONTAINER_BASE_HALF_Z = 0.004
CONTAINER_WALL_MAX_HALF_H = 0.02  # bowl rim; a plate's is lower (scene data)
N_DISTRACTORS = 3
# Distractor shapes are fixed per slot; their sizes (scene data) never exceed these MJCF defaults, so the
# bounding volumes MuJoCo derives from the XML stay conservative. Padded to 3 numbers per slot.
DISTRACTOR_TYPES = ("box", "sphere", "capsule")
DISTRACTOR_MAX_SIZE = ((0.025, 0.035, 0.035), (0.03, 0.0, 0.0), (0.018, 0.035, 0.0))

# Front camera: position and look-at target before per-scene jitter.
FRONT_CAM_POS = np.array([0.45, 0.0, 0.38])
FRONT_CAM_TARGET = np.array([-0.02, 0.0, 0.02])
FRONT_CAM_FOVY = 45.0
# Wrist camera, in the gripper's frame: beside the finger paddles (outside their x extent, so closed
# fingers never cover the lens), above the tallest container rim when the TCP is at its lowest, below the
# palm (which stays out of view), looking down past the fingertips with the fingers at the image's bottom.
WRIST_CAM_POS = np.array([0.07, 0.0, 0.035])
WRIST_CAM_TARGET = np.array([0.0, 0.0, -0.09])
WRIST_CAM_FOVY = 75.0

# Collision bits.
_CUBE = (1, 7)  # contype, conaffinity
_STATIC = (2, 0)
_GRIPPER = (4, 0)
_VISUAL = (0, 0)

# Geom groups: 0 = rendered, 3 = never rendered (unused here, kept free for collision-only helpers).
RENDER_GROUPS = (1, 1, 1, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class SceneLayout:
  """Which optional objects a task's scene holds (structure; fixed at compile time)."""

  cube_b: bool = False
  marker: str | None = None  # None, "disc" (on the table) or "sphere" (in the air)
  container: bool = False


def look_at(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Camera rotation matrix (columns = camera x, y, z in world) looking from pos at target.

  MuJoCo cameras look along their -z axis with +y up in the image.
  """
  z = pos - target
  z = z / np.linalg.norm(z)
  x = np.cross(np.array([0.0, 0.0, 1.0]), z)
  x = x / np.linalg.norm(x)
  y = np.cross(z, x)
  return np.stack([x, y, z], axis=1)


def wrist_camera_mat() -> np.ndarray:
  """The wrist camera's rotation in the gripper frame (columns: camera x, y, z), fingers at the bottom."""
  mat = look_at(WRIST_CAM_POS, WRIST_CAM_TARGET)
  return mat * np.array([-1.0, -1.0, 1.0])  # a half turn about the viewing axis


def _fmt(v) -> str:
  return " ".join(f"{float(x):.6g}" for x in np.atleast_1d(v))


def _geom(name, gtype, size, pos=(0, 0, 0), col=_VISUAL, rgba=(0.5, 0.5, 0.5, 1), extra=""):
  return (
      f'<geom name="{name}" type="{gtype}" size="{_fmt(size)}" pos="{_fmt(pos)}" '
      f'contype="{col[0]}" conaffinity="{col[1]}" rgba="{_fmt(rgba)}" material="matte" {extra}/>'
  )


def build_mjcf(layout: SceneLayout) -> str:
  """Returns the MJCF XML of a tabletop scene with the given optional objects."""
  cam_rot = look_at(FRONT_CAM_POS, FRONT_CAM_TARGET)
  wrist_mat = wrist_camera_mat()
  fh, fz = FINGER_HALF, FINGER_CENTER_Z
  # MuJoCo takes the larger friction of a contact's two geoms: fingers grip at 1.5, while cubes slide on
  # the table, the container and each other at 0.5. (At 1.0 a cube pushed over its whole face is right at
  # the tipping threshold, mu * h / 2 = w / 2, and a push becomes chaotic.)
  finger_fric = 'friction="1.5 0.005 0.0001"'
  slide_fric = f'friction="{SLIDE_FRICTION} 0.005 0.0001"'

  gripper = f"""
    <body name="gripper" pos="0 0 0" gravcomp="1">
      <joint name="slide_x" type="slide" axis="1 0 0" range="-0.3 0.3" armature="0.05" damping="2"/>
      <joint name="slide_y" type="slide" axis="0 1 0" range="-0.3 0.3" armature="0.05" damping="2"/>
      <joint name="slide_z" type="slide" axis="0 0 1" range="0 0.45" armature="0.05" damping="2"/>
      <joint name="yaw" type="hinge" axis="0 0 1" range="-3.2 3.2" armature="0.005" damping="0.05"/>
      <inertial pos="0 0 {PALM_CENTER_Z}" mass="0.4" diaginertia="0.001 0.001 0.001"/>
      {_geom("palm", "box", PALM_HALF, (0, 0, PALM_CENTER_Z), _GRIPPER, (0.25, 0.25, 0.28, 1))}
      {_geom("arm", "capsule", (ARM_RADIUS, 0.17),
             (0, 0, PALM_CENTER_Z + PALM_HALF[2] + ARM_RADIUS + 0.17), _VISUAL, (0.8, 0.8, 0.82, 1))}
      <camera name="wrist" pos="{_fmt(WRIST_CAM_POS)}" xyaxes="{_fmt(wrist_mat[:, 0])} {_fmt(wrist_mat[:, 1])}" fovy="{WRIST_CAM_FOVY}"/>
      <body name="finger_l" gravcomp="1">
        <joint name="finger_l" type="slide" axis="0 1 0" range="0 {FINGER_OPEN}" armature="0.01" damping="0.5"/>
        <inertial pos="0 {fh[1]} {fz}" mass="0.03" diaginertia="1e-5 1e-5 1e-5"/>
        {_geom("finger_l", "box", fh, (0, fh[1], fz), _GRIPPER, (0.15, 0.15, 0.17, 1), finger_fric)}
      </body>
      <body name="finger_r" gravcomp="1">
        <joint name="finger_r" type="slide" axis="0 -1 0" range="0 {FINGER_OPEN}" armature="0.01" damping="0.5"/>
        <inertial pos="0 {-fh[1]} {fz}" mass="0.03" diaginertia="1e-5 1e-5 1e-5"/>
        {_geom("finger_r", "box", fh, (0, -fh[1], fz), _GRIPPER, (0.15, 0.15, 0.17, 1), finger_fric)}
      </body>
    </body>"""

  def cube(name, rgba, x):
    return f"""
    <body name="{name}" pos="{x} 0 {CUBE_HALF}">
      <freejoint name="{name}"/>
      <inertial pos="0 0 0" mass="0.05" diaginertia="1.3e-5 1.3e-5 1.3e-5"/>
      {_geom(name, "box", [CUBE_HALF] * 3, (0, 0, 0), _CUBE, rgba, slide_fric)}
    </body>"""

  bodies = [gripper, cube("cube_a", (0.8, 0.1, 0.1, 1), 0.0)]
  if layout.cube_b:
    bodies.append(cube("cube_b", (0.1, 0.7, 0.1, 1), 0.1))
  if layout.marker == "disc":
    bodies.append(f"""
    <body name="marker" mocap="true" pos="0.1 0.1 0">
      {_geom("marker", "ellipsoid", (0.03, 0.03, 0.002), (0, 0, 0), _VISUAL, (0.1, 0.8, 0.1, 1))}
    </body>""")
  elif layout.marker == "sphere":
    bodies.append(f"""
    <body name="marker" mocap="true" pos="0.1 0.1 0.15">
      {_geom("marker", "sphere", (MARKER_RADIUS,), (0, 0, 0), _VISUAL, (0.1, 0.8, 0.1, 1))}
    </body>""")
  elif layout.marker is not None:
    raise ValueError(f"marker must be None, 'disc' or 'sphere', got {layout.marker!r}")
  if layout.container:
    c, w, bz = CONTAINER_HALF, CONTAINER_WALL, CONTAINER_BASE_HALF_Z
    wall_h = CONTAINER_WALL_MAX_HALF_H  # scenes lower it (as data) for a plate
    walls = [
        ("container_wall_0", (w, c + 2 * w, wall_h), (c + w, 0, 2 * bz + wall_h)),
        ("container_wall_1", (w, c + 2 * w, wall_h), (-c - w, 0, 2 * bz + wall_h)),
        ("container_wall_2", (c, w, wall_h), (0, c + w, 2 * bz + wall_h)),
        ("container_wall_3", (c, w, wall_h), (0, -c - w, 2 * bz + wall_h)),
    ]
    geoms = [_geom("container_base", "box", (c + 2 * w, c + 2 * w, bz), (0, 0, bz), _STATIC,
                   (0.9, 0.9, 0.9, 1), slide_fric)]
    geoms += [_geom(n, "box", s, p, _STATIC, (0.9, 0.9, 0.9, 1), slide_fric) for n, s, p in walls]
    bodies.append(f"""
    <body name="container" mocap="true" pos="-0.1 0.1 0">
      {"".join(geoms)}
    </body>""")
  # Distractors: static (mocap) objects of three fixed shapes; a scene places them on the table or
  # parks them far outside every camera's view. Their sizes and colours are scene data.
  n_size = {"box": 3, "sphere": 1, "capsule": 2}
  for i, (gtype, size) in enumerate(zip(DISTRACTOR_TYPES, DISTRACTOR_MAX_SIZE, strict=True)):
    size = size[: n_size[gtype]]
    bodies.append(f"""
    <body name="distractor_{i}" mocap="true" pos="{5 + i} 5 0.03">
      {_geom(f"distractor_{i}", gtype, size, (0, 0, 0), _STATIC, (0.5, 0.5, 0.5, 1), slide_fric)}
    </body>""")

  # No actuator has a force limit: with implicitfast, MJX integrates a saturated position servo as if
  # its damping still acted while C MuJoCo does not, so a clamped finger closed twice as fast in one as in
  # the other. Forces stay bounded by the gains instead (fingers: kp * FINGER_OPEN = 5 N; a held cube is
  # squeezed with ~2 N, ten times what friction needs to carry it). The fingers are overdamped (time
  # constant kv / kp = 0.2 s) so they close at <= 0.25 m/s and cannot tunnel into a cube in one physics step.
  actuators = f"""
    <position name="x" joint="slide_x" kp="800" kv="80" ctrlrange="-0.3 0.3"/>
    <position name="y" joint="slide_y" kp="800" kv="80" ctrlrange="-0.3 0.3"/>
    <position name="z" joint="slide_z" kp="800" kv="80" ctrlrange="0 0.45"/>
    <position name="yaw" joint="yaw" kp="3" kv="0.3" ctrlrange="-3.2 3.2"/>
    <position name="finger_l" joint="finger_l" kp="100" kv="20" ctrlrange="0 {FINGER_OPEN}"/>
    <position name="finger_r" joint="finger_r" kp="100" kv="20" ctrlrange="0 {FINGER_OPEN}"/>"""

  home_qpos = [0.0, 0.0, 0.2, 0.0, FINGER_OPEN, FINGER_OPEN]
  home_qpos += [0.0, 0.0, CUBE_HALF, 1, 0, 0, 0]
  if layout.cube_b:
    home_qpos += [0.1, 0.0, CUBE_HALF, 1, 0, 0, 0]
  home_ctrl = [0.0, 0.0, 0.2, 0.0, FINGER_OPEN, FINGER_OPEN]

  return f"""<mujoco model="rsr_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{SIM_DT}" integrator="implicitfast" iterations="8" ls_iterations="8" cone="pyramidal"/>
  <visual>
    <global offwidth="512" offheight="512"/>
    <map znear="0.001" zfar="2"/>  <!-- in units of the model extent (~7.5 m): the wrist camera sees its fingers 4 cm away -->
  </visual>
  <asset>
    <material name="matte" rgba="1 1 1 1" specular="0" shininess="0"/>
  </asset>
  <worldbody>
    <light name="sun" directional="true" pos="0 0 2" dir="-0.3 0.2 -1"/>
    {_geom("table", "plane", (TABLE_HALF, TABLE_HALF, 0.01), (0, 0, 0), _STATIC, (0.6, 0.45, 0.3, 1), slide_fric)}
    {_geom("floor", "plane", (4, 4, 0.01), (0, 0, -0.75), _VISUAL, (0.35, 0.35, 0.38, 1))}
    <camera name="front" pos="{_fmt(FRONT_CAM_POS)}" xyaxes="{_fmt(cam_rot[:, 0])} {_fmt(cam_rot[:, 1])}" fovy="{FRONT_CAM_FOVY}"/>
    {"".join(bodies)}
  </worldbody>
  <actuator>{actuators}
  </actuator>
  <keyframe>
    <key name="home" qpos="{_fmt(home_qpos)}" ctrl="{_fmt(home_ctrl)}"/>
  </keyframe>
</mujoco>
"""
