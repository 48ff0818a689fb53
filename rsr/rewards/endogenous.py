"""The reward the policy sees inside the world model, and its configuration.

The paper's endogenous reward needs no hand-written reward at all: the world model's imagined frame is
compared with the goal frame (WM_goal's, or a real success frame), and its done head grants a bonus:

    r_t = w_align * (1 - d(frame_t, goal)) + w_done * 1[done_prob_t >= tau]      (paper: 1, 10, 0.9)

with d a perceptual distance in [0, 1] (`distance.py`). `align="change"` pays the alignment's change instead
of its level, w_align * (d(frame_{t-1}, goal) - d(frame_t, goal)): a potential-based shaping term (Ng, Harada
& Russell 1999, with discount 1) whose sum over an episode is d_0 - d_T whatever its length, so that
lingering short of "done" earns nothing, where the level pays up to w_align at every step it lasts.

`success_fill` keeps the level and removes what makes it pay lingering: success ends the episode, so every
step the policy spends short of "done" earns up to w_align more than finishing does. With the switch the
success step also pays w_align for each step left to the horizon, as if the goal state were absorbing and
aligned (d = 0) until then; finishing then never earns less than lingering. The env adds it (it knows the
step and the horizon): `fill(...)`.

Two other kinds exist for comparison: "learned" (a reward head trained on the dataset's handcrafted rewards,
`learned.py`: the exogenous baseline) and "handcrafted" (the simulator's own reward: only meaningful when
acting in the simulator).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os

import jax
import jax.numpy as jnp

KINDS = ("endogenous", "learned", "handcrafted")
DISTANCES = ("features", "pixels", "tokens", "lpips")
ALIGNS = ("level", "change")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  kind: str = "endogenous"  # one of KINDS
  distance: str = "features"  # of the endogenous reward: tokenizer encoder (default), pixels, tokens, lpips
  lpips_weights: str = ""  # the npz of distance.LPIPS; required when distance == "lpips"
  align: str = "level"  # one of ALIGNS: the paper pays the level 1 - d; "change" pays d_{t-1} - d_t
  success_fill: bool = False  # level only: success also pays w_align for every step left (see the docstring)
  w_align: float = 1.0  # the paper's defaults: 1, 10, 0.9
  w_done: float = 10.0
  tau: float = 0.9

  def validate(self) -> "RewardConfig":
    if self.kind not in KINDS:
      raise ValueError(f"reward kind must be one of {KINDS}, got {self.kind!r}")
    if self.distance not in DISTANCES:
      raise ValueError(f"reward distance must be one of {DISTANCES}, got {self.distance!r}")
    if self.align not in ALIGNS:
      raise ValueError(f"reward align must be one of {ALIGNS}, got {self.align!r}")
    if self.success_fill and self.align != "level":
      raise ValueError("reward success_fill pays the level an absorbing goal would earn; align 'change' pays "
                       "nothing there (set align to 'level' or success_fill to False)")
    # Only the endogenous reward reads a distance: another kind need not ship LPIPS weights.
    if self.kind == "endogenous" and self.distance == "lpips":
      if not self.lpips_weights:
        raise ValueError("reward lpips_weights must name the LPIPS npz when distance is 'lpips' "
                         "(see rsr/rewards/distance.py for converting the official weights)")
      if not os.path.isfile(self.lpips_weights):
        raise ValueError(f"reward lpips_weights: no file {self.lpips_weights}")
    for name in ("w_align", "w_done"):
      v = getattr(self, name)
      if not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
        raise ValueError(f"reward {name} must be a finite number >= 0, got {v!r}")
    if not isinstance(self.tau, numbers.Real) or not 0.0 <= self.tau <= 1.0:
      raise ValueError(f"reward tau must be a probability in [0, 1], got {self.tau!r}")
    return self


def endogenous_reward(distance: jax.Array, done_prob: jax.Array, cfg: RewardConfig,
                      prev_distance: jax.Array | None = None) -> jax.Array:
  """distance f32[B] in [0, 1] (frame to goal), done_prob f32[B] -> reward f32[B] (jittable; cfg is static).
  prev_distance f32[B]: the previous frame's distance, needed by align "change"."""
  distance = jnp.asarray(distance, jnp.float32)
  if cfg.align == "change":
    if prev_distance is None:
      raise ValueError("reward align 'change' needs the previous frame's distance")
    align = cfg.w_align * (jnp.asarray(prev_distance, jnp.float32) - distance)
  else:
    align = cfg.w_align * (1.0 - distance)
  # tau is compared in f32: done_prob == f32(0.9) earns the bonus, as the reference's ">= 0.9" does.
  done = jnp.asarray(done_prob, jnp.float32) >= jnp.float32(cfg.tau)
  return align + cfg.w_done * done.astype(jnp.float32)


def fill(success: jax.Array, steps_left: jax.Array, cfg: RewardConfig) -> jax.Array:
  """success bool[B], steps_left i32[B] (to the horizon, after this step) -> f32[B]: what `success_fill`
  adds to the reward (zeros when it is off)."""
  if not cfg.success_fill:
    return jnp.zeros(jnp.shape(success), jnp.float32)
  return cfg.w_align * jnp.where(success, jnp.maximum(steps_left, 0), 0).astype(jnp.float32)
