"""Behaviour cloning learns a task- and image-dependent action; Monte-Carlo value targets by hand."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rsr.agents import bc
from rsr.agents.networks import ActorCritic, AgentConfig, init_params

CFG = AgentConfig(channels=(4, 8), hidden=32, num_tasks=3, action_dim=2)
# Per-task demo action for dimension 0; dimension 1 follows the image's brightness.
TASK_ACTION = jnp.array([-0.7, 0.1, 0.8])


@functools.partial(jax.jit, static_argnames="n")
def _demos(key, n=64):
  """Uniform-grey frames of random brightness b in [0, 1]: action = (TASK_ACTION[task], 2 b - 1)."""
  k_task, k_b = jax.random.split(key)
  task = jax.random.randint(k_task, (n,), 0, CFG.num_tasks)
  b = jax.random.uniform(k_b, (n,))
  rgb = jnp.broadcast_to((b * 255).astype(jnp.uint8)[:, None, None, None], (n, 16, 16, 3))
  action = jnp.stack([TASK_ACTION[task], 2 * b - 1], axis=-1)
  return {"obs": {"rgb": rgb, "task": task}, "action": action}


def test_bc_fits_the_demonstrations():
  net = ActorCritic(CFG)
  params = init_params(CFG, jax.random.PRNGKey(0), (16, 16))
  opt = optax.adam(3e-3)
  opt_state = opt.init(params)
  step = bc.make_bc_step(net.apply, opt)
  test_batch = _demos(jax.random.PRNGKey(123), n=256)
  loss_of = jax.jit(lambda p: bc.bc_loss(net.apply, p, test_batch)[1])
  first = loss_of(params)
  key = jax.random.PRNGKey(1)
  for _ in range(200):
    key, sub = jax.random.split(key)
    params, opt_state, metrics = step(params, opt_state, _demos(sub), sub)
  last = loss_of(params)
  assert set(metrics) == {"loss", "mse", "log_std"}
  # Initial means are ~0, so the first MSE is the demo actions' mean square (~0.35); a learnt policy is far
  # below it on held-out demos, and the std has shrunk to match.
  assert float(first["mse"]) > 0.25
  assert float(last["mse"]) < 0.05 * float(first["mse"]), (float(first["mse"]), float(last["mse"]))
  assert float(last["log_std"]) < float(first["log_std"]) - 0.4
  assert float(last["loss"]) < float(first["loss"])


def test_bc_leaves_the_critic_alone():
  net = ActorCritic(CFG)
  params = init_params(CFG, jax.random.PRNGKey(0), (16, 16))
  batch = _demos(jax.random.PRNGKey(2))
  grads = jax.jit(jax.grad(lambda p: bc.bc_loss(net.apply, p, batch)[0]))(params)["params"]
  for name in ("critic_torso", "critic_value"):
    assert all(float(jnp.abs(g).sum()) == 0.0 for g in jax.tree_util.tree_leaves(grads[name]))


def test_value_targets_hand_case():
  # gamma 0.5: G2 = 2, G1 = 0 + 0.5 * 2 = 1, G0 = 1 + 0.5 * 1 = 1.5
  np.testing.assert_allclose(bc.value_targets(jnp.array([1.0, 0.0, 2.0]), 0.5), [1.5, 1.0, 2.0])
  assert bc.value_targets(jnp.array([3.0]), 0.9).tolist() == pytest.approx([3.0])


def test_random_shift_moves_each_image_within_the_pad():
  """Each image is its original moved by at most `pad` pixels (edges repeated); different images move
  differently; pad 0 is the identity."""
  rgb = jax.random.randint(jax.random.PRNGKey(0), (64, 12, 10, 3), 0, 256).astype(jnp.uint8)
  out = bc.random_shift(jax.random.PRNGKey(1), rgb, 2)
  assert out.shape == rgb.shape and out.dtype == jnp.uint8
  padded = jnp.pad(rgb, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
  shifts = set()
  for i in range(rgb.shape[0]):
    found = [(dy, dx) for dy in range(5) for dx in range(5)
             if bool(jnp.all(padded[i, dy:dy + 12, dx:dx + 10] == out[i]))]
    assert found, i
    shifts.add(found[0])
  assert len(shifts) > 10  # 25 possible offsets, drawn per image
  assert bool(jnp.all(bc.random_shift(jax.random.PRNGKey(1), rgb, 0) == rgb))
