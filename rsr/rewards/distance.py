"""Perceptual distances between frames, each in [0, 1], jittable and batched over leading axes.

The alignment term of the endogenous reward is 1 - d(imagined frame, goal frame). The paper uses LPIPS
(Zhang et al. 2018, arXiv:1801.03924) on an ImageNet AlexNet; this project's default instead reads the
world model's OWN tokenizer encoder, so the reward needs no outside weights and measures frames in the
representation the world model predicts in:

    feature_distance(fa, fb)            LPIPS's recipe on given activations, with uniform channel weights
    tokenizer_distance(tok, p, a, b)    feature_distance over Tokenizer.features (the endogenous default)
    pixel_distance(a, b)                mean squared error of [0, 1] images
    token_distance(levels, ta, tb)      mean squared difference of the tokens' FSQ values, / 4
    LPIPS.load(path)(a, b)              real LPIPS ("alex", v0.1) from converted weights

The recipe, per layer l with activations f[..., h, w, c]: unit-normalise every spatial feature vector over
channels, take the squared difference, sum it over channels (with LPIPS's learned non-negative weights, or
uniformly), average over h and w. Two unit vectors lie at squared distance <= 4, so `feature_distance`
divides each layer by 4 and averages the layers: [0, 1] by construction, 0 exactly for identical inputs.

Pixels are NOT a layer of `tokenizer_distance`: (1) LPIPS, the paper's distance, has no pixel layer, and
keeping the same form (normalise, square, average) keeps the two interchangeable; (2) the tokenizer's first
stage already sees every pixel (space-to-depth then a convolution, at half resolution); (3) unit-normalising
an RGB vector discards brightness (grey = white), while un-normalised pixel MSE lives on another scale
(about 0.01 between frames of one episode) that averaging with feature layers would drown. Use
`distance="pixels"` for pixels.

LPIPS weights file (one .npz, float32; i = 1..5 follows AlexNet's conv1..conv5, lin{i} reads relu{i}):

    conv{i}_w  [kh, kw, cin, cout]  kernels 11, 5, 3, 3, 3; cin = 3 for conv1, else cout of conv{i-1}
    conv{i}_b  [cout]
    lin{i}     [cout]               LPIPS's 1x1 "lin" weights, >= 0

The official channel counts are 64, 192, 384, 256, 256; the loader takes whatever the file holds, so tests
use small ones. Strides, paddings and max-pools are fixed (torchvision's AlexNet, cut where LPIPS cuts it):
conv1 (stride 4, pad 2) relu1 | pool conv2 (pad 2) relu2 | pool conv3 (pad 1) relu3 | conv4 (pad 1) relu4 |
conv5 (pad 1) relu5; pools are 3x3, stride 2, no padding. Frames need at least 31x31 pixels.

Converting the official PyTorch weights (on a machine with torch and `pip install lpips`; not run here):

    import lpips, numpy as np, torch
    m = lpips.LPIPS(net="alex", version="0.1")           # torchvision AlexNet + LPIPS's lin layers
    convs = [l for l in m.net.modules() if isinstance(l, torch.nn.Conv2d)]   # conv1..conv5, in order
    out = {}
    for i, conv in enumerate(convs, 1):
      out[f"conv{i}_w"] = conv.weight.detach().permute(2, 3, 1, 0).numpy()  # [cout, cin, kh, kw] -> HWIO
      out[f"conv{i}_b"] = conv.bias.detach().numpy()
    for i, lin in enumerate(m.lins, 1):
      out[f"lin{i}"] = lin.model[-1].weight.detach().reshape(-1).numpy()    # [1, c, 1, 1] -> [c]
    np.savez("lpips_alex.npz", **{k: v.astype(np.float32) for k, v in out.items()})
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from rsr.world_model.fsq import FSQ
from rsr.world_model.tokenizer import Tokenizer

_EPS = 1e-10  # LPIPS's normalize_tensor epsilon


def _unit(x: jax.Array) -> jax.Array:
  """Unit-normalise over the last (channel) axis as LPIPS does: x / (|x| + eps).

  The floor under the squared norm keeps the gradient finite at all-zero vectors (ReLU features often are);
  the value differs from LPIPS's only below |x| = 1e-15."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x / (jnp.sqrt(jnp.maximum(sq, 1e-30)) + _EPS)


def _sq_unit_diff(fa: jax.Array, fb: jax.Array) -> jax.Array:
  """Per channel (unit(fa) - unit(fb))^2, [..., c]; exactly 0 where the feature vectors are equal.

  XLA may round the two normalisations differently inside one fused kernel (about 1e-16 apart), so
  without the mask a frame compared with itself would not score exactly 0."""
  same = jnp.all(fa == fb, axis=-1, keepdims=True)
  return jnp.where(same, 0.0, jnp.square(_unit(fa) - _unit(fb)))


def _check_images(name: str, a: jax.Array, b: jax.Array) -> None:
  if a.shape != b.shape or a.ndim < 3 or a.shape[-1] != 3:
    raise ValueError(f"{name}: images must share a shape [..., H, W, 3], got {a.shape} and {b.shape}")
  if not (jnp.issubdtype(a.dtype, jnp.floating) and jnp.issubdtype(b.dtype, jnp.floating)):
    raise ValueError(f"{name}: images must be floats in [0, 1], got {a.dtype} and {b.dtype} "
                     "(uint8 frames: rsr.world_model.tokenizer.to_unit)")


def _check_pairs(feats_a: list[jax.Array], feats_b: list[jax.Array]) -> None:
  if len(feats_a) != len(feats_b) or not feats_a:
    raise ValueError(f"feature lists must be non-empty and of equal length, got {len(feats_a)} and {len(feats_b)}")
  for i, (fa, fb) in enumerate(zip(feats_a, feats_b)):
    if fa.shape != fb.shape or fa.ndim < 3:
      raise ValueError(f"layer {i}: features must share a shape [..., h, w, c], got {fa.shape} and {fb.shape}")


def feature_distance(feats_a: list[jax.Array], feats_b: list[jax.Array]) -> jax.Array:
  """Activations per layer, each f32[..., h, w, c] -> f32[...] in [0, 1] (see the module docstring)."""
  _check_pairs(feats_a, feats_b)
  per_layer = [jnp.mean(jnp.sum(_sq_unit_diff(fa, fb), axis=-1), axis=(-2, -1)) / 4.0
               for fa, fb in zip(feats_a, feats_b)]
  # The division leaves float rounding just above 1 possible for exactly opposite vectors.
  return jnp.clip(sum(per_layer) / len(per_layer), 0.0, 1.0)


def tokenizer_distance(tokenizer, tok_params, a: jax.Array, b: jax.Array) -> jax.Array:
  """The endogenous default: `feature_distance` over every stage of the tokenizer's encoder.

  tokenizer: a `rsr.world_model.tokenizer.Tokenizer`; a, b: f32[..., H, W, 3] in [0, 1] -> f32[...].
  Jittable: close over the tokenizer, e.g. jax.jit(lambda a, b: tokenizer_distance(tok, params, a, b)).
  """

  _check_images("tokenizer_distance", a, b)
  # Two passes of the same shape rather than one over both: a batched convolution may round rows at
  # different batch positions differently, and identical frames must give exactly 0.
  fa = tokenizer.apply(tok_params, a, method=Tokenizer.features)
  fb = tokenizer.apply(tok_params, b, method=Tokenizer.features)
  return feature_distance(fa, fb)


def pixel_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean squared error: f32[..., H, W, 3] in [0, 1] (both) -> f32[...] in [0, 1]."""
  _check_images("pixel_distance", a, b)
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=(-3, -2, -1))


def token_distance(levels: tuple[int, ...], tokens_a: jax.Array, tokens_b: jax.Array) -> jax.Array:
  """FSQ token ids i32[..., N] (both) -> f32[...] in [0, 1]: mean squared difference of the tokens'
  quantized values (each in [-1, 1], so a squared difference is <= 4), divided by 4.

  Unlike a count of differing ids this knows that neighbouring FSQ levels are close."""
  if tokens_a.shape != tokens_b.shape:
    raise ValueError(f"token_distance: tokens must share a shape, got {tokens_a.shape} and {tokens_b.shape}")
  fsq = FSQ(levels)
  diff = fsq.embed(tokens_a.astype(jnp.int32)) - fsq.embed(tokens_b.astype(jnp.int32))  # [..., N, d]
  return jnp.mean(jnp.square(diff), axis=(-2, -1)) / 4.0


# ---- LPIPS -------------------------------------------------------------------------------------------

# LPIPS's ScalingLayer: inputs in [-1, 1] are shifted and scaled to ImageNet statistics.
LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
LPIPS_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
# AlexNet as LPIPS cuts it: per layer (kernel, stride, padding, max-pool before the conv).
ALEX = ((11, 4, 2, False), (5, 1, 2, True), (3, 1, 1, True), (3, 1, 1, False), (3, 1, 1, False))


def _conv(x: jax.Array, w: jax.Array, b: jax.Array, stride: int, pad: int) -> jax.Array:
  y = jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + b


def _pool(x: jax.Array) -> jax.Array:
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")


def lpips_features(params: dict, x_unit: jax.Array) -> list[jax.Array]:
  """AlexNet's relu1..relu5: f32[B, H, W, 3] in [0, 1] -> five [B, h_i, w_i, c_i]."""
  x = (x_unit * 2.0 - 1.0 - LPIPS_SHIFT) / LPIPS_SCALE
  feats = []
  for i, (_, stride, pad, pool) in enumerate(ALEX, 1):
    if pool:
      x = _pool(x)
    x = jax.nn.relu(_conv(x, params[f"conv{i}_w"], params[f"conv{i}_b"], stride, pad))
    feats.append(x)
  return feats


def lpips_layers(params: dict, a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-layer LPIPS terms: f32[B, H, W, 3] in [0, 1] (both) -> f32[B, 5]; LPIPS is their sum."""
  # Two trunk passes, not one over both: identical frames must give exactly 0 (see tokenizer_distance).
  out = []
  for i, (fa, fb) in enumerate(zip(lpips_features(params, a), lpips_features(params, b)), 1):
    d = _sq_unit_diff(fa, fb)  # [B, h, w, c]
    out.append(jnp.mean(d @ params[f"lin{i}"], axis=(1, 2)))
  return jnp.stack(out, axis=-1)


_lpips_layers_jit = jax.jit(lpips_layers)


def alex_sizes(height: int, width: int) -> list[tuple[int, int]]:
  """Spatial size of relu1..relu5 for an image of height x width (non-positive: too small)."""
  sizes, h, w = [], height, width
  for k, stride, pad, pool in ALEX:
    if pool:
      h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    h, w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    sizes.append((h, w))
  return sizes


class LPIPS:
  """Real LPIPS (AlexNet, v0.1) from an npz of converted weights (keys and conversion: module docstring).

      lpips = LPIPS.load("lpips_alex.npz")
      d = lpips(a, b)           # f32[..., H, W, 3] in [0, 1] (both) -> f32[...] in [0, 1]

  Inside a jitted function prefer `lpips_layers(lpips.params, a, b)` with the params passed in as an
  argument: closing over them embeds the weights (10 MB for the official ones) as constants.
  """

  def __init__(self, params: dict[str, np.ndarray], path: str = "<arrays>"):
    self.path = path
    self.params = {k: jnp.asarray(v, jnp.float32) for k, v in _checked(params, path).items()}

  @classmethod
  def load(cls, path: str) -> "LPIPS":
    if not os.path.isfile(path):
      raise ValueError(f"LPIPS weights file {path} does not exist (convert it as rsr/rewards/distance.py says)")
    try:
      with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
      raise ValueError(f"LPIPS weights file {path} is unreadable ({type(e).__name__}: {e})") from None
    return cls(arrays, path)

  def _flat(self, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array, tuple[int, ...]]:
    _check_images("LPIPS", a, b)
    h, w = a.shape[-3:-1]
    if min(min(s) for s in alex_sizes(h, w)) < 1:
      raise ValueError(f"LPIPS needs frames of at least 31x31 pixels (AlexNet's strides and pools), got {h}x{w}")
    lead = a.shape[:-3]
    return (a.reshape((-1,) + a.shape[-3:]).astype(jnp.float32),
            b.reshape((-1,) + b.shape[-3:]).astype(jnp.float32), lead)

  def features(self, x: jax.Array) -> list[jax.Array]:
    """f32[B, H, W, 3] in [0, 1] -> AlexNet's relu1..relu5 under these weights."""
    return lpips_features(self.params, x)

  def layers(self, a: jax.Array, b: jax.Array) -> jax.Array:
    """f32[..., H, W, 3] in [0, 1] (both) -> the five per-layer terms f32[..., 5] (unclipped)."""
    fa, fb, lead = self._flat(a, b)
    return _lpips_layers_jit(self.params, fa, fb).reshape(lead + (len(ALEX),))

  def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
    """f32[..., H, W, 3] in [0, 1] (both) -> LPIPS f32[...] clipped to [0, 1].

    LPIPS is a sum of five non-negative terms and has no upper bound of 1 (each term can reach 2 max(lin)),
    but on natural images it stays below 1 (about 0.7 for unrelated photographs). Clipping keeps the
    reward's alignment term 1 - d in [0, 1] while leaving every ordinary value exactly the paper's;
    rescaling by the theoretical bound instead would shrink all values and change the reward's balance
    against the done bonus."""
    return jnp.clip(jnp.sum(self.layers(a, b), axis=-1), 0.0, 1.0)


def _checked(arrays: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  """The LPIPS entries of `arrays`, after checking names, shapes and signs against the documented layout."""
  def get(key: str) -> np.ndarray:
    if key not in arrays:
      raise ValueError(f"LPIPS weights file {path} has no key {key!r} (it needs conv{{i}}_w, conv{{i}}_b and "
                       f"lin{{i}} for i = 1..5; see rsr/rewards/distance.py); it has: {', '.join(sorted(arrays))}")
    v = np.asarray(arrays[key])
    if not np.issubdtype(v.dtype, np.floating) or not np.isfinite(v).all():
      raise ValueError(f"LPIPS weights file {path}: {key!r} must hold finite floats, got dtype {v.dtype}")
    return v

  out, cin = {}, 3
  for i, (k, _, _, _) in enumerate(ALEX, 1):
    w = get(f"conv{i}_w")
    if w.ndim != 4 or w.shape[:3] != (k, k, cin):
      raise ValueError(f"LPIPS weights file {path}: 'conv{i}_w' has shape {w.shape}, expected ({k}, {k}, {cin}, "
                       "cout) = [kh, kw, cin, cout] (torch's [cout, cin, kh, kw] needs .permute(2, 3, 1, 0))")
    cout = w.shape[3]
    for key in (f"conv{i}_b", f"lin{i}"):
      v = get(key)
      if v.shape != (cout,):
        raise ValueError(f"LPIPS weights file {path}: {key!r} has shape {v.shape}, expected ({cout},) to match "
                         f"'conv{i}_w'")
      out[key] = v
    if (out[f"lin{i}"] < 0).any():
      raise ValueError(f"LPIPS weights file {path}: 'lin{i}' has negative weights (LPIPS keeps them >= 0, "
                       "which makes the distance non-negative)")
    out[f"conv{i}_w"] = w
    cin = cout
  return out
