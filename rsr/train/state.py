"""The train state of every trainer with one optimizer and nothing else to carry (tokenizer, behaviour
cloning, reward head). The dynamics model's state adds its RNG (rsr/world_model/dynamics_train.py) and
PPO's the environments and reward scaler (rsr/train/fused.py), with the same three fields first."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
  step: jax.Array  # i32[] updates done
  params: Any
  opt_state: Any

  @classmethod
  def create(cls, params: Any, optimizer: optax.GradientTransformation) -> "TrainState":
    """Step 0: `params` and the optimizer's initial state for them."""
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))
