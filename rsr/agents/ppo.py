"""PPO with a clipped surrogate: Gaussian policy maths, GAE, the loss, the epoch x minibatch update, and
running reward scaling.

The pieces are pure functions of arrays; a trainer composes them:

    raw, logp = sample_action(key, mean, log_std)        # the env gets jnp.clip(raw, -1, 1)
    ... collect a rollout [T, B] ...
    adv, ret = gae(rewards, values, dones, last_value, cfg.gamma, cfg.lam)
    batch = Batch(obs, action, log_prob, value, adv, ret)   # every leaf flattened to [T * B, ...]
    params, opt_state, metrics = ppo_update(apply_fn, opt, params, opt_state, batch, key, cfg)

`apply_fn(params, obs) -> (mean f32[M, A], log_std f32[M, A], value f32[M])`, e.g. ActorCritic(cfg).apply.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import struct

ApplyFn = Callable[[Any, dict], tuple[jax.Array, jax.Array, jax.Array]]

_LOG_2PI = math.log(2.0 * math.pi)


@struct.dataclass
class Batch:
  """PPO's samples: every leaf with the same leading axis (N for an update, M for a minibatch)."""

  obs: Any  # the policy's observation pytree
  action: jax.Array  # f32[N, A] raw, unclipped (the env got the clipped action)
  log_prob: jax.Array  # f32[N] of the action under the policy that collected it
  value: jax.Array  # f32[N] the collecting critic's estimate
  advantage: jax.Array  # f32[N]
  returns: jax.Array  # f32[N] the value target (advantage + value)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  gamma: float = 0.99
  lam: float = 0.95
  clip_eps: float = 0.2
  vf_coef: float = 0.5
  ent_coef: float = 0.0
  epochs: int = 4
  minibatches: int = 4
  lr: float = 3e-4
  # Separate learning rates for the policy and the value function (0: `lr`). The paper fine-tunes its BC
  # policy at actor 3e-5 and critic 1e-3: a small actor step keeps PPO near the demonstrations' behaviour
  # while a fast critic learns the new reward. Parameters are told apart by their top-level name
  # ("actor..." / "critic...", rsr/agents/networks.py).
  actor_lr: float = 0.0
  critic_lr: float = 0.0
  max_grad_norm: float = 0.5
  normalize_advantages: bool = True
  clip_value: bool = True
  # The most samples in one gradient pass (0: the whole minibatch). A larger minibatch is then split into
  # equal micro-batches whose gradients are averaged (advantages normalized over the whole minibatch
  # first): the same update, computed in pieces. Speed only: on XLA:CPU the conv agent's gradient costs
  # 2.3x more per sample over 512 samples than over 128 (docs/benchmarks.md). Checkpoints and finished
  # runs ignore it (rsr.stages.policy_config.SPEED_FIELDS).
  microbatch: int = 0


# --- The Gaussian policy -----------------------------------------------------------------------------------


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, x: jax.Array) -> jax.Array:
  """log N(x; mean, exp(log_std)^2) of a diagonal Gaussian: f32[..., A] (broadcasting) -> f32[...]."""
  z = (x - mean) * jnp.exp(-log_std)
  return jnp.sum(-0.5 * z * z - log_std - 0.5 * _LOG_2PI, axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
  """Entropy of a diagonal Gaussian: f32[..., A] -> f32[...] (it does not depend on the mean)."""
  return jnp.sum(log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1)


def sample_action(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Draw a raw action and its log prob: f32[..., A] -> (f32[..., A], f32[...]).

  The env receives jnp.clip(raw, -1, 1). The log prob stays that of the unclipped sample and PPO's ratio
  uses it (PureJaxRL's choice): clipping is part of the env, so the policy's density is left untouched and
  no probability mass piles up on the bounds.
  """
  raw = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
  return raw, gaussian_log_prob(mean, log_std, raw)


# --- Advantages --------------------------------------------------------------------------------------------


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array, gamma: float,
        lam: float) -> tuple[jax.Array, jax.Array]:
  """Generalized advantage estimation over a rollout.

  Args:
    rewards: f32[T, B], the reward of step t.
    values: f32[T, B], V(s_t) of the observation the action of step t was taken in.
    dones: bool[T, B], True when step t ended an episode: nothing is bootstrapped through it,
      delta_t = r_t + gamma * V_{t+1} * (1 - done_t) - V_t and A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}.
    last_value: f32[B], V of the observation after the last step (the bootstrap of the rollout's end).
  Returns:
    (advantages f32[T, B], returns f32[T, B]) with returns = advantages + values (the value targets).

  A time-limit truncation is treated as a termination: the envs reset automatically inside `step`, so the
  observation the episode was cut at is gone by the time V_{t+1} would be needed; bootstrapping from the
  reset observation instead would mix two episodes' values. The bias is a slight undervaluation of states
  near the horizon.
  """
  not_done = 1.0 - dones.astype(jnp.float32)
  next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
  deltas = rewards + gamma * next_values * not_done - values

  def step(adv_next, x):
    delta, nd = x
    adv = delta + gamma * lam * nd * adv_next
    return adv, adv

  _, adv = jax.lax.scan(step, jnp.zeros_like(last_value), (deltas, not_done), reverse=True)
  return adv, adv + values


# --- Loss and update ---------------------------------------------------------------------------------------


def normalize_advantages(adv: jax.Array) -> jax.Array:
  """Zero mean, unit std over the minibatch: f32[M] -> f32[M]."""
  return (adv - adv.mean()) / (adv.std() + 1e-8)


def micro_batches(size: int, most: int) -> int:
  """How many equal micro-batches a minibatch of `size` samples splits into so that none holds more than
  `most` (0: one): the fewest such parts, i.e. the smallest divisor k of size with size / k <= most."""
  if most <= 0 or size <= most:
    return 1
  return next(k for k in range(-(-size // most), size + 1) if size % k == 0)


def ppo_loss(apply_fn: ApplyFn, params: Any, batch: Batch, cfg: PPOConfig,
             critic_only: bool = False) -> tuple[jax.Array, dict]:
  """The PPO loss on one minibatch.

  Args:
    batch: a minibatch of M samples.
    critic_only: the loss is vf_coef * value loss alone (critic warm-up before policy updates); the policy's
      parameters then get exactly zero gradient.
  Returns:
    (loss f32[], metrics {loss, policy_loss, value_loss, entropy, approx_kl, clip_frac} of f32[]).
  """
  mean, log_std, value = apply_fn(params, batch.obs)
  log_prob = gaussian_log_prob(mean, log_std, batch.action)
  log_ratio = log_prob - batch.log_prob
  ratio = jnp.exp(log_ratio)

  adv = batch.advantage
  if cfg.normalize_advantages:
    # Per minibatch, so each gradient step sees unit-scale advantages whatever the reward scale.
    adv = normalize_advantages(adv)
  surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps) * adv)
  policy_loss = -surrogate.mean()

  ret = batch.returns
  value_err = jnp.square(value - ret)
  if cfg.clip_value:
    # The value may move at most clip_eps from the collecting critic's estimate before the loss stops
    # rewarding the move (the pessimistic max mirrors the policy's clipped surrogate).
    old = batch.value
    clipped = old + jnp.clip(value - old, -cfg.clip_eps, cfg.clip_eps)
    value_err = jnp.maximum(value_err, jnp.square(clipped - ret))
  value_loss = 0.5 * value_err.mean()

  entropy = gaussian_entropy(log_std).mean()
  if critic_only:
    loss = cfg.vf_coef * value_loss
  else:
    loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy

  metrics = {
      "loss": loss,
      "policy_loss": policy_loss,
      "value_loss": value_loss,
      "entropy": entropy,
      # The low-variance KL(old || new) estimator (r - 1) - log r: non-negative, 0 when nothing changed.
      "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
      "clip_frac": jnp.mean((jnp.abs(ratio - 1.0) > cfg.clip_eps).astype(jnp.float32)),
  }
  return loss, jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), metrics)


def actor_critic_labels(params: Any) -> Any:
  """The pytree of `params` with each leaf replaced by "actor" or "critic": the first name on its path that
  starts with either. Raises ValueError naming a leaf that belongs to neither."""

  def label(path, _):
    for k in path:
      name = str(getattr(k, "key", ""))
      for part in ("actor", "critic"):
        if name.startswith(part):
          return part
    raise ValueError(f"parameter {jax.tree_util.keystr(path)} belongs to neither the actor nor the critic "
                     "(names must start with 'actor' or 'critic' for ppo.actor_lr / ppo.critic_lr)")

  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(cfg: PPOConfig) -> optax.GradientTransformation:
  """Global-norm clipping, then Adam with eps 1e-5 (the PPO implementations' value, steadier than 1e-8); with
  cfg.actor_lr or cfg.critic_lr set, one Adam per part at its own rate (the clipping stays global)."""
  clip = optax.clip_by_global_norm(cfg.max_grad_norm)
  if not (cfg.actor_lr or cfg.critic_lr):
    return optax.chain(clip, optax.adam(cfg.lr, eps=1e-5))
  rates = {"actor": cfg.actor_lr or cfg.lr, "critic": cfg.critic_lr or cfg.lr}
  return optax.chain(clip, optax.multi_transform({k: optax.adam(r, eps=1e-5) for k, r in rates.items()},
                                                 actor_critic_labels))


def ppo_update(apply_fn: ApplyFn, optimizer: optax.GradientTransformation, params: Any, opt_state: Any,
               batch: Batch, key: jax.Array, cfg: PPOConfig,
               critic_only: bool = False) -> tuple[Any, Any, dict]:
  """cfg.epochs passes over `batch` in cfg.minibatches shuffled minibatches, all in one lax.scan (jittable).

  Args:
    batch: N samples (a [T, B] rollout flattened to T*B).
    key: a fresh permutation of the N samples is drawn from it per epoch.
    critic_only: see ppo_loss. Adam moves a parameter whose gradient is zero only through moments it already
      has, so warm up the critic with an optimizer state that has not seen policy updates (e.g. a fresh one).
  Returns:
    (params, opt_state, metrics): metrics are ppo_loss's, each the mean over all epochs x minibatches
    updates (each measured before its own update).
  Raises:
    ValueError (at trace time): if N is not divisible by cfg.minibatches.
  """
  n = jax.tree_util.tree_leaves(batch)[0].shape[0]
  if n % cfg.minibatches:
    raise ValueError(f"the batch of {n} samples does not split into {cfg.minibatches} equal minibatches")
  size = n // cfg.minibatches
  parts = micro_batches(size, cfg.microbatch)
  # With micro-batches the advantages are normalized once over the whole minibatch, before the split.
  part_cfg = dataclasses.replace(cfg, normalize_advantages=False) if parts > 1 else cfg
  grad_fn = jax.grad(lambda p, b: ppo_loss(apply_fn, p, b, part_cfg, critic_only), has_aux=True)

  def minibatch_grad(params, mb):
    if parts == 1:
      return grad_fn(params, mb)
    if cfg.normalize_advantages:
      mb = mb.replace(advantage=normalize_advantages(mb.advantage))
    pieces = jax.tree_util.tree_map(lambda x: x.reshape((parts, size // parts) + x.shape[1:]), mb)

    def add(total, piece):
      g, m = grad_fn(params, piece)
      return jax.tree_util.tree_map(jnp.add, total, g), m

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    total, ms = jax.lax.scan(add, zeros, pieces)
    # Every loss term and metric is a mean over samples, and the pieces are equal: means of the pieces' means.
    return (jax.tree_util.tree_map(lambda g: g / parts, total), jax.tree_util.tree_map(jnp.mean, ms))

  def minibatch_step(carry, mb):
    params, opt_state = carry
    grads, metrics = minibatch_grad(params, mb)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), metrics

  def epoch(carry, epoch_key):
    perm = jax.random.permutation(epoch_key, n)
    shuffled = jax.tree_util.tree_map(
        lambda x: jnp.take(x, perm, axis=0).reshape((cfg.minibatches, size) + x.shape[1:]), batch)
    return jax.lax.scan(minibatch_step, carry, shuffled)

  (params, opt_state), metrics = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, cfg.epochs))
  return params, opt_state, jax.tree_util.tree_map(jnp.mean, metrics)


# --- Reward scaling ----------------------------------------------------------------------------------------


@flax.struct.dataclass
class RewardScaler:
  """Running statistics for reward scaling: rewards are divided by the std of the discounted return.

  ret: f32[B], the running discounted return of each env's current episode.
  count, mean, var: f32[], statistics of every `ret` value seen so far (Chan et al.'s parallel merge).
  """
  ret: jax.Array
  count: jax.Array
  mean: jax.Array
  var: jax.Array


def reward_scaler_init(batch: int) -> RewardScaler:
  """A scaler for `batch` envs; no statistics yet (count 0: the first update sets them exactly)."""
  zero = jnp.zeros((), jnp.float32)
  return RewardScaler(ret=jnp.zeros((batch,), jnp.float32), count=zero, mean=zero, var=jnp.ones((), jnp.float32))


def reward_scaler_update(s: RewardScaler, rewards: jax.Array, dones: jax.Array, gamma: float,
                         min_std: float = 1e-2) -> tuple[RewardScaler, jax.Array]:
  """Fold a rollout into the statistics and scale its rewards.

  Args:
    rewards: f32[T, B]; dones: bool[T, B] (True when step t ended an episode: the running return restarts).
    min_std: a floor on the divisor, so a batch of near-constant returns (the very first steps) does not
      blow rewards up by 1 / ~0.
  Returns:
    (the new scaler, rewards / max(std, min_std) f32[T, B]) with std from the statistics including this rollout.

  Only the scale changes, not the mean (subtracting a mean from rewards would change which policy is optimal
  when episodes have different lengths).
  """
  def step(ret, x):
    r, d = x
    ret = ret * gamma + r
    return jnp.where(d, 0.0, ret), ret

  ret, rets = jax.lax.scan(step, s.ret, (rewards.astype(jnp.float32), dones))
  b_count = jnp.asarray(rets.size, jnp.float32)
  b_mean = rets.mean()
  b_var = rets.var()
  total = s.count + b_count
  delta = b_mean - s.mean
  mean = s.mean + delta * b_count / total
  m2 = s.var * s.count + b_var * b_count + jnp.square(delta) * s.count * b_count / total
  var = m2 / total
  scaled = rewards / jnp.maximum(jnp.sqrt(var), min_std)
  return RewardScaler(ret=ret, count=total, mean=mean, var=var), scaled
