"""Imagining the next frame: K-step MaskGIT decoding against the dynamics model's cache.

Start from a fully masked frame; at each of K steps predict every masked token, keep the most confident
(or, with order="random", randomly chosen) ones so that a cosine schedule of the frame is fixed after
the step, and mask the rest again; after K steps the frame is complete. A final pass with the complete
frame writes its keys/values into the cache and yields its done logit. The paper uses K = 2.

Action guidance (classifier-free guidance, Ho & Salimans 2022, on the action): each refinement pass also
predicts the frame with its action hidden (the no-action token; the past frames in the cache keep theirs)
and decodes from free + w (conditioned - free), which for w > 1 moves the frame further in the direction
the action pushes it. Raw logits combine like log-probabilities: softmax (per digit, for the digit head)
ignores a constant shift. It needs a model trained with `dynamics_train.action_dropout` > 0; otherwise the
hidden action is one the model saw only on a window's first frame.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rsr.utils import configs
from rsr.world_model import token_head
from rsr.world_model.dynamics import Cache, Dynamics, init_cache


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
  steps: int = 2  # MaskGIT refinement steps per frame (K)
  temperature: float = 1.0  # 0: greedy
  order: str = "confidence"  # or "random"
  # Added to the logit of the previous frame's token at every position (0: off). Most of a frame does not
  # change between steps, and a model that is unsure everywhere otherwise resamples static tokens wrongly;
  # the bias makes "keep the token" the default that evidence of motion must overcome.
  copy_bias: float = 0.0
  action_guidance: float = 1.0  # w above; 1: the conditioned prediction alone (off), 0: the action ignored

  def validate(self) -> "GenerateConfig":
    if self.steps < 1:
      raise ValueError(f"steps must be >= 1, got {self.steps}")
    if self.order not in ("confidence", "random"):
      raise ValueError(f"order must be 'confidence' or 'random', got {self.order!r}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.copy_bias < 0:
      raise ValueError(f"copy_bias must be >= 0, got {self.copy_bias}")
    if self.action_guidance < 0:
      raise ValueError(f"action_guidance must be >= 0, got {self.action_guidance}")
    return self

  @classmethod
  def from_config(cls, g) -> "GenerateConfig":
    """From a world-model config's `generate` section."""
    return configs.typed(cls, g)


def fixed_after(step: int, steps: int, n: int) -> int:
  """Tokens fixed after refinement step `step` (0-based) of `steps`: the cosine schedule, all at the end."""
  return n if step == steps - 1 else int(np.ceil(n * (1.0 - np.cos(np.pi / 2 * (step + 1) / steps))))


class Imagined(NamedTuple):
  cache: Cache  # with the new frame written
  tokens: jax.Array  # i32[B, N]
  done_logit: jax.Array  # f32[B]
  # f32[B] in (0, 1]: the geometric mean over the frame's tokens of the probability each token had when it
  # was fixed; the model's own confidence in the frame (the exploit guard's signal: low where it guesses).
  confidence: jax.Array


def imagine(model: Dynamics, params, cache: Cache, prev_action: jax.Array, task: jax.Array, key: jax.Array,
            config: GenerateConfig = GenerateConfig()) -> Imagined:
  """One imagined frame for every environment.

  prev_action f32[B, A] (the action taken at the last frame), task i32[B], key: one PRNG key for the
  batch (u32[2]) or one per environment (u32[B, 2], so that an environment's frames do not depend on
  which batch it runs in) -> Imagined(cache, tokens i32[B, N], done_logit f32[B], confidence f32[B]).
  """
  cfg = model.cfg
  b, n = prev_action.shape[0], cfg.tokens_per_frame
  per_env = key.ndim == 2
  split = jax.vmap(lambda k: jax.random.split(k, 3)) if per_env else (lambda k: jax.random.split(k, 3))
  has = jnp.ones((b,), bool)
  tokens = jnp.full((b, n), cfg.mask_id, jnp.int32)
  conf = jnp.zeros((b,), jnp.float32)
  for step in range(config.steps):
    keys = split(key)
    key, k_sample, k_order = (keys[:, i] for i in range(3)) if per_env else keys
    _, _, logits = model.apply(params, cache, tokens, prev_action, has, task, write=False,
                               method=Dynamics.observe)
    if config.action_guidance != 1.0:
      _, _, free = model.apply(params, cache, tokens, prev_action, ~has, task, write=False,
                               method=Dynamics.observe)
      logits = free + config.action_guidance * (logits - free)
    if config.copy_bias:
      bias = config.copy_bias * (cache.pos > 0)[:, None].astype(logits.dtype)
      logits = token_head.add_bias(cfg.output, cfg.levels, logits, cache.last, bias)
    masked = tokens == cfg.mask_id
    keep = fixed_after(step, config.steps, n)
    if config.temperature > 0:
      draw = lambda k, lg: token_head.sample(cfg.output, cfg.levels, k, lg, config.temperature)  # noqa: E731
      sample, logp = jax.vmap(draw)(k_sample, logits) if per_env else draw(k_sample, logits)
    else:
      sample, logp = token_head.greedy(cfg.output, cfg.levels, logits)
    if keep == n:  # the last step fixes every token still masked: no ranking needed
      tokens = jnp.where(masked, sample, tokens)
      conf = conf + jnp.sum(jnp.where(masked, logp, 0.0), axis=-1)
      continue
    if config.order == "confidence":
      score = logp
    else:
      score = (jax.vmap(lambda k: jax.random.uniform(k, (n,)))(k_order) if per_env
               else jax.random.uniform(k_order, (b, n)))
    score = jnp.where(masked, score, jnp.inf)  # tokens fixed earlier stay fixed
    thresh = jnp.sort(score, axis=-1)[:, n - keep][:, None]
    fixed = masked & (score >= thresh)
    tokens = jnp.where(fixed, sample, tokens)
    conf = conf + jnp.sum(jnp.where(fixed, logp, 0.0), axis=-1)
  cache, done, _ = model.apply(params, cache, tokens, prev_action, has, task, method=Dynamics.observe)
  return Imagined(cache, tokens, done, jnp.exp(conf / n).astype(jnp.float32))


def goal_rollout(model: Dynamics, params, first_tokens: jax.Array, task: jax.Array, key: jax.Array,
                 max_steps: int, threshold: float = 0.9, config: GenerateConfig = GenerateConfig()
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """WM_goal's goal image: imagine from a first frame, conditioned on the task only, until the done
  probability passes `threshold` (or `max_steps`); the frame where it first passed is the goal.

  first_tokens i32[B, N], task i32[B] -> (goal tokens i32[B, N], reached bool[B], steps i32[B]).
  """

  b = first_tokens.shape[0]
  zeros = jnp.zeros((b, model.cfg.action_dim))
  cache = init_cache(model.cfg, b)
  cache, _, _ = model.apply(params, cache, first_tokens, zeros, jnp.zeros((b,), bool), task,
                            method=Dynamics.observe)

  def body(carry, k):
    cache, goal, reached, steps = carry
    cache, tokens, done, _ = imagine(model, params, cache, zeros, task, k, config)
    now = ~reached
    goal = jnp.where(now[:, None], tokens, goal)  # follows the rollout until done, then stays
    steps = steps + now.astype(jnp.int32)
    reached = reached | (jax.nn.sigmoid(done) >= threshold)
    return (cache, goal, reached, steps), None

  init = (cache, first_tokens, jnp.zeros((b,), bool), jnp.zeros((b,), jnp.int32))
  (_, goal, reached, steps), _ = jax.lax.scan(body, init, jax.random.split(key, max_steps))
  return goal, reached, steps
