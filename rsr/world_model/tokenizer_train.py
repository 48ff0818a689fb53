"""Training the tokenizer: state, one jitted step, and the held-out metrics (PSNR, code usage).

Loss: mean squared error of the reconstruction in [0, 1] pixel units (FSQ needs no codebook terms).
Metrics: PSNR = 10 log10(1 / MSE) per frame, averaged; code perplexity = exp(entropy of the token
histogram), i.e. the effective number of codes in use (at most the codebook size).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsr.train.optim import adamw_cosine
from rsr.train.state import TrainState
from rsr.world_model.tokenizer import Tokenizer, to_unit


@dataclasses.dataclass(frozen=True)
class TokenizerTrainConfig:
  batch_size: int = 32  # frames (all cameras' views count as frames)
  steps: int = 2000
  lr: float = 2e-3
  warmup: int = 100
  weight_decay: float = 1e-4
  grad_clip: float = 1.0


def optimizer(cfg: TokenizerTrainConfig) -> optax.GradientTransformation:
  return adamw_cosine(cfg.lr, cfg.warmup, cfg.steps, cfg.weight_decay, cfg.grad_clip)


def init_state(model: Tokenizer, cfg: TokenizerTrainConfig, key: jax.Array, image_shape: tuple[int, int]
               ) -> TrainState:
  params = model.init(key, jnp.zeros((1,) + tuple(image_shape) + (3,), jnp.uint8))
  return TrainState.create(params, optimizer(cfg))


def psnr(recon: jax.Array, target_unit: jax.Array) -> jax.Array:
  """Per-frame PSNR (dB) of f32[..., H, W, 3] images in [0, 1]."""
  mse = jnp.mean((recon - target_unit) ** 2, axis=(-3, -2, -1))
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


def make_train_step(model: Tokenizer, cfg: TokenizerTrainConfig):
  opt = optimizer(cfg)

  def loss_fn(params, rgb):
    recon, _ = model.apply(params, rgb)
    target = to_unit(rgb)
    loss = jnp.mean((recon - target) ** 2)
    return loss, {"loss": loss, "psnr": jnp.mean(psnr(recon, target))}

  def step(state: TrainState, rgb: jax.Array) -> tuple[TrainState, dict]:
    """rgb: uint8[B, H, W, 3]."""
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, rgb)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return jax.jit(step, donate_argnums=0)


def make_eval(model: Tokenizer):
  @jax.jit
  def run(params, rgb):
    recon, codes = model.apply(params, rgb)
    return psnr(recon, to_unit(rgb)), codes
  return run


def perplexity(codes: np.ndarray, codebook_size: int) -> float:
  counts = np.bincount(np.asarray(codes).ravel(), minlength=codebook_size).astype(np.float64)
  p = counts[counts > 0] / counts.sum()
  return float(np.exp(-(p * np.log(p)).sum()))


def token_stability(frames: np.ndarray, tokens: np.ndarray, patch: int) -> dict[str, int]:
  """How often tokens stay put where pixels do, over one episode's consecutive frame pairs.

  frames uint8[L, V, H, W, 3], tokens [L, V * h * w] with h = H / patch -> counts over every (pair,
  position): "positions"; "equal" tokens; "unchanged" token-sized pixel patches (no pixel changed);
  "flicker": tokens that changed where their patch did not; "missed": tokens that stayed where their patch
  changed. equal / positions and unchanged / positions are the token and patch stability shares."""
  if len(frames) < 2:
    return {"positions": 0, "equal": 0, "unchanged": 0, "flicker": 0, "missed": 0}
  l, v, h, w, _ = frames.shape
  p = frames.reshape(l, v, h // patch, patch, w // patch, patch, 3)
  unchanged = np.all(p[1:] == p[:-1], axis=(3, 5, 6)).reshape(l - 1, -1)
  equal = tokens[1:] == tokens[:-1]
  return {"positions": int(equal.size), "equal": int(equal.sum()), "unchanged": int(unchanged.sum()),
          "flicker": int((unchanged & ~equal).sum()), "missed": int((~unchanged & equal).sum())}


