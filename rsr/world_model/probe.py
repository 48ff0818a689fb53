"""A state probe: where the gripper and the cubes are, read off a frame by a small network.

The probe is trained on real frames as the world model renders them (the dataset's tokens decoded by the
tokenizer) to regress the simulator's privileged positions stored with every step: the gripper (TCP),
cube_a (the cube every task moves) and cube_b. Applied to imagined frames along held-out real action
sequences it turns imagination into centimetres: how far the imagined gripper and cube are from where the
simulator put them, per imagined step, beside the same for two references (the last real frame held still,
what a model that ignores its actions converges to; and imagination with another window's actions).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

# Positions the probe reads, as slices of the privileged state (rsr/envs/tabletop/env.py privileged_state).
OBJECTS = {"gripper": slice(0, 3), "cube_a": slice(6, 9), "cube_b": slice(9, 12)}
_SCALE = 10.0  # metres -> decimetres: targets of order one


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  channels: tuple[int, ...] = (32, 64, 64)  # one stride-2 convolution each
  hidden: int = 256
  num_tasks: int = 4
  steps: int = 3000
  batch_size: int = 64
  lr: float = 1e-3
  shift: int = 2  # pixels of random translation in training (0: none; see train())


class Probe(nn.Module):
  cfg: ProbeConfig

  @nn.compact
  def __call__(self, rgb: jax.Array, task: jax.Array) -> jax.Array:
    """rgb f32[B, H, W, 3] in [0, 1], task i32[B] -> positions f32[B, len(OBJECTS), 3] in metres."""
    x = rgb * 2.0 - 1.0
    for c in self.cfg.channels:
      x = nn.relu(nn.Conv(c, (4, 4), strides=(2, 2))(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.cfg.hidden)(x) + nn.Embed(self.cfg.num_tasks, self.cfg.hidden)(task))
    return nn.Dense(3 * len(OBJECTS))(x).reshape(-1, len(OBJECTS), 3) / _SCALE


def positions(state: np.ndarray) -> np.ndarray:
  """Privileged states f32[..., D] -> the probe's targets f32[..., len(OBJECTS), 3]."""
  return np.stack([state[..., s] for s in OBJECTS.values()], axis=-2)


def train(cfg: ProbeConfig, frames: np.ndarray, tasks: np.ndarray, targets: np.ndarray, key: jax.Array,
          progress: bool = False) -> Any:
  """Fits a probe: frames uint8[M, H, W, 3], tasks i32[M], targets f32[M, len(OBJECTS), 3] -> params.

  Random shifts of up to `cfg.shift` pixels augment the frames (imagined frames are a little off where real ones are
  not), so the probe reads positions rather than the last detail of the tokenizer's rendering."""
  from tqdm.auto import tqdm

  model = Probe(cfg)
  k_init, key = jax.random.split(key)
  params = model.init(k_init, jnp.zeros((1,) + frames.shape[1:]), jnp.zeros((1,), jnp.int32))
  opt = optax.adamw(optax.cosine_decay_schedule(cfg.lr, cfg.steps), weight_decay=1e-4)
  opt_state = opt.init(params)
  frames_d, tasks_d, targets_d = jnp.asarray(frames), jnp.asarray(tasks), jnp.asarray(targets)

  @jax.jit
  def step(params, opt_state, key):
    k_idx, k_shift = jax.random.split(key)
    idx = jax.random.randint(k_idx, (cfg.batch_size,), 0, frames_d.shape[0])
    x = frames_d[idx].astype(jnp.float32) / 255.0
    if cfg.shift:
      x = _shift(k_shift, x, cfg.shift)

    def loss_fn(p):
      return jnp.mean((model.apply(p, x, tasks_d[idx]) - targets_d[idx]) ** 2) * _SCALE ** 2

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  for k in tqdm(jax.random.split(key, cfg.steps), desc="state probe", unit="step", disable=not progress,
                dynamic_ncols=True):
    params, opt_state, _ = step(params, opt_state, k)
  return params


def _shift(key: jax.Array, x: jax.Array, pad: int) -> jax.Array:
  """Random translations of up to `pad` pixels (edge padding) of f32[B, H, W, C]."""
  b, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  off = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
  return jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1])))(padded, off)


def make_predict(cfg: ProbeConfig):
  """Jitted (params, rgb f32[..., H, W, 3] in [0, 1], task i32[...]) -> positions f32[..., len(OBJECTS), 3]."""
  model = Probe(cfg)

  @jax.jit
  def predict(params, rgb, task):
    lead = rgb.shape[:-3]
    out = model.apply(params, rgb.reshape((-1,) + rgb.shape[-3:]), task.reshape(-1))
    return out.reshape(lead + out.shape[1:])

  return predict


def errors_cm(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
  """Per object: Euclidean error in cm, f32[...] for pred/target f32[..., len(OBJECTS), 3]."""
  err = np.linalg.norm(pred - target, axis=-1) * 100.0
  return {name: err[..., i] for i, name in enumerate(OBJECTS)}
