"""TabletopEnv: MJX physics + the JAX renderer behind the Env protocol, for any tabletop task.

The model structure (which bodies and geoms exist) is fixed per task at construction; everything a scene
varies is data: geom sizes and positions (cubes, container rim, distractors) replace the model's fields
per environment, mocap bodies place the goal marker, container and distractors, and colours, lights,
texture and camera pose only enter the renderer. So one compiled step serves every scene, and a vmapped
batch may mix scenes from different splits.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

from rsr.envs import core
from rsr.envs.tabletop import mjcf, render
from rsr.envs.tabletop import scenes as scenes_lib
from rsr.envs.tabletop.tasks import base
from rsr.mjx_quiet import mjx

# Workspace of the TCP (metres): the action's targets are clipped to it.
WORKSPACE_LO = np.array([-0.25, -0.25, 0.016])
WORKSPACE_HI = np.array([0.25, 0.25, 0.35])
CAMERAS = ("front", "wrist")
_PARKED = 5.0  # absent distractors sit this far away, outside every camera's view
_CANDIDATES = 32  # spots drawn per distractor; the first one clear of the task's objects is taken
_CLEARANCE = 0.01  # m between a distractor's footprint and a keep-out circle


@dataclasses.dataclass(frozen=True)
class TabletopConfig:
  """Static options of a tabletop env (overridable through `rsr.envs.make`)."""

  height: int = 64
  width: int = 64
  cameras: tuple[str, ...] = ("front",)  # () renders nothing: state-only observations (fast experts)
  shadows: bool = True
  horizon: int | None = None  # None: the task's own horizon
  terminate_on_success: bool = True

  def validate(self) -> "TabletopConfig":
    for name in ("height", "width"):
      v = getattr(self, name)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"image {name} must be a positive integer, got {v!r}")
    cams = tuple(self.cameras)
    if any(c not in CAMERAS for c in cams) or len(set(cams)) != len(cams):
      raise ValueError(f"cameras must be distinct names from {CAMERAS}, got {self.cameras!r}")
    if cams and cams[0] != "front":
      raise ValueError(f"the first camera must be 'front' (it fills obs['rgb']), got {cams!r}")
    if self.horizon is not None and (not isinstance(self.horizon, (int, np.integer)) or self.horizon <= 0):
      raise ValueError(f"horizon must be a positive integer or None, got {self.horizon!r}")
    return dataclasses.replace(self, cameras=cams)


@struct.dataclass
class Inner:
  """The tabletop env's own part of State."""

  data: Any  # mjx.Data
  scene: scenes_lib.SceneParams
  geom_size: jax.Array  # f32[ngeom, 3] this scene's geom sizes
  geom_pos: jax.Array  # f32[ngeom, 3]
  albedo: jax.Array  # f32[ngeom, 3]


class TabletopEnv(core.Env):
  """A tabletop task in MJX. `reset(key, scene)`, `step(state, action)`; see rsr.envs.core."""

  def __init__(self, task: base.Task, config: TabletopConfig = TabletopConfig()):
    self.task = task
    self.config = config.validate()
    self.horizon = self.config.horizon or task.horizon
    self.xml = mjcf.build_mjcf(task.layout)
    self.mj_model = mujoco.MjModel.from_xml_string(self.xml)
    self.mx = mjx.put_model(self.mj_model, impl="jax")
    m = self.mj_model
    gid = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n)
    bid = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n)
    self.geom_ids = {m.geom(i).name: i for i in range(m.ngeom)}
    self.table_geom = gid("table")
    self.gripper_body = bid("gripper")
    self.geom_type = tuple(int(t) for t in m.geom_type)
    cubes = ["cube_a"] + (["cube_b"] if task.layout.cube_b else [])
    self._cube_qadr = [int(m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, c)]) for c in cubes]
    self._mocap = {m.body(b).name: int(m.body_mocapid[b]) for b in range(m.nbody) if m.body_mocapid[b] >= 0}
    self._mocap_pos0 = np.zeros((len(self._mocap), 3), np.float32)  # the MJCF's poses, by mocap id
    for name, j in self._mocap.items():
      self._mocap_pos0[j] = m.body(name).pos
    self._template = mjx.make_data(self.mx, impl="jax")
    self._qpos0 = np.array(m.key_qpos[0], np.float32)
    self._front_mat = mjcf.look_at(mjcf.FRONT_CAM_POS, mjcf.FRONT_CAM_TARGET)
    self._wrist_mat = mjcf.wrist_camera_mat().astype(np.float32)

  # ---- specs -----------------------------------------------------------------------------------
  def observation_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    h, w = self.config.height, self.config.width
    spec = {}
    if "front" in self.config.cameras:
      spec["rgb"] = jax.ShapeDtypeStruct((h, w, 3), jnp.uint8)
    if "wrist" in self.config.cameras:
      spec["rgb_wrist"] = jax.ShapeDtypeStruct((h, w, 3), jnp.uint8)
    spec["task"] = jax.ShapeDtypeStruct((), jnp.int32)
    spec["state"] = jax.ShapeDtypeStruct((STATE_DIM,), jnp.float32)
    return spec

  def action_spec(self) -> core.ActionSpec:
    return core.ActionSpec(shape=(base.ACTION_DIM,))

  # ---- scene data -> model fields and colours ----------------------------------------------------
  def scene_model(self, scene: scenes_lib.SceneParams) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-scene geom sizes, positions and albedo: three f32[ngeom, 3]."""
    g = self.geom_ids
    size = jnp.asarray(self.mj_model.geom_size, jnp.float32)
    pos = jnp.asarray(self.mj_model.geom_pos, jnp.float32)
    albedo = jnp.asarray(self.mj_model.geom_rgba[:, :3], jnp.float32)
    for i, name in enumerate(["cube_a", "cube_b"]):
      if name in g:
        size = size.at[g[name]].set(scene.cube_half[i])
        albedo = albedo.at[g[name]].set(scene.cube_rgb[i])
    if "marker" in g:
      albedo = albedo.at[g["marker"]].set(scene.marker_rgb)
    for name in [n for n in g if n.startswith("container")]:
      albedo = albedo.at[g[name]].set(scene.container_rgb)
      if name.startswith("container_wall"):
        h = scene.container_wall_half_h
        size = size.at[g[name], 2].set(h)
        pos = pos.at[g[name], 2].set(2 * mjcf.CONTAINER_BASE_HALF_Z + h)
    for i in range(mjcf.N_DISTRACTORS):
      name = f"distractor_{i}"
      size = size.at[g[name]].set(scene.distractor_size[i])
      albedo = albedo.at[g[name]].set(scene.distractor_rgb[i])
    albedo = albedo.at[g["floor"]].set(scene.background_rgb)
    return size, pos, albedo

  def model(self, inner: Inner):
    """The MJX model of this environment's scene."""
    return self.mx.replace(geom_size=inner.geom_size, geom_pos=inner.geom_pos)

  # ---- protocol ---------------------------------------------------------------------------------
  def reset(self, key: jax.Array, scene: scenes_lib.SceneParams) -> core.State:
    k_init, k_dist, k_yaw = jax.random.split(key, 3)
    init = self.task.sample_init(k_init, scene.layout_half)
    size, pos, albedo = self.scene_model(scene)

    qpos = jnp.asarray(self._qpos0)
    qpos = qpos.at[0:3].set(init.tcp).at[3].set(jax.random.uniform(k_yaw, (), minval=-0.3, maxval=0.3))
    qpos = qpos.at[4:6].set(mjcf.FINGER_OPEN)
    for i, adr in enumerate(self._cube_qadr):
      half = scene.cube_half[i]
      yaw = init.cube_yaw[i]
      quat = jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)])
      qpos = qpos.at[adr:adr + 3].set(jnp.array([init.cube_xy[i, 0], init.cube_xy[i, 1], half]))
      qpos = qpos.at[adr + 3:adr + 7].set(quat)

    mocap_pos = jnp.asarray(self._mocap_pos0)
    mocap_quat = jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0]), (len(self._mocap), 1))
    if "marker" in self._mocap:
      mocap_pos = mocap_pos.at[self._mocap["marker"]].set(init.goal)
    if "container" in self._mocap:
      mocap_pos = mocap_pos.at[self._mocap["container"]].set(init.goal.at[2].set(0.0))
    d_pos, d_yaw = _distractor_layout(k_dist, scene, self.task.keep_out(init, scene.cube_half))
    for i in range(mjcf.N_DISTRACTORS):
      j = self._mocap[f"distractor_{i}"]
      mocap_pos = mocap_pos.at[j].set(d_pos[i])
      mocap_quat = mocap_quat.at[j].set(jnp.array([jnp.cos(d_yaw[i] / 2), 0.0, 0.0, jnp.sin(d_yaw[i] / 2)]))

    ctrl = jnp.concatenate([qpos[0:4], jnp.full((2,), mjcf.FINGER_OPEN)])
    d = self._template.replace(qpos=qpos, ctrl=ctrl, mocap_pos=mocap_pos, mocap_quat=mocap_quat)
    inner = Inner(data=d, scene=scene, geom_size=size, geom_pos=pos, albedo=albedo)
    # Positions are all a reset needs (to render and to read the state); the first step runs the full
    # forward dynamics itself. Kinematics alone also compiles much faster than mjx.forward.
    d = mjx.kinematics(self.model(inner), d)
    inner = inner.replace(data=d)
    view = self.view(inner)
    info = {
        "success": self.task.success(view),
        "truncated": jnp.zeros((), bool),
        "step": jnp.zeros((), jnp.int32),
    }
    return core.State(obs=self._observe(inner, view), reward=jnp.zeros(()), done=jnp.zeros((), bool),
                      info=info, inner=inner)

  def step(self, state: core.State, action: jax.Array) -> core.State:
    self.check_action(action)
    inner = state.inner
    m = self.model(inner)
    d = inner.data
    d = d.replace(ctrl=action_to_ctrl(d.qpos, action))
    d = jax.lax.fori_loop(0, mjcf.N_SUBSTEPS, lambda _, x: mjx.step(m, x), d)
    # Positions after the last substep (mjx.step leaves xpos at the substep's start).
    d = mjx.kinematics(m, d)
    inner = inner.replace(data=d)
    view = self.view(inner)
    success = self.task.success(view)
    step = state.info["step"] + 1
    truncated = step >= self.horizon
    done = truncated | (success & self.config.terminate_on_success)
    info = dict(state.info, success=success, truncated=truncated & ~(success & self.config.terminate_on_success),
                step=step)
    return core.State(obs=self._observe(inner, view), reward=self.task.reward(view), done=done,
                      info=info, inner=inner)

  # ---- views --------------------------------------------------------------------------------------
  def view(self, inner: Inner) -> base.SimView:
    """The privileged state of one environment, as tasks and experts see it."""
    q = inner.data.qpos
    cube_pos = jnp.stack([q[a:a + 3] for a in self._cube_qadr])
    cube_quat = jnp.stack([q[a + 3:a + 7] for a in self._cube_qadr])
    if len(self._cube_qadr) == 1:
      cube_pos, cube_quat = jnp.tile(cube_pos, (2, 1)), jnp.tile(cube_quat, (2, 1))
    source = self.task.goal_source
    if source == "cube_b":
      goal = cube_pos[1]
    else:
      goal = inner.data.mocap_pos[self._mocap[source]]
    return base.SimView(tcp=q[0:3], yaw=q[3], fingers=q[4:6], cube_pos=cube_pos, cube_quat=cube_quat,
                        cube_half=inner.scene.cube_half, goal=goal,
                        container_wall_half_h=inner.scene.container_wall_half_h)

  def cameras(self, inner: Inner, with_wrist: bool = True) -> dict[str, render.Camera]:
    """The cameras of this environment's current state."""
    cams = {"front": render.front_camera(inner.scene, mjcf.FRONT_CAM_POS, self._front_mat, mjcf.FRONT_CAM_FOVY)}
    if with_wrist:
      d = inner.data
      rot = d.xmat[self.gripper_body]
      cams["wrist"] = render.Camera(pos=d.xpos[self.gripper_body] + rot @ jnp.asarray(mjcf.WRIST_CAM_POS),
                                    mat=rot @ jnp.asarray(self._wrist_mat), fovy=mjcf.WRIST_CAM_FOVY)
    return cams

  def render(self, inner: Inner, cameras: tuple[str, ...] = ("front",)) -> tuple[jax.Array, jax.Array]:
    """(rgb uint8[C, H, W, 3], geom id maps i32[C, H, W]) of the named cameras."""
    all_cams = self.cameras(inner, with_wrist="wrist" in cameras)
    return render.render(self.model(inner), inner.data, [all_cams[c] for c in cameras], inner.scene,
                         inner.albedo, height=self.config.height, width=self.config.width,
                         table_geom=self.table_geom, geom_type=self.geom_type, shadows=self.config.shadows)

  def _observe(self, inner: Inner, view: base.SimView) -> dict[str, jax.Array]:
    obs = {}
    if self.config.cameras:
      rgb, _ = self.render(inner, self.config.cameras)
      for cam, image in zip(self.config.cameras, rgb, strict=True):
        obs["rgb" if cam == "front" else f"rgb_{cam}"] = image
    obs["task"] = jnp.asarray(self.task.task_id, jnp.int32)
    obs["state"] = privileged_state(view)
    return obs


STATE_DIM = 3 + 1 + 2 + 6 + 8 + 3


def action_to_ctrl(qpos: jax.Array, action: jax.Array) -> jax.Array:
  """Servo targets f32[6] for a normalized action f32[5] (clipped to [-1, 1]) from joint positions.

  End-effector deltas are relative to the current TCP pose (as ManiSkill's pd_ee_delta_pose) and clipped
  to the workspace. The gripper command is a switch, as on most real grippers: > 0 closes the fingers,
  <= 0 opens them fully (a proportional command let action noise ease a grasp open in mid-air, and a cube
  dropped from there tumbles chaotically).
  """
  a = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
  xyz = jnp.clip(qpos[0:3] + a[0:3] * base.MAX_DELTA_POS, WORKSPACE_LO, WORKSPACE_HI)
  yaw = jnp.clip(qpos[3] + a[3] * base.MAX_DELTA_YAW, -3.1, 3.1)
  finger = jnp.where(a[4] > 0.0, 0.0, mjcf.FINGER_OPEN)
  return jnp.concatenate([xyz, yaw[None], jnp.stack([finger, finger])])


def privileged_state(view: base.SimView) -> jax.Array:
  """f32[STATE_DIM]: tcp, yaw, fingers, both cubes' positions and quaternions, goal."""
  return jnp.concatenate([view.tcp, view.yaw[None], view.fingers, view.cube_pos.reshape(-1),
                          view.cube_quat.reshape(-1), view.goal]).astype(jnp.float32)


def distractor_footprint(size: jax.Array) -> jax.Array:
  """Radius f32[3] of each distractor slot's footprint on the table (box: its half diagonal)."""
  return jnp.stack([jnp.hypot(size[0, 0], size[0, 1]), size[1, 0], size[2, 0]])


def _distractor_layout(key: jax.Array, scene: scenes_lib.SceneParams, keep_out: tuple[jax.Array, jax.Array]
                       ) -> tuple[jax.Array, jax.Array]:
  """Positions f32[3, 3] and yaws f32[3] of the distractors.

  Present ones stand in a ring around the task area, each in its own sector behind or beside the
  objects (never between them and the front camera), at a spot clear of the task's keep-out circles
  (`Task.keep_out`) and of the distractors placed before it; absent ones are parked far away.
  """
  k_place, k_perm, k_yaw = jax.random.split(key, 3)
  n = mjcf.N_DISTRACTORS
  sector = jax.random.permutation(k_perm, n)
  s = scene.distractor_size
  radius = distractor_footprint(s)
  # Resting heights: box half z, sphere radius, upright capsule radius + half length.
  z = jnp.stack([s[0, 2], s[1, 0], s[2, 0] + s[2, 1]])
  centres, radii = keep_out
  pos = []
  for i in range(n):
    k_a, k_r = jax.random.split(jax.random.fold_in(k_place, i))
    lo = jnp.pi / 3 + sector[i] * (4 * jnp.pi / 3) / n
    angle = lo + jax.random.uniform(k_a, (_CANDIDATES,)) * (4 * jnp.pi / 3) / n
    ring = jax.random.uniform(k_r, (_CANDIDATES,), minval=0.2, maxval=0.32)
    cand = jnp.stack([ring * jnp.cos(angle), ring * jnp.sin(angle)], axis=-1)  # [C, 2]
    gap = jnp.linalg.norm(cand[:, None] - centres[None], axis=-1) - radii[None] - radius[i]
    clear = jnp.min(gap, axis=1)  # [C] clearance to the nearest keep-out circle
    best = jnp.where(jnp.any(clear >= _CLEARANCE), jnp.argmax(clear >= _CLEARANCE), jnp.argmax(clear))
    xy = cand[best]
    pos.append(jnp.concatenate([xy, z[i:i + 1]]))
    # Later distractors keep clear of this one (an absent one is parked and blocks nothing).
    present = scene.distractor_present[i]
    centres = jnp.concatenate([centres, jnp.where(present, xy, _PARKED)[None]])
    radii = jnp.concatenate([radii, radius[i:i + 1]])
  on_table = jnp.stack(pos)
  parked = jnp.stack([jnp.full((n,), _PARKED) + jnp.arange(n), jnp.full((n,), _PARKED), z], axis=-1)
  pos = jnp.where(scene.distractor_present[:, None], on_table, parked)
  return pos, jax.random.uniform(k_yaw, (n,), maxval=jnp.pi)
