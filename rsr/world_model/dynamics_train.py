"""Training the dynamics model (WM_act) and the goal model (WM_goal) on tokenized windows.

Masking (MaskGIT): every frame but a window's first gets a mask ratio r = cos(pi/2 * u), u ~ U(0, 1), and
each of its tokens is masked with probability r; the first frame stays visible as context.
Loss: cross-entropy on masked tokens + done_weight x MSE(sigmoid(done_logit), done label) over valid
frames (the paper: weight 5). The goal model is the same network conditioned on the task only.
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

from rsr.train.optim import adamw_cosine
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


def sample_mask(key: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
  """bool[B, T, N]: MaskGIT's cosine mask ratios per frame; frame 0 never masked."""
  k_ratio, k_tok = jax.random.split(key)
  ratio = jnp.cos(jnp.pi / 2 * jax.random.uniform(k_ratio, shape[:2]))
  mask = jax.random.uniform(k_tok, shape) < ratio[..., None]
  return mask.at[:, 0].set(False)


def losses(model: Dynamics, params, batch: dict, key: jax.Array, done_weight: float):
  """batch: tokens i32[B, T, N], action f32[B, T, A], task i32[B], done f32[B, T], mask bool[B, T]
  -> (loss, metrics)."""
  tokens = batch["tokens"].astype(jnp.int32)
  valid = batch["mask"]
  masked = sample_mask(key, tokens.shape) & valid[..., None]
  inputs = jnp.where(masked, model.cfg.mask_id, tokens)
  logits, done_logit = model.apply(params, inputs, batch["action"], batch["task"], tokens)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens)
  n_masked = jnp.maximum(masked.sum(), 1)
  ce = jnp.sum(ce * masked) / n_masked
  right = jnp.argmax(logits, -1) == tokens
  acc = jnp.sum(right * masked) / n_masked
  # Frame 0 is never masked, so its (undefined) previous frame never matters.
  changed = masked & (tokens != jnp.concatenate([tokens[:, :1], tokens[:, :-1]], axis=1))
  changed_acc = jnp.sum(right * changed) / jnp.maximum(changed.sum(), 1)
  n_valid = jnp.maximum(valid.sum(), 1)
  done_mse = jnp.sum((jax.nn.sigmoid(done_logit) - batch["done"]) ** 2 * valid) / n_valid
  loss = ce + done_weight * done_mse
  return loss, {"loss": loss, "ce": ce, "token_acc": acc, "changed_acc": changed_acc,
                "changed_frac": changed.sum() / n_masked, "done_mse": done_mse}


def make_train_step(model: Dynamics, cfg: DynamicsTrainConfig):
  opt = optimizer(cfg)

  def step(state: DynamicsState, batch: dict) -> tuple[DynamicsState, dict]:
    rng, key = jax.random.split(state.rng)
    (_, metrics), grads = jax.value_and_grad(
        lambda p: losses(model, p, batch, key, cfg.done_weight), has_aux=True)(state.params)
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
  from rsr.train import sharding

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
  d = config.dynamics
  return DynamicsConfig(vocab=vocab, tokens_per_frame=tokens_per_frame, d_model=d.d_model, layers=d.layers,
                        heads=d.heads, mlp_ratio=d.mlp_ratio, window=d.window,
                        action_conditioning=d.action_conditioning, conditioning=conditioning,
                        prev_frame_input=d.get("prev_frame_input", False), dtype=d.get("dtype", "float32"),
                        remat=d.get("remat", False)).validate()
