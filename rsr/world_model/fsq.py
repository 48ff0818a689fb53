"""Finite scalar quantization (Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple", 2023).

Each of d latent channels is squashed to a bounded range and rounded to one of L_i levels; a token is the
tuple of levels, indexed as a mixed-radix number, so the implicit codebook has prod(L_i) entries and needs
no codebook loss, no commitment loss and no dead-code tricks. Rounding passes gradients straight through.

Video is quantized with hysteresis (`sticky_codes`): a token keeps the previous frame's code while its
latent stays within that code's cell widened by `margin` levels on every channel. Rounding alone flips a
token whose latent sits near a cell boundary on the slightest pixel change (a shade of lighting), and a
world model then has to predict that flicker; with hysteresis a token changes when its content does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class FSQ:
  """levels: e.g. (8, 5, 5, 5) -> 1000 codes over 4 channels. Pure functions; holds only constants."""

  def __init__(self, levels: tuple[int, ...]):
    if not levels or any(int(l) < 2 for l in levels):
      raise ValueError(f"FSQ levels must be integers >= 2, got {levels!r}")
    self.levels = tuple(int(l) for l in levels)
    self._levels = np.asarray(self.levels, np.float32)
    self._basis = np.cumprod([1] + list(self.levels[:-1])).astype(np.int32)
    self.codebook_size = int(np.prod(self.levels))

  @property
  def dim(self) -> int:
    return len(self.levels)

  def _bound(self, z: jax.Array) -> jax.Array:
    # Even level counts need a half-step offset so that rounding yields exactly L values.
    eps = 1e-3
    half = (self._levels - 1) * (1 + eps) / 2
    offset = np.where(self._levels % 2 == 0, 0.5, 0.0).astype(np.float32)
    shift = np.arctanh(offset / half).astype(np.float32)
    return jnp.tanh(z + shift) * half - offset

  def bound(self, z: jax.Array) -> jax.Array:
    """Latents f32[..., d] -> the bounded values in level units, whose rounding is the quantized digit
    (minus the centre offset); what `sticky_codes` quantizes."""
    return self._bound(z)

  def sticky_codes(self, bounded: jax.Array, margin: float) -> jax.Array:
    """Bounded latents f32[T, ..., d] of consecutive frames -> token ids i32[T, ...] with hysteresis: at
    each position, frame t keeps frame t - 1's code while |bounded - that code's level| <= 0.5 + margin on
    every channel (margin 0: plain rounding)."""
    def step(prev, b):
      keep = jnp.all(jnp.abs(b - prev) <= 0.5 + margin, axis=-1, keepdims=True)
      cur = jnp.where(keep, prev, jnp.round(b))
      return cur, cur

    _, rounded = jax.lax.scan(step, jnp.round(bounded[0]), bounded)
    return self.codes(rounded / (self._levels // 2))

  def quantize(self, z: jax.Array) -> jax.Array:
    """f32[..., d] -> quantized f32[..., d] in [-1, 1] (straight-through gradients)."""
    bounded = self._bound(z)
    rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)
    return rounded / (self._levels // 2)

  def codes(self, q: jax.Array) -> jax.Array:
    """Quantized f32[..., d] -> token ids i32[...] in [0, codebook_size)."""
    half = self._levels // 2
    digits = jnp.round(q * half + half).astype(jnp.int32)
    return jnp.sum(digits * self._basis, axis=-1)

  def embed(self, codes: jax.Array) -> jax.Array:
    """Token ids i32[...] -> quantized f32[..., d] (the inverse of `codes`)."""
    digits = (codes[..., None] // self._basis) % self._levels.astype(np.int32)
    half = self._levels // 2
    return (digits.astype(jnp.float32) - half) / half
