"""Jitted, vmapped episodes in any Env: the one rollout that evaluation, data collection and demos share.

A policy is a pair of pure functions over one environment:
    carry = policy.init()                                   # per-episode policy state (a pytree)
    carry, action = policy.act(carry, state, key)           # action f32[action_dim]
Episodes run for `horizon` steps under one `lax.scan`; an environment that is done stays frozen in its
final state (no auto-reset), so per-episode success and length are read off directly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from rsr.envs import core
from rsr.envs.tabletop.env import TabletopEnv


@dataclasses.dataclass(frozen=True)
class Policy:
  init: Callable[[], Any]
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


def rollout(env: core.Env, policy: Policy, key: jax.Array, scenes: Any, horizon: int,
            record: bool = False) -> Episodes:
  """Runs len(scenes) episodes (one per scene) in parallel. Jit it with env/policy/horizon static."""
  n = jax.tree_util.tree_leaves(scenes)[0].shape[0]
  k_reset, k_act = jax.random.split(key)
  state = jax.vmap(env.reset)(jax.random.split(k_reset, n), scenes)
  carry = jax.vmap(lambda _: policy.init())(jnp.arange(n))
  first = {k: v[None] for k, v in state.obs.items() if k.startswith("rgb")} if record else None

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
    frames = {k: v for k, v in state.obs.items() if k.startswith("rgb")} if record else None
    return (state, carry, done, success, length, ret), frames

  init = (state, carry, jnp.zeros(n, bool), state.info["success"], jnp.zeros(n, jnp.int32), jnp.zeros(n))
  (state, _, _, success, length, ret), frames = jax.lax.scan(
      body, init, jax.random.split(k_act, horizon))
  if record:
    frames = {k: jnp.concatenate([first[k], frames[k]]) for k in frames}
  return Episodes(success=success, length=length, ret=ret, frames=frames)
