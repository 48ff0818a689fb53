"""The JAX renderer against MuJoCo's own OpenGL renderer (the oracle): same geoms on the same pixels.

For 20 states (5 per task, every split, objects moved or grasped by the scripted expert) the geom-id maps
of both cameras (front and wrist) from the JAX ray renderer (`env.render`, at 128x128) are compared with
MuJoCo's OpenGL segmentation of the C twin of the same state (`oracle.to_mujoco`): every geom covering
at least MIN_PIXELS pixels in either map must have an IoU of at least MIN_IOU between the two maps.
A last test holds the wrist camera to its purpose: with the fingers closed it still sees the scene.

Orientation: `mujoco.Renderer.render()` returns rows top first (checked by eye on saved images: the
gripper is in the top rows and the table in the bottom rows of both maps), the same as the JAX renderer,
so no flip is applied.

Needs a headless OpenGL (EGL: libegl1, libegl-mesa0, libgl1-mesa-dri); without one the test fails.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported (tests/conftest.py does the same)

import jax  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rsr.envs import SPLITS, TASK_NAMES, make  # noqa: E402
from rsr.envs.tabletop import oracle  # noqa: E402
from rsr.mjx_quiet import mjx  # noqa: E402
from tests.conftest import BATCH_SPLITS, take  # noqa: E402

SIZE = 128  # image height and width
N_STATES = 20  # 5 per task
MAX_EXPERT_STEPS = 45  # a state is reached after 0..MAX_EXPERT_STEPS expert steps from reset
MIN_PIXELS = 50
MIN_IOU = 0.9
CAMERAS = ("front", "wrist")
MAX_CLOSED_FINGER_SHARE = 0.25  # of the wrist image, with the fingers fully closed


def _state_specs() -> list[tuple[str, str, int]]:
  """(task, split, expert steps) of each state. Tasks cycle with period 4 and splits with period 7, so
  every split occurs with several tasks."""
  rng = np.random.default_rng(0)
  return [(TASK_NAMES[i % len(TASK_NAMES)], SPLITS[i % len(SPLITS)], int(rng.integers(0, MAX_EXPERT_STEPS + 1)))
          for i in range(N_STATES)]


STATES = _state_specs()


@pytest.fixture(scope="module")
def geom_map_fn():
  """geom_map_fn(task) -> (env, jitted inner -> i32[2, SIZE, SIZE] front and wrist geom ids of the JAX
  renderer)."""
  cache = {}

  def get(task):
    if task not in cache:
      env = make(task, height=SIZE, width=SIZE, cameras=CAMERAS)
      cache[task] = (env, jax.jit(lambda inner: env.render(inner, CAMERAS)[1]))
    return cache[task]

  return get


def _gl_backend() -> str:
  """The module of MuJoCo's GL context class, or why there is none."""
  try:
    from mujoco.rendering.classic import gl_context
    return getattr(getattr(gl_context, "GLContext", None), "__module__", "none")
  except Exception as e:  # noqa: BLE001
    return f"none ({type(e).__name__}: {e})"


def _gl_geom_map(m: mujoco.MjModel, d: mujoco.MjData, camera: str) -> np.ndarray:
  """i32[SIZE, SIZE] geom ids of MuJoCo's OpenGL segmentation of a camera (-1: no geom)."""
  try:
    renderer = mujoco.Renderer(m, SIZE, SIZE)
  except Exception as e:  # noqa: BLE001 (whatever the GL backend raises; no Renderer at all without one)
    pytest.fail(
        f"cannot create MuJoCo's OpenGL renderer (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}, GL backend: "
        f"{_gl_backend()}): {type(e).__name__}: {e}. This test needs headless EGL: install libegl1, "
        "libegl-mesa0 and libgl1-mesa-dri, and make sure MUJOCO_GL=egl is set before mujoco is imported.")
  try:
    renderer.enable_segmentation_rendering()
    renderer.update_scene(d, camera=camera)
    seg = renderer.render()  # [H, W, 2]: object id, object type (rows top first)
  finally:
    renderer.close()
  return np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 0], -1).astype(np.int32)


@pytest.mark.parametrize("index", range(N_STATES), ids=[f"{i}-{t}-{s}-{n}steps" for i, (t, s, n) in
                                                        enumerate(STATES)])
def test_geom_map_matches_opengl_segmentation(index, batched_env, geom_map_fn):
  task, split, n_steps = STATES[index]
  be = batched_env(task)  # shared compiled physics; its states render in an env of any image size
  state, carry = be.start(jax.random.PRNGKey(100 + index))
  for _ in range(n_steps):
    state, carry, _ = be.expert_step(state, carry)
  inner = take(state.inner, BATCH_SPLITS.index(split))
  env, geom_map = geom_map_fn(task)
  jax_maps = np.asarray(geom_map(inner))
  m, d = oracle.to_mujoco(env, inner)
  for camera, jax_map in zip(CAMERAS, jax_maps, strict=True):
    gl_map = _gl_geom_map(m, d, camera)
    assert jax_map.shape == gl_map.shape == (SIZE, SIZE)
    _check_same_geoms(m, jax_map, gl_map, f"state {index} ({task}, split {split}, {n_steps} expert steps, "
                      f"{camera} camera)")


def _check_same_geoms(m: mujoco.MjModel, jax_map: np.ndarray, gl_map: np.ndarray, what: str) -> None:
  ids = np.union1d(np.unique(jax_map), np.unique(gl_map))
  ious, failures = {}, []
  for g in ids[ids >= 0]:
    a, b = gl_map == g, jax_map == g
    if max(a.sum(), b.sum()) < MIN_PIXELS:
      continue
    name = m.geom(int(g)).name
    ious[name] = float((a & b).sum() / (a | b).sum())
    if ious[name] < MIN_IOU:
      failures.append(f"{name} (geom {g}, type {mujoco.mjtGeom(int(m.geom_type[g])).name}): IoU "
                      f"{ious[name]:.3f} ({a.sum()} px in OpenGL, {b.sum()} px in JAX)")
  print(f"{what}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(ious.items())))
  assert ious, f"{what}: no geom covers {MIN_PIXELS} pixels"
  assert not failures, (f"{what}: geom maps of the JAX renderer and MuJoCo's OpenGL differ "
                        f"(IoU < {MIN_IOU}): " + "; ".join(failures))


@pytest.mark.parametrize("task", TASK_NAMES)
def test_wrist_camera_sees_past_closed_fingers(task, batched_env, geom_map_fn):
  """Fully closed fingers cover at most MAX_CLOSED_FINGER_SHARE of the wrist image (the camera once sat
  between them and saw nothing else); most of it shows the table and the objects, in JAX and in OpenGL."""
  be = batched_env(task)
  env, geom_map = geom_map_fn(task)
  state, _ = be.start(jax.random.PRNGKey(7))
  qpos = state.inner.data.qpos.at[:, 4:6].set(0.0).at[:, 2].set(0.05)  # closed, 5 cm above the table
  data = jax.vmap(lambda inner, q: mjx.kinematics(env.model(inner), inner.data.replace(qpos=q)))(state.inner, qpos)
  inner = state.inner.replace(data=data)
  fingers = [env.geom_ids["finger_l"], env.geom_ids["finger_r"]]
  for i, split in enumerate(BATCH_SPLITS):
    one = take(inner, i)
    m, d = oracle.to_mujoco(env, one)
    for source, wrist in (("JAX", np.asarray(geom_map(one))[1]), ("OpenGL", _gl_geom_map(m, d, "wrist"))):
      finger_share = np.isin(wrist, fingers).mean()
      seen = (wrist >= 0) & ~np.isin(wrist, fingers)
      assert finger_share <= MAX_CLOSED_FINGER_SHARE, (
          f"{task}, {split}: closed fingers cover {finger_share:.0%} of the {source} wrist image")
      assert seen.mean() >= 0.5, f"{task}, {split}: the {source} wrist image shows the scene in {seen.mean():.0%}"
