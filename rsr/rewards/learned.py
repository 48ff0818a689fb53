"""The exogenous-reward baseline: a reward head trained on the dataset's handcrafted rewards.

Inside the world model there is no simulator to ask for a reward; this head predicts it from the imagined
frame's tokens instead. Dataset step t holds the reward the action at frame t earned, a function of the
frame it led to, so the head learns reward[t] from the tokens of frame t + 1 (windows of 2 frames):

    tokens i32[B, N] of frame t+1, task i32[B] -> reward f32[B]

Model (cheap: it runs at every imagined step): token + position + task embeddings, a per-token layer that
mixes the task into every token, then two readouts, the mean over tokens (what is in the frame) and a few
numbers per token flattened (where it is), into a one-hidden-layer MLP.

The `reward` stage that trains it is rsr/stages/reward.py; its settings are the world-model config's
`reward_head` group (`settings`, `check`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsr.train.optim import adamw_cosine
from rsr.train.state import TrainState
from rsr.utils import checks, configs


@dataclasses.dataclass(frozen=True)
class RewardHeadConfig:
  vocab: int  # token ids in [0, vocab): the tokenizer's codebook size
  tokens_per_frame: int  # N (views x h x w)
  num_tasks: int = 4
  d_model: int = 64
  hidden: int = 128

  def validate(self) -> "RewardHeadConfig":
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"reward_head {f.name} must be a positive integer, got {v!r}")
    return self


class RewardHead(nn.Module):
  cfg: RewardHeadConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, task: jax.Array) -> jax.Array:
    """tokens i32[B, N] (of the frame the action led to), task i32[B] -> predicted reward f32[B]."""
    c = self.cfg
    if tokens.shape[-1] != c.tokens_per_frame:
      raise ValueError(f"RewardHead expects {c.tokens_per_frame} tokens per frame, got shape {tokens.shape}")
    x = nn.Embed(c.vocab, c.d_model)(tokens.astype(jnp.int32))
    x = x + self.param("pos", nn.initializers.normal(0.02), (c.tokens_per_frame, c.d_model))
    x = x + nn.Embed(c.num_tasks, c.d_model)(task.astype(jnp.int32))[:, None]
    # Per token, after the task is added: which tokens matter depends on the task.
    x = nn.gelu(nn.Dense(c.d_model)(nn.LayerNorm()(x)))
    where = nn.Dense(4)(x).reshape(x.shape[0], -1)  # [B, 4N]: keeps positions (the cube's, the gripper's)
    h = jnp.concatenate([x.mean(axis=1), where], axis=-1)
    h = nn.gelu(nn.Dense(c.hidden)(h))
    return nn.Dense(1)(h)[:, 0]


# ---- training ----------------------------------------------------------------------------------------


def _optimizer(s: dict) -> optax.GradientTransformation:
  return adamw_cosine(s["lr"], s["warmup"], s["steps"], s["weight_decay"], s["grad_clip"])


def init_state(model: RewardHead, s: dict, key: jax.Array) -> TrainState:
  c = model.cfg
  params = model.init(key, jnp.zeros((1, c.tokens_per_frame), jnp.int32), jnp.zeros((1,), jnp.int32))
  return TrainState.create(params, _optimizer(s))


def transitions(window: dict) -> dict[str, np.ndarray]:
  """A loader batch of 2-frame windows -> the head's batch: tokens i32[B, N] of frame 1, the reward f32[B]
  the action at frame 0 earned, task i32[B], mask bool[B] (False where frame 1 is padding)."""
  return {"tokens": window["tokens"][:, 1], "reward": window["reward"][:, 0].astype(np.float32),
          "task": window["task"], "mask": window["mask"][:, 1]}


def reward_head_loss(model: RewardHead, params, batch: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """batch as `transitions` makes it -> (MSE over valid steps, {loss, mse, r2})."""
  pred = model.apply(params, batch["tokens"], batch["task"])
  valid = batch["mask"].astype(jnp.float32)
  n = jnp.maximum(valid.sum(), 1.0)
  target = batch["reward"]
  mse = jnp.sum(jnp.square(pred - target) * valid) / n
  mean = jnp.sum(target * valid) / n
  var = jnp.sum(jnp.square(target - mean) * valid) / n
  r2 = 1.0 - mse / jnp.maximum(var, 1e-8)  # explained variance of this batch
  return mse, {"loss": mse, "mse": mse, "r2": r2}


def make_train_step(model: RewardHead, s: dict):
  opt = _optimizer(s)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    (_, metrics), grads = jax.value_and_grad(lambda p: reward_head_loss(model, p, batch), has_aux=True)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), metrics

  return jax.jit(step, donate_argnums=0)


def held_out_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
  """{mse, r2} of predictions against rewards (r2 left out when the rewards are constant)."""
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  mse = float(np.mean((pred - target) ** 2))
  var = float(np.var(target))
  return {"mse": mse, **({"r2": 1.0 - mse / var} if var > 0 else {})}


def settings(config) -> dict[str, Any]:
  """The `reward_head` group of a world-model config (a preset's, or a stored one read through
  rsr.utils.configs.read, which fills the fields older runs lack) as a plain dict."""
  return dict(config.reward_head)


def check(config) -> None:
  """The reward stage's settings (ValueErrors naming `reward_head.FIELD`), before anything compiles."""

  s = settings(config)
  checks.positive(s, "reward_head", "d_model", "hidden", "batch_size", "steps", "lr", "grad_clip", "eval_every",
                  "checkpoint_every", "eval_windows", "quality_episodes")
  checks.non_negative(s, "reward_head", "warmup", "weight_decay")


def head_config(config, vocab: int, tokens_per_frame: int) -> RewardHeadConfig:
  return configs.typed(RewardHeadConfig, settings(config), vocab=int(vocab), tokens_per_frame=int(tokens_per_frame))
