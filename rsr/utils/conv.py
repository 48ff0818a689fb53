"""A 2-D convolution whose gradients stay fast inside compiled loops on XLA:CPU.

Why: XLA:CPU lowers a convolution's gradients (convolutions with non-canonical dimension labels: the
kernel gradient `f01b_i01o->01bf`, the input gradient `b01f_01oi->b01f`) to its Eigen fast path only
outside while loops; inside a `lax.scan` / `lax.fori_loop` body it falls back to a naive loop nest.
In a loop the gradient runs two orders of magnitude slower (figures in docs/benchmarks.md; open upstream as
https://github.com/jax-ml/jax/issues/12868). PPO's epochs x minibatches update is exactly such a loop, and
it held the fused imagination step to a fraction of the machine.

The fix is a custom VJP. The forward pass is XLA's own (fast in loops). The kernel gradient is written as
kh * kw plain matmuls, one per kernel tap:

    dW[i, j] = sum_{b, h, w} x_pad[b, i + s_h * h, j + s_w * w, :]^T dY[b, h, w, :]   (f32[C_in, C_out])

and the input gradient as a convolution in canonical labels with the rotated kernel materialised (see
_conv_bwd); XLA:CPU runs both on its fast path in or out of loops.
Use it where Flax takes a convolution: `nn.Conv(..., conv_general_dilated=conv_general_dilated)`.
Layouts other than NHWC / HWIO, dilations and feature groups go to `lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                         feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
  """Drop-in for `lax.conv_general_dilated` (same arguments, same result).

  The loop-safe gradient applies to 2-D NHWC x HWIO convolutions without dilation or groups:
  lhs f32[B, H, W, C_in], rhs f32[kh, kw, C_in, C_out] -> f32[B, H', W', C_out].
  """
  plain = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type)
  if lhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1:
    return plain(lhs, rhs)
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return plain(lhs, rhs)
  if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, _NHWC):
    return plain(lhs, rhs)
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  return _conv(lhs, rhs, tuple(int(s) for s in window_strides), pads, precision, preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x: jax.Array, w: jax.Array, strides: tuple[int, int], pads: tuple[tuple[int, int], ...],
          precision: Any, preferred_element_type: Any) -> jax.Array:
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC, precision=precision,
                                  preferred_element_type=preferred_element_type)


def _conv_fwd(x, w, strides, pads, precision, preferred_element_type):
  return _conv(x, w, strides, pads, precision, preferred_element_type), (x, w)


def _conv_bwd(strides, pads, precision, preferred_element_type, res, dy):
  x, w = res
  (sh, sw), (ho, wo) = strides, dy.shape[1:3]
  kh, kw = w.shape[:2]
  # The input gradient is the stride-dilated output gradient convolved with the kernel rotated by 180 degrees
  # and with its in/out channels swapped. The rotated kernel is materialised behind an optimization barrier:
  # otherwise XLA folds the swap into the convolution's dimension labels (01oi), the layout that, like the
  # kernel gradient, leaves the fast path inside loops.
  rot = lax.optimization_barrier(jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2)))
  back_pads = [(k - lo - 1, n + lo - 1 - (m - 1) * s)
               for k, (lo, _), n, m, s in zip((kh, kw), pads, x.shape[1:3], (ho, wo), strides)]
  dx = lax.conv_general_dilated(dy, rot, (1, 1), back_pads, lhs_dilation=strides, dimension_numbers=_NHWC,
                                precision=precision, preferred_element_type=preferred_element_type)
  # Negative padding (a crop) is legal in lax; lax.pad takes both signs, jnp.pad does not.
  xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0),) + tuple((lo, hi, 0) for lo, hi in pads) + ((0, 0, 0),))
  taps = []
  for i in range(kh):
    for j in range(kw):
      # The input pixels that kernel tap (i, j) saw, one per output position: f32[B, H', W', C_in].
      seen = lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, xp.shape[3]),
                       (1, sh, sw, 1))
      taps.append(jnp.einsum("bhwc,bhwo->co", seen, dy, precision=precision,
                             preferred_element_type=jnp.float32))
  dw = jnp.stack(taps).reshape(w.shape).astype(w.dtype)
  return dx.astype(x.dtype), dw


_conv.defvjp(_conv_fwd, _conv_bwd)
