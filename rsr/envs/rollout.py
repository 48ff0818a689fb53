"""Jitted, vmapped episodes in any Env: the one rollout that evaluation, data collection and demos share.

A policy is a pair of pure functions over one environment:
    carry = policy.init()                                   # per-episode policy state (a pytree)
    carry, action = policy.act(carry, state, key)           # action f32[action_dim]
Episodes run for `horizon` steps under one `lax.scan`; an environment that is done stays frozen in its
final state (no auto-reset), so per-episode success and length are read off directly.
`init` may take per-episode arguments (`rollout(..., init_args=...)`, a pytree with a leading batch axis),
so one compiled rollout serves a batch that mixes, for example, several noise levels.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from rsr.envs import core
from rsr.envs.tabletop.env import TabletopEnv


@dataclasses.dataclass(frozen=True)
class Policy:
  init: Callable[..., Any]  # init() or init(args) -> carry
  act: Callable[[Any, core.State, jax.Array], tuple[Any, jax.Array]]


def expert_policy(env: TabletopEnv, noise: float = 0.0) -> Policy:
  """The task's scripted expert on privileged state, with Gaussian action noise of std `noise`."""

  def act(carry, state, key):
    carry, action = env.task.expert_act(carry, env.view(state.inner))
    action = action + noise * jax.random.normal(key, action.shape)
    return carry, jnp.clip(action, -1.0, 1.0)

  return Policy(init=env.task.expert_init, act=act)


@struct.dataclass
class Episodes:
  """Results of a batch of N episodes."""

  success: jax.Array  # bool[N] succeeded at some step
  length: jax.Array  # i32[N] steps until done (the horizon if never done)
  ret: jax.Array  # f32[N] undiscounted return
  frames: Any = None  # {"rgb": uint8[T + 1, N, H, W, 3], ...} when recorded
  trajectory: Any = None  # Trajectory when recorded


@struct.dataclass
class Trajectory:
  """Everything an episode saw and did, time-major (T = horizon). Frozen after done."""

  obs: dict[str, jax.Array]  # every obs key, [T + 1, N, ...]
  action: jax.Array  # f32[T, N, A] the action taken at obs t
  reward: jax.Array  # f32[T, N] the reward that action earned
  success: jax.Array  # bool[T + 1, N] the env's success signal at obs t


def rollout(env: core.Env, policy: Policy, key: jax.Array, scenes: Any, horizon: int,
            record: bool = False, trajectory: bool = False, init_args: Any = None) -> Episodes:
  """Runs len(scenes) episodes (one per scene) in parallel. Jit it with env/policy/horizon static.

  record: keep the rgb frames (`Episodes.frames`); trajectory: keep obs, actions, rewards and success
  (`Episodes.trajectory`); init_args: per-episode arguments of `policy.init` (leading axis N).
  """
  n = jax.tree_util.tree_leaves(scenes)[0].shape[0]
  k_reset, k_act = jax.random.split(key)
  state = jax.vmap(env.reset)(jax.random.split(k_reset, n), scenes)
  return rollout_from(env, policy, state, k_act, horizon, record, trajectory, init_args)


def rollout_from(env: core.Env, policy: Policy, state: core.State, key: jax.Array, horizon: int,
                 record: bool = False, trajectory: bool = False, init_args: Any = None) -> Episodes:
  """`rollout` from given states (a batch with leading axis N) instead of fresh resets."""
  n = state.done.shape[0]
  k_act = key
  if init_args is None:
    carry = jax.vmap(lambda _: policy.init())(jnp.arange(n))
  else:
    carry = jax.vmap(policy.init)(init_args)
  first = {k: v[None] for k, v in state.obs.items() if k.startswith("rgb")} if record else None
  first_obs = (jax.tree_util.tree_map(lambda v: v[None], state.obs), state.info["success"][None])

  def body(c, key_t):
    state, carry, done, success, length, ret = c
    keys = jax.random.split(key_t, n)
    new_carry, action = jax.vmap(policy.act)(carry, state, keys)
    new_state = jax.vmap(env.step)(state, action)
    keep = lambda new, old: jnp.where(done.reshape(done.shape + (1,) * (new.ndim - 1)), old, new)
    state = jax.tree_util.tree_map(keep, new_state, state)
    carry = jax.tree_util.tree_map(keep, new_carry, carry)
    live = ~done
    success = success | (live & state.info["success"])
    ret = ret + jnp.where(live, state.reward, 0.0)
    length = length + live.astype(jnp.int32)
    done = done | state.done
    out = {}
    if record:
      out["frames"] = {k: v for k, v in state.obs.items() if k.startswith("rgb")}
    if trajectory:
      # A frozen env repeats its last obs; its action and reward are recorded as zeros.
      out["step"] = (state.obs, jnp.where(live[:, None], action, 0.0), jnp.where(live, state.reward, 0.0),
                     state.info["success"])
    return (state, carry, done, success, length, ret), out

  init = (state, carry, jnp.zeros(n, bool), state.info["success"], jnp.zeros(n, jnp.int32), jnp.zeros(n))
  (state, _, _, success, length, ret), out = jax.lax.scan(
      body, init, jax.random.split(k_act, horizon))
  frames = traj = None
  if record:
    frames = {k: jnp.concatenate([first[k], out["frames"][k]]) for k in out["frames"]}
  if trajectory:
    obs, action, reward, succ = out["step"]
    traj = Trajectory(obs=jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), first_obs[0], obs),
                      action=action, reward=reward, success=jnp.concatenate([first_obs[1], succ]))
  return Episodes(success=success, length=length, ret=ret, frames=frames, trajectory=traj)


def stream_key(seed: int, *names: str) -> jax.Array:
  """A PRNG key for a named stream (task, split, ...): streams never share randomness, whatever order
  they run in."""
  key = jax.random.PRNGKey(seed)
  for n in names:
    key = jax.random.fold_in(key, zlib.crc32(n.encode()) & 0x7FFFFFFF)
  return key
