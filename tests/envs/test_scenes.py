"""Scene splits: held-out values never occur in `id`, and each OOD family changes only its own group."""

import jax
import numpy as np
import pytest

from rsr.envs.tabletop import mjcf
from rsr.envs.tabletop import scenes as S

N = 400


def _hsv(rgb):
  """Hue (turns), saturation of f32[..., 3] colours."""
  mx, mn = rgb.max(-1), rgb.min(-1)
  c = mx - mn
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  safe = np.where(c > 0, c, 1)
  h = np.select([mx == r, mx == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4) / 6
  return np.where(c > 0, h, 0.0), np.where(mx > 0, c / np.where(mx > 0, mx, 1), 0.0)


def _in(x, lo, hi, tol=1e-4):
  return (x >= lo - tol) & (x <= hi + tol)


def _hue_in(h, lo, hi):
  # Hue ranges may wrap below 0 (red).
  return _in(h, lo, hi) | _in(h - 1.0, lo, hi)


@pytest.fixture(scope="module")
def sampled():
  return {s: jax.device_get(S.sample_batch(jax.random.PRNGKey(7), s, N)) for s in S.SPLITS}


def _groups(sc):
  """Per scene, whether each attribute group looks in-domain (True) or held out (False)."""
  hue_a, _ = _hsv(sc.cube_rgb[:, 0])
  hue_b, _ = _hsv(sc.cube_rgb[:, 1])
  _, sat_c = _hsv(sc.container_rgb)
  color = _hue_in(hue_a, *S.ID_CUBE_A_HUE) & _hue_in(hue_b, *S.ID_CUBE_B_HUE) & _in(sat_c, *S.ID_CONTAINER_SAT)
  color_ood = _hue_in(hue_a, *S.OOD_CUBE_A_HUE) & _hue_in(hue_b, *S.OOD_CUBE_B_HUE) & \
      _in(sat_c, *S.OOD_CONTAINER_SAT)
  hue_t, _ = _hsv(sc.table_rgb[:, 0])
  table = (sc.table_texture == S.TEXTURE_WOOD) & _hue_in(hue_t, *S.ID_TABLE_HUE)
  table_ood = (sc.table_texture != S.TEXTURE_WOOD) & np.any(
      [_hue_in(hue_t, *r) for r in S.OOD_TABLE_HUES], axis=0)
  distractor = ~sc.distractor_present.any(-1)
  to_light = -sc.light_dir
  az = np.arctan2(to_light[:, 1], to_light[:, 0]) % (2 * np.pi)
  az_id = np.where(az > np.pi, az - 2 * np.pi, az)
  el = np.arcsin(np.clip(to_light[:, 2], -1, 1))
  light = _in(az_id, *S.ID_LIGHT_AZIMUTH) & _in(el, *S.ID_LIGHT_ELEVATION) & \
      _in(sc.light_intensity, *S.ID_LIGHT_INTENSITY)
  light_ood = _in(az, *S.OOD_LIGHT_AZIMUTH) & _in(el, *S.OOD_LIGHT_ELEVATION) & np.any(
      [_in(sc.light_intensity, *r) for r in S.OOD_LIGHT_INTENSITY], axis=0)
  camera = np.all(np.abs(sc.cam_pos_offset) <= S.ID_CAM_POS + 1e-6, -1) & \
      np.all(np.abs(sc.cam_rot_offset) <= S.ID_CAM_ROT + 1e-6, -1)
  norm = np.linalg.norm(sc.cam_pos_offset, axis=-1)
  camera_ood = _in(norm, *S.OOD_CAM_POS) & np.all(_in(np.abs(sc.cam_rot_offset), *S.OOD_CAM_ROT), -1)
  return {"ood_color": (color, color_ood), "ood_table": (table, table_ood),
          "ood_distractor": (distractor, ~distractor), "ood_light": (light, light_ood),
          "ood_camera": (camera, camera_ood)}


def test_id_scenes_are_all_in_domain(sampled):
  for family, (is_id, is_ood) in _groups(sampled["id"]).items():
    assert is_id.all(), f"{family}: {np.sum(~is_id)} of {N} id scenes fall outside the in-domain ranges"
    assert not is_ood.any(), f"{family}: an id scene has a held-out value"


@pytest.mark.parametrize("split", S.OOD_FAMILIES)
def test_each_family_changes_only_its_group(sampled, split):
  for family, (is_id, is_ood) in _groups(sampled[split]).items():
    if family == split:
      assert is_ood.all(), f"{split}: {np.sum(~is_ood)} scenes not in the held-out ranges of {family}"
      assert not is_id.any(), f"{split}: a scene has an in-domain {family} value"
    else:
      assert is_id.all(), f"{split} changed {family} in {np.sum(~is_id)} scenes"


def test_ood_all_changes_every_group(sampled):
  for family, (is_id, is_ood) in _groups(sampled["ood_all"]).items():
    assert is_ood.all() and not is_id.any(), f"ood_all: {family} not held out everywhere"


def test_scene_sizes_stay_within_mjcf_maxima(sampled):
  for split, sc in sampled.items():
    assert np.all(sc.cube_half <= mjcf.CUBE_HALF + 1e-7), split
    assert np.all(sc.distractor_size <= np.array(mjcf.DISTRACTOR_MAX_SIZE) + 1e-7), split
    assert np.all(sc.container_wall_half_h <= mjcf.CONTAINER_WALL_MAX_HALF_H + 1e-7), split


def test_unknown_split_lists_valid_ones():
  with pytest.raises(ValueError, match="ood_camera"):
    S.sample(jax.random.PRNGKey(0), "ood_weather")


def test_sampling_is_deterministic():
  a = S.sample_batch(jax.random.PRNGKey(3), "ood_all", 8)
  b = S.sample_batch(jax.random.PRNGKey(3), "ood_all", 8)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_camera_roll_turns_the_image_about_the_viewing_axis():
  """cam_rot_offset = (yaw, pitch, roll): roll keeps the viewing direction and turns the image's up vector
  by the roll angle about it; yaw and pitch move the viewing direction."""
  import jax.numpy as jnp

  from rsr.envs.tabletop import render

  base = mjcf.look_at(mjcf.FRONT_CAM_POS, mjcf.FRONT_CAM_TARGET)
  sc = jax.device_get(S.sample(jax.random.PRNGKey(0), "id"))

  def cam(yaw, pitch, roll):
    scene = sc.replace(cam_rot_offset=jnp.array([yaw, pitch, roll]), cam_pos_offset=jnp.zeros(3))
    return np.asarray(render.front_camera(scene, mjcf.FRONT_CAM_POS, base, mjcf.FRONT_CAM_FOVY).mat)

  rolled = cam(0.0, 0.0, 0.1)
  np.testing.assert_allclose(rolled[:, 2], base[:, 2], atol=1e-6)  # same viewing axis
  angle = np.arctan2(np.dot(np.cross(base[:, 1], rolled[:, 1]), base[:, 2]), np.dot(base[:, 1], rolled[:, 1]))
  np.testing.assert_allclose(angle, 0.1, atol=1e-5)  # the image turned by the roll angle
  # A yaw about the world's vertical turns a downward-looking axis by less than the yaw itself (by about
  # the cosine of the camera's elevation), a pitch by the full angle: both clearly move it, roll does not.
  for moved in (cam(0.1, 0.0, 0.0), cam(0.0, 0.1, 0.0)):
    assert np.degrees(np.arccos(np.clip(moved[:, 2] @ base[:, 2], -1, 1))) > 2.0
