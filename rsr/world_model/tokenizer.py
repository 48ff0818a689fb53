"""The frame tokenizer: a convolutional autoencoder with finite scalar quantization.

    tok = Tokenizer(TokenizerConfig(...))
    codes = tok.apply(params, rgb, method=Tokenizer.encode)        # uint8[..., H, W, 3] -> i32[..., h, w]
    rgb_hat = tok.apply(params, codes, method=Tokenizer.decode)    # -> f32[..., H, W, 3] in [0, 1]

H / h = 2 ** len(channels): 64x64 frames with two channel stages give 16x16 tokens. Each camera view is
tokenized on its own by the same network (the dynamics model sees views x h x w tokens per frame).
`features` returns the encoder's intermediate activations, the basis of the endogenous perceptual distance.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsr.world_model.fsq import FSQ

NORMS = ("group", "pixel")


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  channels: tuple[int, ...] = (32, 64)  # one stage per factor-2 downsampling
  res_blocks: int = 1  # residual blocks per stage
  levels: tuple[int, ...] = (8, 5, 5, 5)  # FSQ levels: 1000 codes
  # "group": GroupNorm (MAGVIT-style; its statistics span the whole image, so a change anywhere moves
  # every latent a little); "pixel": each position's channels normalised on their own, so a token's latent
  # depends only on the pixels within its receptive field.
  norm: str = "group"

  def validate(self) -> "TokenizerConfig":
    if self.norm not in NORMS:
      raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
    return self

  @property
  def downsample(self) -> int:
    return 2 ** len(self.channels)

  @property
  def codebook_size(self) -> int:
    return FSQ(self.levels).codebook_size


def _groups(c: int) -> int:
  return min(8, c)


def _norm(kind: str, channels: int) -> nn.Module:
  return nn.GroupNorm(num_groups=_groups(channels)) if kind == "group" else nn.LayerNorm()


class ResBlock(nn.Module):
  channels: int
  norm: str = "group"

  @nn.compact
  def __call__(self, x):
    h = _norm(self.norm, x.shape[-1])(x)
    h = nn.Conv(self.channels, (3, 3))(nn.swish(h))
    h = _norm(self.norm, self.channels)(h)
    h = nn.Conv(self.channels, (3, 3))(nn.swish(h))
    if x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1))(x)
    return x + h


def space_to_depth(x: jax.Array, f: int = 2) -> jax.Array:
  b, h, w, c = x.shape
  x = x.reshape(b, h // f, f, w // f, f, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // f, w // f, f * f * c)


def depth_to_space(x: jax.Array, f: int = 2) -> jax.Array:
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, f, f, c // (f * f)).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * f, w * f, c // (f * f))


class Encoder(nn.Module):
  """Pixels fold into channels first (space-to-depth), so no convolution runs at full resolution: on a
  CPU that is where an autoencoder's time would go."""

  config: TokenizerConfig

  @nn.compact
  def __call__(self, x) -> tuple[jax.Array, list[jax.Array]]:
    """f32[B, H, W, 3] in [-1, 1] -> (latents f32[B, h, w, d], features per stage)."""
    feats = []
    chans = self.config.channels
    x = nn.Conv(chans[0], (3, 3))(space_to_depth(x))
    for i, c in enumerate(chans):
      if i:
        x = nn.Conv(c, (4, 4), strides=(2, 2))(x)
      for _ in range(self.config.res_blocks):
        x = ResBlock(c, self.config.norm)(x)
      feats.append(x)
    x = _norm(self.config.norm, x.shape[-1])(x)
    return nn.Conv(len(self.config.levels), (1, 1))(nn.swish(x)), feats


class Decoder(nn.Module):
  config: TokenizerConfig

  @nn.compact
  def __call__(self, q) -> jax.Array:
    """f32[B, h, w, d] -> f32[B, H, W, 3] (pre-sigmoid logits of pixel intensity)."""
    chans = self.config.channels
    x = nn.Conv(chans[-1], (3, 3))(q)
    for i, c in enumerate(reversed(chans)):
      if i:
        b, h, w, ch = x.shape
        x = nn.Conv(c, (3, 3))(jax.image.resize(x, (b, 2 * h, 2 * w, ch), "nearest"))
      for _ in range(self.config.res_blocks):
        x = ResBlock(c, self.config.norm)(x)
    x = _norm(self.config.norm, x.shape[-1])(x)
    return depth_to_space(nn.Conv(12, (3, 3))(nn.swish(x)))


def to_unit(rgb: jax.Array) -> jax.Array:
  """uint8 pixels -> f32 in [0, 1]."""
  return rgb.astype(jnp.float32) / 255.0


class Tokenizer(nn.Module):
  config: TokenizerConfig

  def setup(self):
    self.config.validate()
    self.fsq = FSQ(self.config.levels)
    self.encoder = Encoder(self.config)
    self.decoder = Decoder(self.config)

  def _flat(self, x, tail: int):
    lead = x.shape[:-tail]
    return x.reshape((-1,) + x.shape[-tail:]), lead

  def __call__(self, rgb: jax.Array) -> tuple[jax.Array, jax.Array]:
    """uint8[..., H, W, 3] -> (reconstruction f32[..., H, W, 3] in [0, 1], codes i32[..., h, w])."""
    x, lead = self._flat(rgb, 3)
    z, _ = self.encoder(to_unit(x) * 2.0 - 1.0)
    q = self.fsq.quantize(z)
    recon = jax.nn.sigmoid(self.decoder(q))
    return recon.reshape(lead + recon.shape[1:]), self.fsq.codes(q).reshape(lead + q.shape[1:3])

  def encode(self, rgb: jax.Array) -> jax.Array:
    """uint8[..., H, W, 3] -> token ids i32[..., h, w]."""
    x, lead = self._flat(rgb, 3)
    z, _ = self.encoder(to_unit(x) * 2.0 - 1.0)
    codes = self.fsq.codes(self.fsq.quantize(z))
    return codes.reshape(lead + codes.shape[1:])

  def encode_bounded(self, rgb: jax.Array) -> jax.Array:
    """uint8[..., H, W, 3] -> bounded latents f32[..., h, w, d] in level units (FSQ.sticky_codes input)."""
    x, lead = self._flat(rgb, 3)
    z, _ = self.encoder(to_unit(x) * 2.0 - 1.0)
    b = self.fsq.bound(z)
    return b.reshape(lead + b.shape[1:])

  def decode(self, codes: jax.Array) -> jax.Array:
    """token ids i32[..., h, w] -> f32[..., H, W, 3] in [0, 1]."""
    c, lead = self._flat(codes, 2)
    out = jax.nn.sigmoid(self.decoder(self.fsq.embed(c)))
    return out.reshape(lead + out.shape[1:])

  def features(self, rgb_unit: jax.Array) -> list[jax.Array]:
    """f32[..., H, W, 3] in [0, 1] -> the encoder's activations per stage, each [..., h_i, w_i, c_i]."""
    x, lead = self._flat(rgb_unit, 3)
    _, feats = self.encoder(x * 2.0 - 1.0)
    return [f.reshape(lead + f.shape[1:]) for f in feats]
