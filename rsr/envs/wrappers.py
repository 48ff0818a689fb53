"""Wrappers over the Env protocol: vectorisation, episode statistics, auto-reset.

Order of composition: `AutoReset(Vmap(EpisodeStats(env)))`. EpisodeStats works on one environment;
Vmap turns any env into a batched one; AutoReset works on a batched env, where it can skip the reset
computation entirely (`lax.cond`) on the many steps where no environment finished.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rsr.envs import core


class Wrapper(core.Env):
  def __init__(self, env: core.Env):
    self.env = env

  def observation_spec(self):
    return self.env.observation_spec()

  def action_spec(self):
    return self.env.action_spec()

  def __getattr__(self, name):
    # Reached only for attributes the wrapper lacks: expose the wrapped env's (task, horizon, ...).
    if name == "env":  # not set yet (e.g. while copying): no recursion
      raise AttributeError(name)
    return getattr(self.env, name)


def unwrap(env: core.Env) -> core.Env:
  """The env under every wrapper (e.g. the single WorldModelEnv under the batch wrappers)."""
  while isinstance(env, Wrapper):
    env = env.env
  return env


class EpisodeStats(Wrapper):
  """Tracks the running episode's return and length, and the last finished episode's.

  info gains: episode_return, episode_length (running), last_return, last_length, last_success
  (of the most recently finished episode; zero before the first one ends). Its arithmetic is elementwise,
  so one environment and a batch share it (batch_reset / batch_step keep the wrapped env's own batching).
  """

  def reset(self, key, scene):
    return self._start(self.env.reset(key, scene))

  def batch_reset(self, keys, scenes):
    return self._start(self.env.batch_reset(keys, scenes))

  def step(self, state, action):
    return self._track(state, self.env.step(state, action))

  def batch_step(self, states, actions):
    return self._track(states, self.env.batch_step(states, actions))

  @staticmethod
  def _start(s):
    zero_f, zero_i = jnp.zeros_like(s.reward), jnp.zeros(s.reward.shape, jnp.int32)
    info = dict(s.info, episode_return=zero_f, episode_length=zero_i, last_return=zero_f,
                last_length=zero_i, last_success=jnp.zeros(s.reward.shape, bool))
    return s.replace(info=info)

  @staticmethod
  def _track(state, s):
    ret = state.info["episode_return"] + s.reward
    length = state.info["episode_length"] + 1
    info = dict(s.info, episode_return=ret, episode_length=length,
                last_return=jnp.where(s.done, ret, state.info["last_return"]),
                last_length=jnp.where(s.done, length, state.info["last_length"]),
                last_success=jnp.where(s.done, s.info["success"], state.info["last_success"]))
    return s.replace(info=info)


class Vmap(Wrapper):
  """A batch of environments: reset(keys[B], scenes[B]) and step(states[B], actions[B, ...]), through the
  wrapped env's batch_reset / batch_step (a vmap unless the env batches natively)."""

  def reset(self, keys, scenes):
    return self.env.batch_reset(keys, scenes)

  def step(self, states, actions):
    self.env.check_action(actions, batch_dims=1)
    return self.env.batch_step(states, actions)


_CARRIED = ("episode_return", "episode_length")  # running stats that restart with the episode


class AutoReset(Wrapper):
  """Resets each finished environment of a batched env with a fresh key and the same scene.

  After a step where an environment is done, its State holds the NEW episode's first observation, while
  reward, done and info["success"] still describe the step that ended the old one (gymnax convention).
  The last-episode statistics of EpisodeStats survive the reset.

  reuse_first: instead of computing a reset, restore the environment's first state (kept from `reset`),
  as Brax's auto-reset does: every episode of one environment starts where its first did. For an env
  whose reset is as costly as many steps (the world model observes its context frames and decodes the
  goal) this removes the reset from the loop; diversity then comes from the batch (each environment drew
  its own start).
  """

  def __init__(self, env: core.Env, reuse_first: bool = False):
    super().__init__(env)
    self.reuse_first = reuse_first

  def reset(self, keys, scenes):
    s = self.env.reset(keys, scenes)
    k_next = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    info = dict(s.info, reset_key=k_next, scene=scenes)
    if self.reuse_first:
      info["first"] = (s.obs, s.inner, {k: v for k, v in s.info.items() if not k.startswith("last_")})
    return s.replace(info=info)

  def step(self, states, actions):
    s = self.env.step(states, actions)
    keys, scenes = states.info["reset_key"], states.info["scene"]

    def do_reset(s):
      if self.reuse_first:
        obs, inner, info = states.info["first"]
        fresh = core.State(obs=obs, reward=s.reward, done=s.done, info=info, inner=inner)
      else:
        fresh = self.env.reset(jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys), scenes)
      done = s.done

      def pick(new, old):
        return jnp.where(done.reshape(done.shape + (1,) * (new.ndim - 1)), new, old)

      obs = jax.tree_util.tree_map(pick, fresh.obs, s.obs)
      inner = jax.tree_util.tree_map(pick, fresh.inner, s.inner)
      info = dict(s.info)
      for k in set(fresh.info) - {"success", "truncated"} - set(_last_keys(s.info)):
        info[k] = pick(fresh.info[k], s.info[k])
      for k in _CARRIED:
        if k in info:
          info[k] = jnp.where(done, jnp.zeros_like(info[k]), info[k])
      return s.replace(obs=obs, inner=inner, info=info)

    s = jax.lax.cond(jnp.any(s.done), do_reset, lambda s: s, s)
    next_keys = jax.vmap(lambda k, d: jnp.where(d, jax.random.fold_in(k, 1), k))(keys, s.done)
    info = dict(s.info, reset_key=next_keys, scene=scenes)
    if self.reuse_first:
      info["first"] = states.info["first"]
    return s.replace(info=info)


def _last_keys(info: dict[str, Any]) -> list[str]:
  return [k for k in info if k.startswith("last_")]
