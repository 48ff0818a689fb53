"""The JAX renderer: one `mjx.ray` per pixel, shaded in JAX, jittable and vmappable over a batch.

For each pixel a primary ray gives the hit distance and geom id (`mjx.ray`); the surface normal comes
analytically from the hit geom's type; the colour is albedo * (ambient + intensity * max(0, n . l) *
lit), where `lit` is 0 when a shadow ray towards the light hits anything (optional). The table's albedo
is a procedural texture of the hit point; every other geom's albedo comes from the scene (`albedo`).

Camera model: MuJoCo's pinhole camera (looks along -z of its frame, +y up, vertical field of view
`fovy`), pixel centres at half-integer offsets, row 0 at the top of the image, as in MuJoCo's own
renderer after its vertical flip. `tests/envs/test_render_oracle.py` holds it to MuJoCo's OpenGL segmentation.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

from rsr.envs.tabletop import scenes as scenes_lib
from rsr.mjx_quiet import mjx

# A ray starts this far off a surface so that it does not hit the surface it leaves.
_SHADOW_EPS = 1e-3


@struct.dataclass
class Camera:
  pos: jax.Array  # f32[3] world position
  mat: jax.Array  # f32[3, 3] columns: camera x (right), y (up), z (backwards) in world coordinates
  fovy: float = struct.field(pytree_node=False, default=45.0)  # degrees


def pixel_directions(height: int, width: int, fovy: float) -> np.ndarray:
  """Unit ray directions in the camera frame for every pixel, f32[height * width, 3], row-major."""
  tan = np.tan(np.deg2rad(fovy) / 2)
  ys = (1.0 - 2.0 * (np.arange(height) + 0.5) / height) * tan
  xs = (2.0 * (np.arange(width) + 0.5) / width - 1.0) * tan * width / height
  x, y = np.meshgrid(xs, ys)
  d = np.stack([x, y, -np.ones_like(x)], axis=-1).reshape(-1, 3)
  return (d / np.linalg.norm(d, axis=-1, keepdims=True)).astype(np.float32)


def axis_rotation(axis: int, angle: jax.Array) -> jax.Array:
  """Rotation matrix f32[3, 3] by `angle` (rad) about coordinate axis `axis` (0 = x, 1 = y, 2 = z)."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  i, j = [(1, 2), (2, 0), (0, 1)][axis]
  r = jnp.eye(3).at[i, i].set(c).at[j, j].set(c)
  return r.at[i, j].set(-s).at[j, i].set(s)


def front_camera(scene: scenes_lib.SceneParams, base_pos: np.ndarray, base_mat: np.ndarray,
                 fovy: float) -> Camera:
  """The front camera of a scene: the MJCF pose jittered by the scene's offsets.

  `cam_rot_offset` = (yaw, pitch, roll): yaw turns the camera about the world's vertical, pitch tilts it
  about its own horizontal (x) axis and roll turns the image about the viewing axis (the camera's z).
  """
  yaw, pitch, roll = scene.cam_rot_offset[0], scene.cam_rot_offset[1], scene.cam_rot_offset[2]
  mat = axis_rotation(2, yaw) @ jnp.asarray(base_mat) @ axis_rotation(0, pitch) @ axis_rotation(2, roll)
  return Camera(pos=jnp.asarray(base_pos) + scene.cam_pos_offset, mat=mat, fovy=fovy)


def _table_albedo(scene: scenes_lib.SceneParams, p: jax.Array) -> jax.Array:
  """Procedural table texture at world points p: f32[N, 3] -> f32[N, 3]."""
  x, y, s = p[:, 0], p[:, 1], scene.table_tex_scale
  wood = 0.5 + 0.5 * jnp.sin(s * (x + 0.012 * jnp.sin(37.0 * y) + 0.006 * jnp.sin(91.0 * y + 1.3)))
  wood = wood**3  # thin dark grain lines on a light base
  checker = jnp.mod(jnp.floor(x * s) + jnp.floor(y * s), 2.0)
  marble = 0.5 + 0.5 * jnp.sin(s * (x + y) + 2.5 * jnp.sin(1.7 * s * x) * jnp.sin(1.3 * s * y))
  t = jnp.select(
      [scene.table_texture == scenes_lib.TEXTURE_WOOD, scene.table_texture == scenes_lib.TEXTURE_CHECKER],
      [wood, checker], marble)
  return scene.table_rgb[0] * (1.0 - t[:, None]) + scene.table_rgb[1] * t[:, None]


def _normals(m, d, geom_type: np.ndarray, gid: jax.Array, hit: jax.Array) -> jax.Array:
  """World surface normals at hit points on geoms gid: f32[N, 3]."""
  g = jnp.maximum(gid, 0)
  mat = d.geom_xmat[g]  # [N, 3, 3]
  p = jnp.einsum("nji,nj->ni", mat, hit - d.geom_xpos[g])  # local hit point
  size = m.geom_size[g]
  gt = jnp.asarray(geom_type)[g]
  safe = jnp.where(size > 0, size, 1.0)
  plane = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), p.shape)
  capsule = p - jnp.stack([jnp.zeros_like(p[:, 0]), jnp.zeros_like(p[:, 0]),
                           jnp.clip(p[:, 2], -size[:, 1], size[:, 1])], axis=-1)
  ellipsoid = p / safe**2
  rel = jnp.abs(p) / safe
  box = jax.nn.one_hot(jnp.argmax(rel, axis=-1), 3) * jnp.sign(p)
  is_type = lambda t: (gt == int(t))[:, None]  # int(): the enum itself does not compare with arrays
  n = jnp.select(
      [is_type(mujoco.mjtGeom.mjGEOM_PLANE), is_type(mujoco.mjtGeom.mjGEOM_SPHERE),
       is_type(mujoco.mjtGeom.mjGEOM_CAPSULE), is_type(mujoco.mjtGeom.mjGEOM_ELLIPSOID)],
      [plane, p, capsule, ellipsoid], box)
  n = n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
  return jnp.einsum("nij,nj->ni", mat, n)


def cast(m, d, origins: jax.Array, dirs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Casts rays: origins f32[N, 3] (or [3]), dirs f32[N, 3] -> (dist f32[N], geom id i32[N]); -1 = miss."""
  o_axis = 0 if origins.ndim == 2 else None
  return jax.vmap(lambda o, v: mjx.ray(m, d, o, v), in_axes=(o_axis, 0))(origins, dirs)


def _render_one(m, d, pos, mat, dirs_cam, scene, albedo, *, table_geom, shadows, geom_type):
  """One view: camera position f32[3], rotation f32[3, 3], camera-frame ray directions f32[N, 3]."""
  dirs = dirs_cam @ mat.T
  dist, gid = cast(m, d, pos, dirs)
  hit = pos + dist[:, None] * dirs
  normal = _normals(m, d, np.asarray(geom_type), gid, hit)
  # Light the side of the surface facing the camera (planes and thin geoms are seen from either side).
  normal = jnp.where(jnp.sum(normal * dirs, -1, keepdims=True) > 0, -normal, normal)
  colour = jnp.where((gid == table_geom)[:, None], _table_albedo(scene, hit), albedo[jnp.maximum(gid, 0)])
  diffuse = jnp.maximum(jnp.sum(normal * -scene.light_dir, axis=-1), 0.0)
  if shadows:
    s_dist, _ = cast(m, d, hit + _SHADOW_EPS * normal, jnp.broadcast_to(-scene.light_dir, hit.shape))
    diffuse = jnp.where(s_dist >= 0, 0.0, diffuse)
  shade = scene.ambient + scene.light_intensity * diffuse
  rgb = jnp.where((gid >= 0)[:, None], colour * shade[:, None], scene.background_rgb)
  return jnp.round(jnp.clip(rgb, 0.0, 1.0) * 255.0).astype(jnp.uint8), gid.astype(jnp.int32)


def render(m, d, cameras: Sequence[Camera], scene: scenes_lib.SceneParams, albedo: jax.Array, *,
           height: int, width: int, table_geom: int, geom_type: tuple[int, ...], shadows: bool = True
           ) -> tuple[jax.Array, jax.Array]:
  """Renders several camera views of one state (one traced copy of the ray code serves them all).

  Args:
    m, d: MJX model (with the scene's geom sizes) and data (after kinematics).
    cameras: C camera poses and fields of view.
    scene: lights, table texture, background.
    albedo: f32[ngeom, 3] per-geom colour.
    height, width: image size in pixels.
    table_geom: id of the table geom (procedurally textured).
    geom_type: the model's geom types (static, as a tuple).
    shadows: cast a shadow ray per pixel (doubles the cost).

  Returns:
    rgb uint8[C, height, width, 3] and the geom id maps i32[C, height, width] (-1 where nothing is hit).
  """
  dirs = jnp.asarray(np.stack([pixel_directions(height, width, c.fovy) for c in cameras]))
  pos = jnp.stack([c.pos for c in cameras])
  mat = jnp.stack([c.mat for c in cameras])
  one = functools.partial(_render_one, table_geom=table_geom, shadows=shadows, geom_type=geom_type)
  rgb, gid = jax.vmap(one, in_axes=(None, None, 0, 0, 0, None, None))(m, d, pos, mat, dirs, scene, albedo)
  n = len(cameras)
  return rgb.reshape(n, height, width, 3), gid.reshape(n, height, width)
