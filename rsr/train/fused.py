"""The fused PPO step: imagine -> reward -> advantages -> updates as ONE compiled, vectorized function.

    step = make_fused_step(make_env, agent, FusedConfig(...))
    state, metrics = step(state, env_params)                 # `updates_per_call` PPO updates

Inside one call (an outer `lax.scan` over updates):
  1. `lax.scan` over `rollout_len` steps of: policy (mean, log std, value) -> sampled action (the env gets
     it clipped to [-1, 1]) -> env.step (an auto-resetting batch of `num_envs` environments);
  2. bootstrap value, optional reward scaling (running std of the discounted return), GAE;
  3. `lax.scan` over epochs x minibatches of PPO updates (rsr.agents.ppo.ppo_update).
The env is built inside the trace by `make_env(env_params)`, so the world model's parameters are an input
of the compiled step (not constants baked into it) and the same code trains in the simulator
(`env_params=None`). The train state is a flax.struct dataclass and is donated.

Devices: with a mesh (rsr.train.sharding), the environment batch, and everything batched along it, is
sharded on the `data` axis and parameters are replicated; XLA's SPMD partitioner inserts the collectives
(the gradient all-reduce, the minibatch gathers), so the same global batch gives the same result on one
device or eight.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rsr.agents import ppo
from rsr.envs import core
from rsr.train import sharding


@dataclasses.dataclass(frozen=True)
class FusedConfig:
  num_envs: int = 256
  rollout_len: int = 16  # steps per environment per update
  updates_per_call: int = 1  # PPO updates per compiled call (an outer scan)
  reward_scaling: bool = True
  use_goal: bool = False  # the policy sees the goal image (world-model env only)
  ppo: ppo.PPOConfig = ppo.PPOConfig()

  def validate(self) -> "FusedConfig":
    if self.ppo.microbatch < 0:
      raise ValueError(f"ppo.microbatch must be >= 0 (0: the whole minibatch), got {self.ppo.microbatch}")
    n = self.num_envs * self.rollout_len
    if n % self.ppo.minibatches:
      raise ValueError(f"num_envs x rollout_len = {n} transitions do not split into {self.ppo.minibatches} "
                       "minibatches")
    return self


@struct.dataclass
class PolicyState:
  step: jax.Array  # i32[] compiled calls done (each `updates_per_call` PPO updates)
  params: Any
  opt_state: Any
  env_state: core.State  # a batch of num_envs (auto-resetting)
  scaler: ppo.RewardScaler
  rng: jax.Array


@struct.dataclass
class Transition:
  """One step of every environment, as the rollout scan stacks it to [T, B, ...]."""

  obs: Any  # what the policy saw (policy_obs)
  action: jax.Array  # f32[B, A] raw sample; the env got it clipped to [-1, 1]
  log_prob: jax.Array  # f32[B]
  value: jax.Array  # f32[B]
  reward: jax.Array  # f32[B]
  done: jax.Array  # bool[B] the episode ended here (the env auto-reset after it)
  success: jax.Array  # bool[B] ended here with success
  episode_return: jax.Array  # f32[B] the finished episode's return where done, else 0
  episode_length: jax.Array  # i32[B] the same for its length


def policy_obs(obs: dict, use_goal: bool) -> dict:
  """What the agent sees of an env observation (the simulator's privileged state never)."""
  out = {"rgb": obs["rgb"], "task": obs["task"]}
  if use_goal:
    if "goal" not in obs:
      raise ValueError("use_goal is set but the environment has no goal image (only the world model has)")
    out["goal"] = obs["goal"]
  return out


def init_state(env: core.Env, params: Any, optimizer: optax.GradientTransformation, key: jax.Array,
               scenes: Any, num_envs: int) -> PolicyState:
  """env: the batched, auto-resetting env; scenes: a pytree with leading axis num_envs."""
  k_reset, k_rng = jax.random.split(key)
  env_state = env.reset(jax.random.split(k_reset, num_envs), scenes)
  return PolicyState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                     env_state=env_state, scaler=ppo.reward_scaler_init(num_envs), rng=k_rng)


def place(state: PolicyState, mesh, num_envs: int) -> PolicyState:
  """Puts a PolicyState on a mesh: the environments' state (and per-env reward statistics) sharded on
  `data`, everything else replicated."""

  return sharding.replicate(state, mesh).replace(env_state=sharding.put(state.env_state, mesh, num_envs),
                                                 scaler=sharding.put(state.scaler, mesh, num_envs))


def make_fused_step(make_env: Callable[[Any], core.Env], apply_fn: Callable, optimizer: optax.GradientTransformation,
                    cfg: FusedConfig, constrain: Callable[[Any], Any] = lambda x: x) -> Callable:
  """Returns the jitted `step(state, env_params, critic_only=False) -> (state, metrics)`.

  make_env(env_params) -> a batched auto-resetting env (rsr.envs.wrappers.AutoReset(Vmap(EpisodeStats(.))));
  apply_fn(params, obs) -> (mean f32[B, A], log_std f32[B, A], value f32[B]);
  constrain: a sharding constraint for arrays with the env batch leading (rsr.train.sharding), or identity.
  critic_only (static): the critic warm-up, whose updates leave the policy untouched.
  """
  cfg = cfg.validate()
  pc = cfg.ppo

  def one_update(state: PolicyState, env_params, critic_only: bool):
    env = make_env(env_params)

    def act(carry, _):
      env_state, rng = carry
      rng, k = jax.random.split(rng)
      obs = policy_obs(env_state.obs, cfg.use_goal)
      mean, log_std, value = apply_fn(state.params, obs)
      raw, log_prob = ppo.sample_action(k, mean, log_std)
      nxt = env.step(env_state, jnp.clip(raw, -1.0, 1.0))
      nxt = jax.tree_util.tree_map(constrain, nxt)
      info = nxt.info
      tr = Transition(obs=obs, action=raw, log_prob=log_prob, value=value, reward=nxt.reward, done=nxt.done,
                      success=info["success"] & nxt.done,
                      episode_return=jnp.where(nxt.done, info["last_return"], 0.0),
                      episode_length=jnp.where(nxt.done, info["last_length"], 0))
      return (nxt, rng), tr

    rng, k_roll, k_upd = jax.random.split(state.rng, 3)
    (env_state, _), tr = jax.lax.scan(act, (state.env_state, k_roll), None, length=cfg.rollout_len)
    _, _, last_value = apply_fn(state.params, policy_obs(env_state.obs, cfg.use_goal))
    scaler, rewards = state.scaler, tr.reward
    if cfg.reward_scaling:
      scaler, rewards = ppo.reward_scaler_update(state.scaler, tr.reward, tr.done, pc.gamma)
    adv, ret = ppo.gae(rewards, tr.value, tr.done, last_value, pc.gamma, pc.lam)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731  [T, B, ...] -> [T * B, ...]
    batch = jax.tree_util.tree_map(flat, ppo.Batch(obs=tr.obs, action=tr.action, log_prob=tr.log_prob,
                                                   value=tr.value, advantage=adv, returns=ret))
    params, opt_state, m = ppo.ppo_update(apply_fn, optimizer, state.params, state.opt_state, batch, k_upd, pc,
                                          critic_only=critic_only)
    episodes = jnp.sum(tr.done)
    m = dict(m)
    m.update({
        "reward": jnp.mean(tr.reward),
        "episodes": episodes,
        "episode_return": jnp.sum(tr.episode_return) / jnp.maximum(episodes, 1),
        "episode_length": jnp.sum(tr.episode_length) / jnp.maximum(episodes, 1),
        "success": jnp.sum(tr.success) / jnp.maximum(episodes, 1),
        "value": jnp.mean(tr.value),
        "advantage_std": jnp.std(adv),
    })
    new = state.replace(params=params, opt_state=opt_state, env_state=env_state,
                        scaler=scaler, rng=rng)
    return new, m

  def step(state: PolicyState, env_params, critic_only: bool = False):
    def body(s, _):
      return one_update(s, env_params, critic_only)

    state, ms = jax.lax.scan(body, state, None, length=cfg.updates_per_call)
    # Episode statistics weighted by the episodes each update finished; the rest averaged over updates.
    eps = ms["episodes"]
    out = {k: jnp.mean(v) for k, v in ms.items()}
    for k in ("episode_return", "episode_length", "success"):
      out[k] = jnp.sum(ms[k] * eps) / jnp.maximum(jnp.sum(eps), 1)
    out["episodes"] = jnp.sum(eps)
    return state.replace(step=state.step + 1), out

  return jax.jit(step, static_argnames=("critic_only",), donate_argnums=0)
