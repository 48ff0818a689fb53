"""Behaviour cloning on demonstrations (the policy's start before PPO) and Monte-Carlo value targets.

The loss is the Gaussian negative log-likelihood of the demo action, not a plain MSE: it fits the mean and
also the policy's log std, so PPO starts from an exploration noise matched to how well the demos are fitted
rather than from the arbitrary init_log_std.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from rsr.agents.ppo import ApplyFn, gaussian_log_prob


def bc_loss(apply_fn: ApplyFn, params: Any, batch: dict) -> tuple[jax.Array, dict]:
  """Gaussian NLL of the demo actions.

  Args:
    batch: {"obs": dict with leading axis M, "action": f32[M, A] in [-1, 1]}.
  Returns:
    (loss f32[], metrics {loss, mse (of the mean against the demo action), log_std (mean over M and A)}).
  """
  mean, log_std, _ = apply_fn(params, batch["obs"])
  action = batch["action"]
  loss = -gaussian_log_prob(mean, log_std, action).mean()
  metrics = {"loss": loss, "mse": jnp.mean(jnp.square(mean - action)), "log_std": jnp.mean(log_std)}
  return loss, metrics


def random_shift(key: jax.Array, images: jax.Array, pad: int) -> jax.Array:
  """Each image moved by its own random offset in [-pad, pad]^2, borders repeated (DrQ's augmentation,
  Kostrikov et al. 2020, for pixel RL): uint8[B, H, W, C] -> uint8[B, H, W, C]."""
  if pad <= 0:
    return images
  _, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  offsets = jax.random.randint(key, (images.shape[0], 2), 0, 2 * pad + 1)
  return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, im.shape[-1])))(padded, offsets)


def make_bc_step(apply_fn: ApplyFn, optimizer: optax.GradientTransformation, shift: int = 0
                 ) -> Callable[[Any, Any, dict, jax.Array], tuple[Any, Any, dict]]:
  """A jitted (params, opt_state, batch, key) -> (params, opt_state, metrics) step of bc_loss.

  shift: random-shift augmentation of every image in batch["obs"] by up to this many pixels (0: none).
  Pixel BC on a few dozen demonstrations memorises them without it (train MSE 0.009, held-out 0.19 at
  64x64 with 84 demonstrations). The value head gets zero gradient here; train it with
  ppo_loss(..., critic_only=True) on value_targets.
  """
  grad_fn = jax.grad(lambda p, b: bc_loss(apply_fn, p, b), has_aux=True)

  @jax.jit
  def step(params, opt_state, batch, key):
    if shift:
      obs = dict(batch["obs"])
      for i, k in enumerate(name for name in sorted(obs) if name in ("rgb", "goal")):
        obs[k] = random_shift(jax.random.fold_in(key, i), obs[k], shift)
      batch = dict(batch, obs=obs)
    grads, metrics = grad_fn(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  return step


def value_targets(rewards: jax.Array, gamma: float) -> jax.Array:
  """Discounted returns G_t = r_t + gamma * G_{t+1} of one episode: f32[T] -> f32[T].

  The episode is taken to end after its last step (nothing bootstrapped), as for a terminated episode; for
  one cut at a time limit this undervalues the last steps, the same bias as gae's.
  """
  def step(g_next, r):
    g = r + gamma * g_next
    return g, g

  _, g = jax.lax.scan(step, jnp.zeros((), jnp.float32), rewards.astype(jnp.float32), reverse=True)
  return g
