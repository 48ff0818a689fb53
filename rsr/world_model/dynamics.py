"""The dynamics model: a spatio-temporal MaskGIT transformer over frame tokens, with a done head.

    logits, done_logit = model.apply(params, tokens, actions, task)     # training: whole windows
    cache = init_cache(config, batch)                                    # imagination: one frame at a time
    cache, done_logit, _ = model.apply(params, cache, tokens_t, action_prev, has_action, task,
                                       method=Dynamics.observe)

Shapes: tokens i32[B, T, N] (N tokens per frame: views x h x w, `config.mask_id` where masked),
actions f32[B, T, A] (actions[:, t] is the action taken AT frame t, so frame t + 1 is conditioned on it),
task i32[B]. Each block (as in Genie / the paper's ST-MaskGIT):
  spatial self-attention among a frame's N tokens
  -> action conditioning: cross-attention to per-dimension action tokens (each scalar -> MLP -> token,
     the paper's choice) or an additive action embedding (cheaper)
  -> causal temporal self-attention, each token position attending to itself in earlier frames
     (rotary position encoding over time, so a sliding cache of past frames stays exact)
  -> MLP.
With `action_film`, the action also modulates every block's four layer norms (scale and shift from an
action embedding, zero-initialised so training starts from the plain block): DIAMOND's adaptive
normalisation, an action path into every layer beside the cross-attention.
The goal model uses the same network with `conditioning="task"` (no action input).
With `prev_frame_input`, every token position of frame t also adds an embedding of frame t - 1's token at
that position (a "no frame" id for the first frame). The paper's network reaches the previous frame only
through temporal attention; at our small scales that path is learned slowly and imagined frames lost detail
that copying keeps, so this direct path makes "unchanged" the easy default and the capacity goes to motion.
Done head: Linear(d, 64) -> ReLU -> Linear(64, 1) on the frame's mean-pooled features (the paper's head).

The cache holds every layer's temporal keys/values of the last `window` frames, so an imagined frame
costs one frame of work per MaskGIT step instead of a whole window.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rsr.world_model import token_head


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
  vocab: int  # tokenizer codebook size; the mask token is `vocab`
  tokens_per_frame: int  # N = views x h x w
  action_dim: int = 5
  num_tasks: int = 4
  d_model: int = 128
  layers: int = 4
  heads: int = 4
  mlp_ratio: int = 4
  window: int = 8  # frames per training window = frames kept in the imagination cache
  action_conditioning: str = "cross"  # "cross" (per-dimension action tokens) or "additive"
  # The action also scales and shifts every block's layer norms (see the module docstring). Not in the paper.
  action_film: bool = False
  # "codes": one softmax over the codebook (the paper's); "digits": one per FSQ digit of `levels`
  # (rsr/world_model/token_head.py).
  output: str = "codes"
  levels: tuple[int, ...] = ()  # the tokenizer's FSQ levels (output "digits")
  conditioning: str = "action"  # "action" (WM_act) or "task" (WM_goal)
  # Each frame's token positions also embed the previous frame's token there (a direct copy path;
  # the temporal attention then spends itself on what changes). Not in the paper; see the docstring.
  prev_frame_input: bool = False
  # "bfloat16": the transformer's matmuls in bf16 (parameters stay f32); attention softmax, the logits
  # that enter the loss and the done head stay f32 (rounding there moves probabilities, not just features).
  dtype: str = "float32"
  remat: bool = False  # recompute each block in the backward pass (activation memory for compute)

  @property
  def compute_dtype(self):
    return jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32

  @property
  def mask_id(self) -> int:
    return self.vocab

  @property
  def head_dim(self) -> int:
    return self.d_model // self.heads

  def validate(self) -> "DynamicsConfig":
    if self.window < 2:
      raise ValueError(f"window must be >= 2 (the cache keeps window - 1 past frames), got {self.window}")
    if self.d_model % self.heads:
      raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
    if self.head_dim % 2:
      raise ValueError(f"head dim d_model / heads = {self.head_dim} must be even (rotary encoding)")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
    if self.action_conditioning not in ("cross", "additive"):
      raise ValueError(f"action_conditioning must be 'cross' or 'additive', got {self.action_conditioning!r}")
    if self.output not in token_head.OUTPUTS:
      raise ValueError(f"output must be one of {token_head.OUTPUTS}, got {self.output!r}")
    if self.output == "digits" and int(np.prod(self.levels)) != self.vocab:
      raise ValueError(f"output 'digits' needs the FSQ levels of the {self.vocab}-code vocabulary, got "
                       f"{self.levels!r}")
    if self.conditioning not in ("action", "task"):
      raise ValueError(f"conditioning must be 'action' or 'task', got {self.conditioning!r}")
    return self


def rope(x: jax.Array, pos: jax.Array) -> jax.Array:
  """Rotary encoding of x [..., L, H, dh] at integer positions pos [..., L]."""
  dh = x.shape[-1]
  freq = 1.0 / (10000.0 ** (np.arange(0, dh, 2, dtype=np.float32) / dh))
  ang = pos[..., None, None].astype(jnp.float32) * freq  # [..., L, 1, dh/2]
  cos, sin = jnp.cos(ang), jnp.sin(ang)
  x1, x2 = x[..., 0::2], x[..., 1::2]
  out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.reshape(x.shape)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """q [..., Lq, H, dh], k/v [..., Lk, H, dh], mask broadcastable to [..., H, Lq, Lk] -> [..., Lq, H, dh].

  Heads move in front of the sequence axes first so that both products are plain batched matmuls
  ([..., H, Lq, dh] x [..., H, dh, Lk]); XLA's CPU backend runs the einsum with the heads in the middle
  several times slower. The softmax is normalised after the weighted sum: one division per output
  [Lq, dh] instead of per score [Lq, Lk] (figures in docs/benchmarks.md)."""
  scale = np.float32(1.0 / np.sqrt(q.shape[-1]))
  qh, kh, vh = (jnp.swapaxes(x, -2, -3) for x in (q, k, v))  # [..., H, L, dh]
  logits = jnp.matmul(qh, jnp.swapaxes(kh, -1, -2)).astype(jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask, logits, -1e9)
  e = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
  out = jnp.matmul(e.astype(v.dtype), vh).astype(jnp.float32) / jnp.sum(e, axis=-1, keepdims=True)
  return jnp.swapaxes(out.astype(v.dtype), -2, -3)


class Heads(nn.Module):
  """q, k, v projections and the output projection of one attention."""

  cfg: DynamicsConfig

  def setup(self):
    shape, dt = (self.cfg.heads, self.cfg.head_dim), self.cfg.compute_dtype
    self.q = nn.DenseGeneral(shape, use_bias=False, dtype=dt)
    self.k = nn.DenseGeneral(shape, use_bias=False, dtype=dt)
    self.v = nn.DenseGeneral(shape, use_bias=False, dtype=dt)
    self.o = nn.DenseGeneral(self.cfg.d_model, axis=(-2, -1), dtype=dt)


class Block(nn.Module):
  cfg: DynamicsConfig

  def setup(self):
    cfg = self.cfg
    dt = cfg.compute_dtype
    self.norm_s, self.norm_a, self.norm_t, self.norm_m = (nn.LayerNorm(dtype=dt) for _ in range(4))
    self.spatial = Heads(cfg)
    self.temporal = Heads(cfg)
    self.cross = Heads(cfg) if self._cross else None
    self.mlp_in = nn.Dense(cfg.d_model * cfg.mlp_ratio, dtype=dt)
    self.mlp_out = nn.Dense(cfg.d_model, dtype=dt)
    film = cfg.action_film and cfg.conditioning == "action"
    # (scale, shift) for each of the four norms; zero-initialised: the block starts unmodulated.
    self.film = nn.Dense(8 * cfg.d_model, kernel_init=nn.initializers.zeros, dtype=dt) if film else None

  @property
  def _cross(self) -> bool:
    return self.cfg.conditioning == "action" and self.cfg.action_conditioning == "cross"

  def _modulation(self, film):
    """film [..., D] (the action embedding) or None -> [..., 8, D] scales and shifts, or None."""
    if self.film is None or film is None:
      return None
    return self.film(nn.silu(film)).reshape(film.shape[:-1] + (8, self.cfg.d_model))

  @staticmethod
  def _norm(norm, x, mod, i: int):
    """norm(x) for x [..., N, D], scaled and shifted by mod[..., 2i], mod[..., 2i + 1] ([..., D]) if given."""
    h = norm(x)
    if mod is None:
      return h
    return h * (1.0 + mod[..., None, 2 * i, :]) + mod[..., None, 2 * i + 1, :]

  def _spatial_and_cross(self, x, act, mod):
    """x [..., N, D]; act [..., A, D] action tokens (cross) or None; mod [..., 8, D] or None."""
    h = self._norm(self.norm_s, x, mod, 0)
    x = x + self.spatial.o(attend(self.spatial.q(h), self.spatial.k(h), self.spatial.v(h)))
    if self.cross is not None:
      h = self._norm(self.norm_a, x, mod, 1)
      x = x + self.cross.o(attend(self.cross.q(h), self.cross.k(act), self.cross.v(act)))
    return x

  def _mlp(self, x, mod):
    return x + self.mlp_out(nn.gelu(self.mlp_in(self._norm(self.norm_m, x, mod, 3))))

  def __call__(self, x, act, pos, film=None):
    """Training path. x [B, T, N, D]; act [B, T, A, D] or None; pos i32[T] frame positions; film [B, T, D]
    the action embedding of the norms' modulation, or None."""
    mod = self._modulation(film)
    x = self._spatial_and_cross(x, act, mod)
    h = jnp.swapaxes(self._norm(self.norm_t, x, mod, 2), 1, 2)  # [B, N, T, D]
    q = rope(self.temporal.q(h), pos)
    k = rope(self.temporal.k(h), pos)
    t = x.shape[1]
    causal = np.tril(np.ones((t, t), bool))
    out = attend(q, k, self.temporal.v(h), causal)
    x = x + jnp.swapaxes(self.temporal.o(out), 1, 2)
    return self._mlp(x, mod)

  def step(self, x, act, pos, k_cache, v_cache, valid, film=None):
    """One new frame. x [B, N, D]; act [B, A, D] or None; pos i32[B]; k/v_cache [B, N, S, H, dh];
    valid bool[B, S] (cache slots holding a frame); film [B, D] or None. Returns (x, k_new, v_new) with
    k/v_new [B, N, H, dh]."""
    mod = self._modulation(film)
    x = self._spatial_and_cross(x, act, mod)
    h = self._norm(self.norm_t, x, mod, 2)
    q = rope(self.temporal.q(h)[:, :, None], pos[:, None, None])[:, :, 0]  # [B, N, H, dh]
    k_new = rope(self.temporal.k(h)[:, :, None], pos[:, None, None])[:, :, 0]
    v_new = self.temporal.v(h)
    # Attention over the S cached frames and the frame itself, without concatenating keys/values (a copy
    # of the whole cache per layer): scores of both parts, one softmax over S + 1, two weighted sums.
    scale = np.float32(1.0 / np.sqrt(q.shape[-1]))
    # (Contractions as einsums: XLA:CPU ran them ~1.4x faster than broadcast products summed over dh.)
    s_cache = jnp.einsum("bnhe,bnshe->bnsh", q, k_cache) * scale  # [B, N, S, H]
    s_cache = jnp.where(valid[:, None, :, None], s_cache, -1e9)
    s_self = jnp.einsum("bnhe,bnhe->bnh", q, k_new)[:, :, None] * scale  # [B, N, 1, H]
    p = jax.nn.softmax(jnp.concatenate([s_cache, s_self], axis=2).astype(jnp.float32), axis=2)
    out = jnp.einsum("bnsh,bnshe->bnhe", p[:, :, :-1], v_cache) + p[:, :, -1, :, None] * v_new
    x = x + self.temporal.o(out)
    return self._mlp(x, mod), k_new, v_new


@struct.dataclass
class Cache:
  """Temporal keys/values of the last W - 1 frames of every layer, per environment (batch axis first, like
  every batched state).

  A ring buffer: a new frame overwrites the oldest slot in place (a scatter into a donated buffer) instead
  of shifting the whole cache, which at 256 environments moved hundreds of megabytes per imagined frame.
  Slot order does not matter to attention: keys carry their rotary position from when they were written,
  and `valid` masks empty slots."""

  k: jax.Array  # f32[B, L, N, S, H, dh] with S = W - 1 slots (a ring: frame p lives in slot p mod S)
  v: jax.Array  # f32[B, L, N, S, H, dh]
  valid: jax.Array  # bool[B, S] slot holds a frame
  pos: jax.Array  # i32[B] position of the next frame
  last: jax.Array  # i32[B, N] tokens of the newest frame (read when pos > 0)


def init_cache(cfg: DynamicsConfig, batch: int) -> Cache:
  shape = (batch, cfg.layers, cfg.tokens_per_frame, cfg.window - 1, cfg.heads, cfg.head_dim)
  # W - 1 past frames + the new one = the training window, so imagination sees what training saw.
  cache = Cache(k=jnp.zeros(shape), v=jnp.zeros(shape), valid=jnp.zeros((batch, cfg.window - 1), bool),
                pos=jnp.zeros((batch,), jnp.int32), last=jnp.zeros((batch, cfg.tokens_per_frame), jnp.int32))
  # Inside jit, an all-constant cache invites XLA to constant-fold the first frame's attention over it
  # (seconds of compile time per layer at 256 environments, and alarming log lines): the barrier keeps
  # the zeros opaque.
  return jax.lax.optimization_barrier(cache)


class Dynamics(nn.Module):
  cfg: DynamicsConfig

  def setup(self):
    cfg = self.cfg.validate()
    d = cfg.d_model
    self.token_emb = nn.Embed(cfg.vocab + 1, d)
    if cfg.prev_frame_input:
      self.prev_emb = nn.Embed(cfg.vocab + 1, d)  # id `vocab`: no previous frame
    self.spatial_pos = self.param("spatial_pos", nn.initializers.normal(0.02), (cfg.tokens_per_frame, d))
    self.task_emb = nn.Embed(cfg.num_tasks, d)
    if cfg.conditioning == "action":
      if cfg.action_conditioning == "cross":
        self.act_in = nn.Dense(d)
        self.act_out = nn.Dense(d)
        self.act_dim_emb = self.param("act_dim_emb", nn.initializers.normal(0.02), (cfg.action_dim, d))
        self.no_action = self.param("no_action", nn.initializers.normal(0.02), (cfg.action_dim, d))
      else:
        self.act_proj = nn.Dense(d)
        self.no_action = self.param("no_action", nn.initializers.normal(0.02), (d,))
      if cfg.action_film:
        self.film_in = nn.Dense(d)
        self.film_out = nn.Dense(d)
        self.no_action_film = self.param("no_action_film", nn.initializers.normal(0.02), (d,))
    block = nn.remat(Block) if cfg.remat else Block  # remat wraps __call__ (training) only
    self.blocks = [block(cfg) for _ in range(cfg.layers)]
    self.norm = nn.LayerNorm()
    self.logits = nn.Dense(token_head.n_logits(cfg.output, cfg.vocab, cfg.levels))
    self.done_hidden = nn.Dense(64)
    self.done_out = nn.Dense(1)

  def _action(self, prev_action, has_action):
    """prev_action f32[..., A], has_action bool[...] -> cross tokens [..., A, D] / additive [..., D] / None."""
    cfg = self.cfg
    if cfg.conditioning != "action":
      return None
    if cfg.action_conditioning == "cross":
      tok = self.act_out(nn.gelu(self.act_in(prev_action[..., None]))) + self.act_dim_emb
      return jnp.where(has_action[..., None, None], tok, self.no_action)
    return jnp.where(has_action[..., None], self.act_proj(prev_action), self.no_action)

  def _film(self, prev_action, has_action):
    """prev_action f32[..., A], has_action bool[...] -> the norms' action embedding [..., D], or None."""
    if self.cfg.conditioning != "action" or not self.cfg.action_film:
      return None
    emb = self.film_out(nn.gelu(self.film_in(prev_action)))
    return jnp.where(has_action[..., None], emb, self.no_action_film)

  def _embed(self, tokens, task, add, prev_tokens):
    x = self.token_emb(tokens) + self.spatial_pos + self.task_emb(task)[..., None, :]
    if self.cfg.prev_frame_input:
      x = x + self.prev_emb(prev_tokens)
    if add is not None:  # additive action embedding
      x = x + add[..., None, :]
    return x

  def _heads(self, x):
    x = self.norm(x.astype(jnp.float32))
    done = self.done_out(nn.relu(self.done_hidden(jnp.mean(x, axis=-2))))[..., 0]
    return self.logits(x), done

  def __call__(self, tokens, actions, task, targets=None, action_seen=None):
    """tokens i32[B, T, N] (mask ids where masked), actions f32[B, T, A] (taken at each frame), task i32[B],
    targets i32[B, T, N] the unmasked tokens (the previous-frame input; default `tokens`), action_seen
    bool[B, T] (False: frame t is conditioned on no action, as frame 0 always is; action dropout)
    -> (logits f32[B, T, N, L], done_logit f32[B, T]); L logits per token (token_head.n_logits)."""
    b, t, _ = tokens.shape
    targets = tokens if targets is None else targets
    prev_tokens = jnp.concatenate([jnp.full_like(targets[:, :1], self.cfg.vocab), targets[:, :-1]], axis=1)
    prev = jnp.concatenate([jnp.zeros_like(actions[:, :1]), actions[:, :-1]], axis=1)
    has = jnp.broadcast_to(np.arange(t) > 0, (b, t))
    if action_seen is not None:
      has = has & action_seen
    act = self._action(prev, has)
    film = self._film(prev, has)
    cross = act if (act is not None and act.ndim == 4) else None
    x = self._embed(tokens, task[:, None], act if cross is None else None, prev_tokens)
    pos = jnp.arange(t)
    for blk in self.blocks:
      x = blk(x, cross, pos, film)
    return self._heads(x)

  def observe(self, cache: Cache, tokens, prev_action, has_action, task, write: bool = True):
    """Runs one frame through the network against the cache.

    tokens i32[B, N] (may hold mask ids), prev_action f32[B, A] (the action that led to this frame),
    has_action bool[B], task i32[B] -> (cache with the frame appended if `write`, done_logit f32[B],
    logits f32[B, N, vocab]).
    """
    act = self._action(prev_action, has_action)
    film = self._film(prev_action, has_action)
    cross = act if (act is not None and act.ndim == 3) else None
    prev_tokens = jnp.where((cache.pos > 0)[:, None], cache.last, self.cfg.vocab)
    x = self._embed(tokens, task, act if cross is None else None, prev_tokens)
    ks, vs = [], []
    for i, blk in enumerate(self.blocks):
      x, k_new, v_new = blk.step(x, cross, cache.pos, cache.k[:, i], cache.v[:, i], cache.valid, film)
      ks.append(k_new)
      vs.append(v_new)
    logits, done = self._heads(x)
    if write:
      cache = append(cache, jnp.stack(ks, axis=1), jnp.stack(vs, axis=1), tokens)
    return cache, done, logits


def append(cache: Cache, k_new: jax.Array, v_new: jax.Array, tokens: jax.Array) -> Cache:
  """Writes one frame's keys/values [B, L, N, H, dh] and tokens i32[B, N] into each environment's slot
  pos mod S, overwriting the oldest frame when the ring is full."""
  b = jnp.arange(cache.pos.shape[0])
  slot = cache.pos % cache.valid.shape[1]
  # Index arrays on axes 0 and 3 with slices between: the selected [B, L, N, H, dh] block is what k_new is.
  return Cache(k=cache.k.at[b, :, :, slot].set(k_new), v=cache.v.at[b, :, :, slot].set(v_new),
               valid=cache.valid.at[b, slot].set(True), pos=cache.pos + 1, last=tokens)


def reset_cache(cache: Cache, which: jax.Array) -> Cache:
  """Empties the cache of environments where `which` bool[B] is set (a new episode)."""
  return cache.replace(valid=jnp.where(which[:, None], False, cache.valid),
                       pos=jnp.where(which, 0, cache.pos))


def param_count(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
