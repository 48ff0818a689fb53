"""Training the dynamics model (WM_act) and the goal model (WM_goal) on tokenized windows.

Masking (MaskGIT): every frame but a window's first gets a mask ratio r = cos(pi/2 * u), u ~ U(0, 1)
(schedule "cosine"), or r ~ U(mask_min, 1) (schedule "uniform": Genie's, with mask_min 0.5, so that every
predicted frame is mostly hidden and motion cannot be read off its own visible tokens), and each of its
tokens is masked with probability r; the first frame stays visible as context.
Context noise (DIAMOND's noise augmentation, in tokens): each window draws a rate q ~ U(0, context_noise)
and replaces that share of the visible input tokens and of the previous-frame input with random codes, so
that the model learns to read imperfect pasts as imagination will feed it. Action dropout: each frame's
action is hidden (the no-action token) with probability action_dropout.
Self context (scheduled sampling, Bengio et al. 2015, in MaskGIT form): a first pass without gradient
guesses every masked token of the window (greedy); in a share `self_context` of the windows the training pass
then reads those guesses in place of the real frames, as visible tokens and as the previous-frame input,
while its targets stay the real tokens. Teacher forcing only ever shows the model real pasts; imagination
shows it its own, which lag where it was unsure (too few tokens move a step), and a lag it has never seen it
cannot make up. Unlike context noise (random codes), these errors are the model's own.
Changed-token weight: a masked token that differs from the previous frame's token at its position
counts changed_weight times in the cross-entropy (1: plain MaskGIT). About 85% of targets are copies of
the previous frame; without a weight their easy loss dominates the gradient that motion has to share.
Loss: cross-entropy on masked tokens + done_weight x MSE(sigmoid(done_logit), done label) over valid
frames (the paper: weight 5). The goal model is the same network conditioned on the task only.
What the done head reads (`done_input`): "masked", the training pass's own frames, most of whose tokens
are hidden (at least mask_min of them under the uniform schedule), although imagination asks it about
complete frames; "visible", a second pass over the unmasked window; "predicted", a second pass over the
window with every masked token replaced by the first pass's most likely one, frames like the imagined ones
it will judge. The second pass trains the done head alone (the trunk under stop_gradient: it costs a
forward pass, and the trunk's features stay the token prediction's).
Metrics beside the loss: `changed_frac`, the share of masked tokens that differ from the same position
in the previous frame, and `changed_acc`, the accuracy on those: copying is easy, the changed tokens are
where dynamics and action control live.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rsr.train import sharding
from rsr.train.optim import adamw_cosine
from rsr.utils import configs
from rsr.world_model import token_head
from rsr.world_model.dynamics import Dynamics, DynamicsConfig


@dataclasses.dataclass(frozen=True)
class DynamicsTrainConfig:
  batch_size: int = 8
  steps: int = 1000
  lr: float = 1e-3
  warmup: int = 100
  weight_decay: float = 1e-4
  grad_clip: float = 1.0
  done_weight: float = 5.0
  mask_schedule: str = "cosine"  # or "uniform" (r ~ U(mask_min, 1))
  mask_min: float = 0.5
  context_noise: float = 0.0
  action_dropout: float = 0.0
  changed_weight: float = 1.0
  done_input: str = "masked"  # one of DONE_INPUTS (module docstring)
  self_context: float = 0.0  # share of windows whose context is the model's own guess (module docstring)

  def validate(self) -> "DynamicsTrainConfig":
    if self.mask_schedule not in MASK_SCHEDULES:
      raise ValueError(f"mask_schedule must be one of {MASK_SCHEDULES}, got {self.mask_schedule!r}")
    for name in ("mask_min", "context_noise", "action_dropout", "self_context"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
    if self.done_input not in DONE_INPUTS:
      raise ValueError(f"done_input must be one of {DONE_INPUTS}, got {self.done_input!r}")
    if self.changed_weight < 1.0:
      raise ValueError(f"changed_weight must be >= 1, got {self.changed_weight}")
    return self


MASK_SCHEDULES = ("cosine", "uniform")
DONE_INPUTS = ("masked", "visible", "predicted")


@struct.dataclass
class DynamicsState:
  step: jax.Array  # i32[]
  params: Any
  opt_state: Any
  rng: jax.Array


def optimizer(cfg: DynamicsTrainConfig) -> optax.GradientTransformation:
  return adamw_cosine(cfg.lr, cfg.warmup, cfg.steps, cfg.weight_decay, cfg.grad_clip, b2=0.95)


def init_state(model: Dynamics, cfg: DynamicsTrainConfig, key: jax.Array) -> DynamicsState:
  mc = model.cfg
  k_init, k_rng = jax.random.split(key)
  tokens = jnp.zeros((1, mc.window, mc.tokens_per_frame), jnp.int32)
  params = model.init(k_init, tokens, jnp.zeros((1, mc.window, mc.action_dim)), jnp.zeros((1,), jnp.int32))
  return DynamicsState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer(cfg).init(params),
                       rng=k_rng)


def sample_mask(key: jax.Array, shape: tuple[int, int, int], schedule: str = "cosine", mask_min: float = 0.5
                ) -> jax.Array:
  """bool[B, T, N]: per-frame mask ratios of the schedule (module docstring); frame 0 never masked."""
  k_ratio, k_tok = jax.random.split(key)
  u = jax.random.uniform(k_ratio, shape[:2])
  ratio = jnp.cos(jnp.pi / 2 * u) if schedule == "cosine" else mask_min + (1.0 - mask_min) * u
  mask = jax.random.uniform(k_tok, shape) < ratio[..., None]
  return mask.at[:, 0].set(False)


def corrupt(key: jax.Array, tokens: jax.Array, max_rate: float, vocab: int) -> jax.Array:
  """tokens i32[B, T, N] with a share q ~ U(0, max_rate) per window replaced by random codes."""
  k_rate, k_where, k_code = jax.random.split(key, 3)
  rate = jax.random.uniform(k_rate, tokens.shape[:1]) * max_rate
  hit = jax.random.uniform(k_where, tokens.shape) < rate[:, None, None]
  return jnp.where(hit, jax.random.randint(k_code, tokens.shape, 0, vocab), tokens)


def losses(model: Dynamics, params, batch: dict, key: jax.Array, cfg: "DynamicsTrainConfig"):
  """batch: tokens i32[B, T, N], action f32[B, T, A], task i32[B], done f32[B, T], mask bool[B, T]
  -> (loss, metrics)."""
  tokens = batch["tokens"].astype(jnp.int32)
  valid = batch["mask"]
  k_mask, k_in, k_prev, k_act = jax.random.split(key, 4)
  masked = sample_mask(k_mask, tokens.shape, cfg.mask_schedule, cfg.mask_min) & valid[..., None]
  visible, prev_source = tokens, tokens
  if cfg.self_context:
    # fold_in, not a fifth split: runs without self context keep their random streams
    visible = prev_source = own_guess(model, params, batch, jax.random.fold_in(key, 1), cfg)
  if cfg.context_noise:
    vocab = model.cfg.vocab
    visible = corrupt(k_in, visible, cfg.context_noise, vocab)
    prev_source = corrupt(k_prev, prev_source, cfg.context_noise, vocab)
  inputs = jnp.where(masked, model.cfg.mask_id, visible)
  seen = (jax.random.uniform(k_act, tokens.shape[:2]) >= cfg.action_dropout) if cfg.action_dropout else None
  logits, done_logit = model.apply(params, inputs, batch["action"], batch["task"], prev_source, seen)
  mc = model.cfg
  if cfg.done_input != "masked":
    frames = visible
    if cfg.done_input == "predicted":
      guess = token_head.greedy(mc.output, mc.levels, jax.lax.stop_gradient(logits))[0]
      frames = jnp.where(masked, guess, visible)
    _, done_logit = model.apply(done_head_only(params), frames, batch["action"], batch["task"], frames, seen)
  ce = -token_head.log_prob(mc.output, mc.levels, logits, tokens)
  n_masked = jnp.maximum(masked.sum(), 1)
  # Frame 0 is never masked, so its (undefined) previous frame never matters.
  changed = masked & (tokens != jnp.concatenate([tokens[:, :1], tokens[:, :-1]], axis=1))
  weight = masked * (1.0 + (cfg.changed_weight - 1.0) * changed)
  ce = jnp.sum(ce * weight) / jnp.maximum(weight.sum(), 1.0)
  right = token_head.greedy(mc.output, mc.levels, logits)[0] == tokens
  acc = jnp.sum(right * masked) / n_masked
  changed_acc = jnp.sum(right * changed) / jnp.maximum(changed.sum(), 1)
  n_valid = jnp.maximum(valid.sum(), 1)
  done_mse = jnp.sum((jax.nn.sigmoid(done_logit) - batch["done"]) ** 2 * valid) / n_valid
  loss = ce + cfg.done_weight * done_mse
  return loss, {"loss": loss, "ce": ce, "token_acc": acc, "changed_acc": changed_acc,
                "changed_frac": changed.sum() / n_masked, "done_mse": done_mse}


def own_guess(model: Dynamics, params, batch: dict, key: jax.Array, cfg: "DynamicsTrainConfig") -> jax.Array:
  """i32[B, T, N]: the window as the model reconstructs it (module docstring, "Self context"): in a share
  cfg.self_context of the windows, each frame's tokens under a fresh training mask replaced by the most
  likely ones (no gradient); the other windows, and every first frame, stay real."""
  tokens = batch["tokens"].astype(jnp.int32)
  k_mask, k_pick = jax.random.split(key)
  hidden = sample_mask(k_mask, tokens.shape, cfg.mask_schedule, cfg.mask_min) & batch["mask"][..., None]
  mc = model.cfg
  logits, _ = model.apply(jax.lax.stop_gradient(params), jnp.where(hidden, mc.mask_id, tokens), batch["action"],
                          batch["task"], tokens)
  guess = token_head.greedy(mc.output, mc.levels, logits)[0]
  pick = jax.random.uniform(k_pick, tokens.shape[:1]) < cfg.self_context
  return jnp.where(pick[:, None, None] & hidden, guess, tokens)


def done_head_only(params):
  """params with every leaf but the done head's under stop_gradient."""
  def leaf(path, x):
    return x if any(getattr(k, "key", None) in ("done_hidden", "done_out") for k in path) else jax.lax.stop_gradient(x)
  return jax.tree_util.tree_map_with_path(leaf, params)


def make_train_step(model: Dynamics, cfg: DynamicsTrainConfig):
  opt = optimizer(cfg)

  def step(state: DynamicsState, batch: dict) -> tuple[DynamicsState, dict]:
    rng, key = jax.random.split(state.rng)
    (_, metrics), grads = jax.value_and_grad(
        lambda p: losses(model, p, batch, key, cfg), has_aux=True)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state, rng=rng), metrics

  return jax.jit(step, donate_argnums=0)


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
  """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); None with one class."""
  labels = labels.astype(bool)
  pos, neg = scores[labels], scores[~labels]
  if not len(pos) or not len(neg):
    return None
  order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
  ranks = np.empty(len(order))
  allv = np.concatenate([pos, neg])[order]
  # average ranks over ties
  i = 0
  while i < len(allv):
    j = i
    while j + 1 < len(allv) and allv[j + 1] == allv[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2 + 1
    i = j + 1
  return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def f1(pred: np.ndarray, labels: np.ndarray) -> float:
  pred, labels = pred.astype(bool), labels.astype(bool)
  tp = float((pred & labels).sum())
  denom = 2 * tp + float((pred & ~labels).sum()) + float((~pred & labels).sum())
  return 2 * tp / denom if denom else 1.0


def lower_sharded_step(model: Dynamics, cfg: DynamicsTrainConfig, mesh, fsdp: bool, batch_size: int):
  """The jitted training step lowered for `mesh` from abstract arrays (nothing is allocated, so the
  paper model lowers on a laptop): the state on rsr.train.sharding.state_shardings, a batch of
  `batch_size` windows split over every device. Returns (lowered, abstract state, its shardings)."""

  state = jax.eval_shape(lambda k: init_state(model, cfg, k), jax.random.PRNGKey(0))
  shardings = sharding.state_shardings(state, mesh, fsdp)
  w, n = model.cfg.window, model.cfg.tokens_per_frame
  spec = {"tokens": ((batch_size, w, n), jnp.int32), "action": ((batch_size, w, model.cfg.action_dim), jnp.float32),
          "task": ((batch_size,), jnp.int32), "done": ((batch_size, w), jnp.float32),
          "mask": ((batch_size, w), jnp.bool_)}
  abstract = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)  # noqa: E731
  batch = {k: jax.ShapeDtypeStruct(s, d, sharding=sharding.batch_sharding(mesh)) for k, (s, d) in spec.items()}
  lowered = make_train_step(model, cfg).lower(jax.tree_util.tree_map(abstract, state, shardings), batch)
  return lowered, state, shardings


def dynamics_config(config, vocab: int, tokens_per_frame: int, conditioning: str) -> DynamicsConfig:
  levels = tuple(config.tokenizer.levels) if config.dynamics.output == "digits" else ()
  return configs.typed(DynamicsConfig, config.dynamics, vocab=vocab, tokens_per_frame=tokens_per_frame,
                       levels=levels, conditioning=conditioning)
