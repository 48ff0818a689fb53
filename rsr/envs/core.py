"""The Env protocol: one functional, jittable interface for the simulator and the world model.

    state = env.reset(key, scene)     # scene: a pytree of scene parameters (or a world model's context)
    state = env.step(state, action)   # pure; vmap over a batch, lax.scan over time
    states = env.batch_step(states, actions)   # a batch (default: vmap; an env may batch natively)

PPO, evaluation and data collection only ever see this interface, so the world model is a drop-in
replacement for the simulator (the paper's thesis, made literal).
"""

from __future__ import annotations

import abc
from typing import Any

import jax
from flax import struct


@struct.dataclass
class State:
  """One environment's state (a batch adds a leading axis to every leaf).

  obs: {"rgb": uint8[H, W, 3] (front camera), "rgb_wrist": uint8[H, W, 3] (if enabled),
        "task": int32[], "state": f32[D] (privileged, for experts and analysis)}
  reward: f32[]
  done: bool[]  (success when the env terminates on success, or truncation)
  info: {"success": bool[], "truncated": bool[], "step": int32[], ...}
  inner: the environment's own pytree (physics data, scene, ...); not for agents.
  """

  obs: dict[str, jax.Array]
  reward: jax.Array
  done: jax.Array
  info: dict[str, Any]
  inner: Any


@struct.dataclass
class ActionSpec:
  shape: tuple[int, ...] = struct.field(pytree_node=False)
  low: float = struct.field(pytree_node=False, default=-1.0)
  high: float = struct.field(pytree_node=False, default=1.0)


class Env(abc.ABC):
  """A functional environment. Implementations hold only static configuration."""

  @abc.abstractmethod
  def reset(self, key: jax.Array, scene: Any) -> State:
    """Starts an episode in `scene` with randomness from `key`."""

  @abc.abstractmethod
  def step(self, state: State, action: jax.Array) -> State:
    """Advances one control step. Pure: returns a new State."""

  @abc.abstractmethod
  def observation_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of `State.obs` for one environment."""

  @abc.abstractmethod
  def action_spec(self) -> ActionSpec:
    """Shape and bounds of one environment's action."""

  def batch_reset(self, keys: jax.Array, scenes: Any) -> State:
    """reset for a batch: keys [B, ...], scenes with a leading axis B -> a State with leading axis B.

    The default vmaps `reset`. An env whose natural form is a batch overrides it (the world model: one
    batched network call is about 3x faster on CPU than a vmapped batch-of-one call); `reset` must then
    stay equal to this on a batch of one."""
    return jax.vmap(self.reset)(keys, scenes)

  def batch_step(self, states: State, actions: jax.Array) -> State:
    """step for a batch (leading axis B on every leaf of states and on actions); see batch_reset."""
    return jax.vmap(self.step)(states, actions)

  def check_action(self, action: jax.Array, batch_dims: int = 0) -> None:
    """Raises a ValueError naming the bad shape (at trace time, before anything compiles)."""
    want = self.action_spec().shape
    if tuple(action.shape[batch_dims:]) != tuple(want):
      raise ValueError(f"action has shape {tuple(action.shape)}; expected {tuple(want)} per "
                       f"environment (with {batch_dims} leading batch dims)")
