"""The loop-safe convolution equals lax's, value and gradients, in every case it takes over."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rsr.utils import conv

DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("kernel,strides,padding", [
    ((3, 3), (1, 1), "SAME"), ((3, 3), (2, 2), "SAME"), ((4, 4), (2, 2), "VALID"), ((1, 1), (1, 1), "SAME"),
    ((3, 2), (2, 1), ((1, 2), (0, 1))), ((3, 3), (1, 1), ((-1, 1), (1, -1))),
])
def test_value_and_gradients_match_lax(kernel, strides, padding):
  kx, kw, kd = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, (3, 9, 10, 4))
  w = jax.random.normal(kw, kernel + (4, 5))

  def loss(f, x, w):
    y = f(x, w, strides, padding, dimension_numbers=DN)
    # A fixed random cotangent: every output position contributes its own weight to both gradients.
    return jnp.sum(jnp.tanh(y) * jax.random.normal(kd, y.shape)), y

  (ref_l, ref_y), ref_g = jax.value_and_grad(lambda x, w: loss(lax.conv_general_dilated, x, w),
                                             argnums=(0, 1), has_aux=True)(x, w)
  (l, y), g = jax.value_and_grad(lambda x, w: loss(conv.conv_general_dilated, x, w),
                                 argnums=(0, 1), has_aux=True)(x, w)
  np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(l, ref_l, rtol=1e-5)
  np.testing.assert_allclose(g[0], ref_g[0], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(g[1], ref_g[1], rtol=1e-4, atol=1e-4)
  assert float(jnp.max(jnp.abs(g[1]))) > 0.1  # the kernel gradient is not trivially zero


def test_flax_conv_in_a_scan_matches_lax():
  """As a Flax Conv's convolution, inside the kind of loop it exists for: same parameters after 3 SGD steps."""
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 8, 8, 3))

  def train(f):
    m = nn.Conv(6, (3, 3), strides=(2, 2), conv_general_dilated=f)
    p = m.init(jax.random.PRNGKey(2), x[0])
    g = jax.grad(lambda p, xb: jnp.sum(jnp.sin(m.apply(p, xb))))
    step = lambda p, xb: (jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g(p, xb)), None)
    return jax.jit(lambda p: lax.scan(step, p, x)[0])(p)

  ref, mine = train(lax.conv_general_dilated), train(conv.conv_general_dilated)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), ref, mine)


def test_other_layouts_fall_back_to_lax():
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 9, 9))
  w = jax.random.normal(jax.random.PRNGKey(4), (5, 4, 3, 3))
  for kwargs in ({}, {"rhs_dilation": (2, 2)}):
    f = lambda x, w, c: jnp.sum(c(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"), **kwargs) ** 2)
    np.testing.assert_allclose(jax.grad(f, argnums=1)(x, w, conv.conv_general_dilated),
                               jax.grad(f, argnums=1)(x, w, lax.conv_general_dilated), rtol=1e-5)
