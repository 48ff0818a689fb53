"""The pixel actor-critic: separate conv towers for the policy and the value, a Gaussian policy head.

    net = ActorCritic(AgentConfig())
    params = init_params(cfg, key)                                  # {"params": {...}}
    mean, log_std, value = net.apply(params, obs)                   # f32[B, A], f32[B, A], f32[B]

Parameter names start with "actor" (actor_torso, actor_mean, actor_log_std) or "critic" (critic_torso,
critic_value), so callers can tell the policy from the value function by the top-level key (critic warm-up,
freezing, logging).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rsr.utils import conv

# Width of the learned task embedding; small, since it only has to tell a handful of tasks apart.
TASK_EMBED_DIM = 16
# The smallest image side the conv towers accept: below it the flattened features are too few to matter.
MIN_IMAGE_SIDE = 16


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  channels: tuple[int, ...] = (16, 32, 32)  # conv encoder: one stride-2 3x3 conv + ReLU per entry
  hidden: int = 256  # MLP width after the encoder
  num_tasks: int = 4
  action_dim: int = 5
  use_goal: bool = False  # the goal image is concatenated with the frame on channels
  init_log_std: float = -0.5  # state-independent learned log std, a parameter of shape [A]
  min_log_std: float = -5.0
  max_log_std: float = 1.0


def _check_image_shape(cfg: AgentConfig, shape: tuple[int, ...]) -> None:
  """Raises a ValueError naming the size when the towers cannot take an image of this shape."""
  h, w = shape[-3], shape[-2]
  f = 2 ** len(cfg.channels)
  if h % f or w % f or min(h, w) < MIN_IMAGE_SIDE:
    raise ValueError(f"image size {h}x{w} must be divisible by 2**len(channels)={f} and at least "
                     f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")


def scale_pixels(rgb: jax.Array) -> jax.Array:
  """uint8[..., C] in [0, 255] -> f32[..., C] in [-1, 1] (zero-centred inputs keep early ReLUs balanced)."""
  return rgb.astype(jnp.float32) / 127.5 - 1.0


class _Tower(nn.Module):
  """Conv encoder + task embedding + two-layer MLP: f32[B, H, W, C], i32[B] -> f32[B, hidden]."""
  channels: tuple[int, ...]
  hidden: int
  num_tasks: int

  @nn.compact
  def __call__(self, pixels: jax.Array, task: jax.Array) -> jax.Array:
    x = pixels
    for c in self.channels:
      # The loop-safe convolution: PPO's epochs x minibatches update runs this encoder's gradient inside a
      # lax.scan, where XLA:CPU's own conv gradients are ~20x slower (rsr/utils/conv.py).
      x = nn.relu(nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME",
                          conv_general_dilated=conv.conv_general_dilated)(x))
    x = x.reshape(x.shape[0], -1)
    # The task id joins after the encoder: the conv features stay task-agnostic and are shared across tasks.
    emb = nn.Embed(self.num_tasks, TASK_EMBED_DIM)(task)
    x = jnp.concatenate([x, emb], axis=-1)
    # Orthogonal sqrt(2) init is the usual choice for ReLU MLPs in PPO (keeps activations' scale per layer).
    for _ in range(2):
      x = nn.relu(nn.Dense(self.hidden, kernel_init=nn.initializers.orthogonal(np.sqrt(2.0)))(x))
    return x


class ActorCritic(nn.Module):
  cfg: AgentConfig

  @nn.compact
  def __call__(self, obs: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    """obs {"rgb": uint8[B, H, W, 3], "task": i32[B], "goal": uint8[B, H, W, 3] (only if cfg.use_goal)}
    -> (mean f32[B, A], log_std f32[B, A], value f32[B])."""
    cfg = self.cfg
    rgb = obs["rgb"]
    _check_image_shape(cfg, rgb.shape)
    pixels = scale_pixels(rgb)
    if cfg.use_goal:
      if "goal" not in obs:
        raise ValueError("AgentConfig.use_goal is set but obs has no 'goal' image")
      if obs["goal"].shape != rgb.shape:
        raise ValueError(f"goal image shape {obs['goal'].shape} differs from rgb shape {rgb.shape}")
      pixels = jnp.concatenate([pixels, scale_pixels(obs["goal"])], axis=-1)
    task = obs["task"].astype(jnp.int32)

    # Separate towers (as Brax PPO and PureJaxRL keep them): with a shared encoder the value loss, whose
    # gradients are larger, would reshape the features the policy depends on.
    a = _Tower(cfg.channels, cfg.hidden, cfg.num_tasks, name="actor_torso")(pixels, task)
    # A small output init makes the first policy near-zero mean, so early actions are driven by the std.
    mean = nn.Dense(cfg.action_dim, kernel_init=nn.initializers.orthogonal(0.01), name="actor_mean")(a)
    log_std = self.param("actor_log_std", nn.initializers.constant(cfg.init_log_std), (cfg.action_dim,))
    log_std = jnp.broadcast_to(jnp.clip(log_std, cfg.min_log_std, cfg.max_log_std), mean.shape)

    c = _Tower(cfg.channels, cfg.hidden, cfg.num_tasks, name="critic_torso")(pixels, task)
    value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="critic_value")(c)[:, 0]
    return mean, log_std, value


def dummy_obs(cfg: AgentConfig, batch: int = 1, obs_shape: tuple[int, int] = (64, 64)) -> dict:
  """Zero observations of the right structure and dtypes (for init and shape checks)."""
  h, w = obs_shape
  obs = {"rgb": jnp.zeros((batch, h, w, 3), jnp.uint8), "task": jnp.zeros((batch,), jnp.int32)}
  if cfg.use_goal:
    obs["goal"] = jnp.zeros((batch, h, w, 3), jnp.uint8)
  return obs


def init_params(cfg: AgentConfig, key: jax.Array, obs_shape: tuple[int, int] = (64, 64)) -> Any:
  """Initial variables {"params": ...} for images of size obs_shape (H, W); use with ActorCritic(cfg).apply."""
  _check_image_shape(cfg, (*obs_shape, 3))
  return ActorCritic(cfg).init(key, dummy_obs(cfg, 1, obs_shape))


def param_count(params: Any) -> int:
  """Number of scalars in a parameter pytree."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
