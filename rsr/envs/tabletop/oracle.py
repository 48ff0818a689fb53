"""C MuJoCo twins of tabletop states: the physics oracle for MJX and the OpenGL oracle for the renderer.

`to_mujoco(env, inner)` returns an MjModel/MjData pair holding exactly one environment's scene (geom
sizes and positions, mocap poses, front camera pose) and state, after `mj_forward`. The benchmark's
reference loop (C MuJoCo stepping + its OpenGL renderer) starts from the same pairs.
"""

from __future__ import annotations

import copy

import jax
import mujoco
import numpy as np

from rsr.envs.tabletop.env import Inner, TabletopEnv


def to_mujoco(env: TabletopEnv, inner: Inner) -> tuple[mujoco.MjModel, mujoco.MjData]:
  """An MjModel/MjData pair for one (unbatched) environment state."""
  inner = jax.device_get(inner)
  m = copy.deepcopy(env.mj_model)
  m.geom_size[:] = np.asarray(inner.geom_size)
  m.geom_pos[:] = np.asarray(inner.geom_pos)
  cam = env.cameras(inner)["front"]
  front = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "front")
  m.cam_pos[front] = np.asarray(cam.pos)
  quat = np.zeros(4)
  mujoco.mju_mat2Quat(quat, np.asarray(cam.mat, np.float64).reshape(-1))
  m.cam_quat[front] = quat
  d = mujoco.MjData(m)
  src = inner.data
  d.qpos[:] = np.asarray(src.qpos)
  d.qvel[:] = np.asarray(src.qvel)
  d.ctrl[:] = np.asarray(src.ctrl)
  d.mocap_pos[:] = np.asarray(src.mocap_pos)
  d.mocap_quat[:] = np.asarray(src.mocap_quat)
  mujoco.mj_forward(m, d)
  return m, d


def step(m: mujoco.MjModel, d: mujoco.MjData, ctrl: np.ndarray, n_substeps: int) -> None:
  """One control step in C MuJoCo: hold `ctrl` for n_substeps physics steps."""
  d.ctrl[:] = ctrl
  mujoco.mj_step(m, d, nstep=n_substeps)
