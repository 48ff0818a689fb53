"""Scene parameters (a pytree of data, never structure) and the named in-domain / out-of-domain splits.

`sample(key, split)` draws one `SceneParams`; `jax.vmap(sample, (0, None))` draws a batch. Every split
shares the same pytree structure, so one compiled env step serves them all and a batch may mix them.

Each OOD family replaces the in-domain distribution of one group of attributes by a *disjoint* one, so
an OOD value never occurs in `id` (`tests/envs/test_scenes.py` checks the ranges):

  family          in-domain (`id`)                          held out
  ood_color       red/green cubes, green goal, grey-white   blue-violet / yellow cubes, cyan goal,
                  container                                 magenta container
  ood_table       wood grain, brown hues                    checker or marble, green / blue-grey hues
  ood_distractor  no distractors                            1 to 3 distractors of random shape/colour
  ood_light       light from the camera side, elevation     light from behind, low elevation, dim or
                  50-70 deg, intensity 0.75-0.95            bright (0.35-0.5 or 1.2-1.4)
  ood_camera      offsets <= 1 cm, <= 1.5 deg per axis      offset 4-7 cm, 3-6 deg per axis
  ood_all         every family above at once
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from rsr.envs.tabletop import mjcf

OOD_FAMILIES = ("ood_color", "ood_table", "ood_distractor", "ood_light", "ood_camera")
SPLITS = ("id",) + OOD_FAMILIES + ("ood_all",)

# Table textures: 0 = wood grain (in-domain); 1 = checker, 2 = marble (held out).
TEXTURE_WOOD, TEXTURE_CHECKER, TEXTURE_MARBLE = 0, 1, 2

# In-domain and held-out ranges (shared with the tests that check they are disjoint).
ID_CUBE_A_HUE = (-0.03, 0.03)  # red
ID_CUBE_B_HUE = (0.30, 0.37)  # green
OOD_CUBE_A_HUE = (0.58, 0.76)  # blue to violet
OOD_CUBE_B_HUE = (0.12, 0.18)  # yellow
ID_MARKER_HUE = (0.28, 0.40)
OOD_MARKER_HUE = (0.47, 0.53)  # cyan
ID_CONTAINER_SAT = (0.0, 0.08)  # near-white / grey
OOD_CONTAINER_SAT = (0.5, 0.8)  # saturated magenta
OOD_CONTAINER_HUE = (0.82, 0.92)
ID_TABLE_HUE = (0.05, 0.10)  # browns
OOD_TABLE_HUES = ((0.28, 0.40), (0.55, 0.62))  # green (as in the paper's green table), blue-grey
ID_LIGHT_AZIMUTH = (-0.7, 0.7)  # rad around +x (the camera side)
OOD_LIGHT_AZIMUTH = (2.1, 4.2)  # from behind the table
ID_LIGHT_ELEVATION = (0.87, 1.22)
OOD_LIGHT_ELEVATION = (0.42, 0.7)
ID_LIGHT_INTENSITY = (0.75, 0.95)
OOD_LIGHT_INTENSITY = ((0.35, 0.5), (1.2, 1.4))
ID_CAM_POS = 0.01  # max |offset| per axis, metres
OOD_CAM_POS = (0.04, 0.07)  # norm of the offset
ID_CAM_ROT = 0.026  # max |angle| per axis, rad (1.5 deg)
OOD_CAM_ROT = (0.052, 0.105)  # |angle| per axis (3 to 6 deg)


@struct.dataclass
class SceneParams:
  """Everything that varies between scenes. Shapes are per scene; a batch adds a leading axis."""

  cube_rgb: jax.Array  # f32[2, 3] cube_a, cube_b albedo in [0, 1]
  cube_half: jax.Array  # f32[2] half side of cube_a, cube_b (m)
  marker_rgb: jax.Array  # f32[3]
  container_rgb: jax.Array  # f32[3]
  container_wall_half_h: jax.Array  # f32[] half height of the rim: plate (low) or bowl (high)
  table_rgb: jax.Array  # f32[2, 3] the two colours of the table texture
  table_texture: jax.Array  # i32[] TEXTURE_*
  table_tex_scale: jax.Array  # f32[] spatial frequency of the texture (1/m)
  background_rgb: jax.Array  # f32[3] floor and walls beyond the table
  light_dir: jax.Array  # f32[3] unit vector pointing from the light into the scene
  light_intensity: jax.Array  # f32[]
  ambient: jax.Array  # f32[]
  cam_pos_offset: jax.Array  # f32[3] front camera position offset (m)
  cam_rot_offset: jax.Array  # f32[3] front camera yaw, pitch, roll offsets (rad)
  distractor_present: jax.Array  # bool[3]
  distractor_rgb: jax.Array  # f32[3, 3]
  distractor_size: jax.Array  # f32[3, 3] geom size per slot (box: half sides; sphere: r; capsule: r, h)
  layout_half: jax.Array  # f32[] half width of the square where task objects are placed (m)


def check_split(split: str) -> str:
  """Returns `split` if it names a split, else raises a ValueError listing the valid ones."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
  return split


def _u(key, lo, hi, shape=()):
  return jax.random.uniform(key, shape, minval=lo, maxval=hi)


def _hsv_to_rgb(h, s, v):
  """HSV (hue in turns, may be negative) -> RGB, elementwise over a trailing axis of 3."""
  h = jnp.mod(h, 1.0)
  k = jnp.mod(jnp.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0, 6.0)
  return v[..., None] - v[..., None] * s[..., None] * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def _colour(key, hue, sat=(0.65, 0.9), val=(0.65, 0.9)):
  kh, ks, kv = jax.random.split(key, 3)
  return _hsv_to_rgb(_u(kh, *hue), _u(ks, *sat), _u(kv, *val))


def _pick_range(key, ranges):
  """Uniform sample from a union of equally likely intervals."""
  k1, k2 = jax.random.split(key)
  i = jax.random.randint(k1, (), 0, len(ranges))
  lo = jnp.array([r[0] for r in ranges])[i]
  hi = jnp.array([r[1] for r in ranges])[i]
  return _u(k2, lo, hi)


def _colours(key, ood: bool):
  k = jax.random.split(key, 4)
  if ood:
    cube_a = _colour(k[0], OOD_CUBE_A_HUE)
    cube_b = _colour(k[1], OOD_CUBE_B_HUE)
    marker = _colour(k[2], OOD_MARKER_HUE)
    container = _colour(k[3], OOD_CONTAINER_HUE, OOD_CONTAINER_SAT, (0.7, 0.9))
  else:
    cube_a = _colour(k[0], ID_CUBE_A_HUE)
    cube_b = _colour(k[1], ID_CUBE_B_HUE)
    marker = _colour(k[2], ID_MARKER_HUE)
    container = _colour(k[3], (0.0, 1.0), ID_CONTAINER_SAT, (0.8, 0.95))
  return jnp.stack([cube_a, cube_b]), marker, container


def _table(key, ood: bool):
  k = jax.random.split(key, 6)
  if ood:
    texture = jax.random.randint(k[0], (), TEXTURE_CHECKER, TEXTURE_MARBLE + 1)
    hue = _pick_range(k[1], OOD_TABLE_HUES)
    scale = _u(k[2], 8.0, 14.0)
  else:
    texture = jnp.asarray(TEXTURE_WOOD)
    hue = _u(k[1], *ID_TABLE_HUE)
    scale = _u(k[2], 18.0, 30.0)
  sat, val = _u(k[3], 0.35, 0.6), _u(k[4], 0.5, 0.7)
  light = _hsv_to_rgb(hue, sat, val)
  dark = _hsv_to_rgb(hue, sat, val * _u(k[5], 0.6, 0.8))
  return jnp.stack([light, dark]), texture.astype(jnp.int32), scale


def _light(key, ood: bool):
  k = jax.random.split(key, 4)
  if ood:
    az, el = _u(k[0], *OOD_LIGHT_AZIMUTH), _u(k[1], *OOD_LIGHT_ELEVATION)
    intensity = _pick_range(k[2], OOD_LIGHT_INTENSITY)
    ambient = _u(k[3], 0.15, 0.25)
  else:
    az, el = _u(k[0], *ID_LIGHT_AZIMUTH), _u(k[1], *ID_LIGHT_ELEVATION)
    intensity = _u(k[2], *ID_LIGHT_INTENSITY)
    ambient = _u(k[3], 0.3, 0.4)
  # Direction from the light into the scene: the light sits at (azimuth, elevation) on the sky.
  to_light = jnp.array([jnp.cos(el) * jnp.cos(az), jnp.cos(el) * jnp.sin(az), jnp.sin(el)])
  return -to_light, intensity, ambient


def _camera(key, ood: bool):
  k = jax.random.split(key, 4)
  if ood:
    direction = jax.random.normal(k[0], (3,))
    direction = direction / jnp.linalg.norm(direction)
    pos = direction * _u(k[1], *OOD_CAM_POS)
    sign = jnp.where(jax.random.bernoulli(k[2], 0.5, (3,)), 1.0, -1.0)
    rot = sign * _u(k[3], *OOD_CAM_ROT, (3,))
  else:
    pos = _u(k[0], -ID_CAM_POS, ID_CAM_POS, (3,))
    rot = _u(k[1], -ID_CAM_ROT, ID_CAM_ROT, (3,))
  return pos, rot


def _distractors(key, ood: bool):
  k = jax.random.split(key, 4)
  if ood:
    count = jax.random.randint(k[0], (), 1, mjcf.N_DISTRACTORS + 1)
    order = jax.random.permutation(k[1], mjcf.N_DISTRACTORS)
    present = order < count
  else:
    present = jnp.zeros((mjcf.N_DISTRACTORS,), bool)
  hue = _u(k[2], 0.0, 1.0, (mjcf.N_DISTRACTORS,))
  rgb = _hsv_to_rgb(hue, jnp.full_like(hue, 0.6), jnp.full_like(hue, 0.75))
  # Sizes stay within the MJCF defaults (the maxima), which keep C MuJoCo's bounding volumes valid.
  scale = _u(k[3], 0.6, 1.0, (mjcf.N_DISTRACTORS, 1))
  size = scale * jnp.array(mjcf.DISTRACTOR_MAX_SIZE)
  return present, rgb, size


def _sample(key: jax.Array, families: tuple[bool, ...]) -> SceneParams:
  ood_color, ood_table, ood_distractor, ood_light, ood_camera = families
  k = jax.random.split(key, 8)
  cube_rgb, marker_rgb, container_rgb = _colours(k[0], ood_color)
  table_rgb, table_texture, table_tex_scale = _table(k[1], ood_table)
  light_dir, light_intensity, ambient = _light(k[2], ood_light)
  cam_pos, cam_rot = _camera(k[3], ood_camera)
  present, d_rgb, d_size = _distractors(k[4], ood_distractor)
  cube_half = _u(k[5], 0.018, mjcf.CUBE_HALF, (2,))
  wall = jnp.where(jax.random.bernoulli(k[6], 0.5), 0.006, mjcf.CONTAINER_WALL_MAX_HALF_H)
  background = _hsv_to_rgb(_u(k[7], 0.55, 0.65), jnp.asarray(0.1), jnp.asarray(0.4))
  return SceneParams(
      cube_rgb=cube_rgb, cube_half=cube_half, marker_rgb=marker_rgb, container_rgb=container_rgb,
      container_wall_half_h=wall, table_rgb=table_rgb, table_texture=table_texture,
      table_tex_scale=table_tex_scale, background_rgb=background, light_dir=light_dir,
      light_intensity=light_intensity, ambient=ambient, cam_pos_offset=cam_pos,
      cam_rot_offset=cam_rot, distractor_present=present, distractor_rgb=d_rgb,
      distractor_size=d_size, layout_half=jnp.asarray(0.12),
  )


@functools.partial(jax.jit, static_argnums=1)
def _sample_jit(key, families):
  return _sample(key, families)


def families_of(split: str) -> tuple[bool, ...]:
  """Which attribute groups a split draws from its held-out distribution (OOD_FAMILIES order)."""
  check_split(split)
  if split == "ood_all":
    return (True,) * len(OOD_FAMILIES)
  return tuple(split == f for f in OOD_FAMILIES)


def sample(key: jax.Array, split: str) -> SceneParams:
  """Draws one scene of `split` (a name in SPLITS). Jittable and vmappable over `key`."""
  return _sample(key, families_of(split))


def sample_batch(key: jax.Array, split: str, n: int) -> SceneParams:
  """Draws `n` scenes of `split`: a SceneParams whose leaves have a leading axis of size n."""
  families = families_of(split)
  return jax.vmap(lambda k: _sample_jit(k, families))(jax.random.split(key, n))
