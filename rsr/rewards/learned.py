"""The exogenous-reward baseline: a reward head trained on the dataset's handcrafted rewards.

Inside the world model there is no simulator to ask for a reward; this head predicts it from the imagined
frame's tokens instead. Dataset step t holds the reward the action at frame t earned, a function of the
frame it led to, so the head learns reward[t] from the tokens of frame t + 1 (windows of 2 frames):

    tokens i32[B, N] of frame t+1, task i32[B] -> reward f32[B]

Model (cheap: it runs at every imagined step): token + position + task embeddings, a per-token layer that
mixes the task into every token, then two readouts, the mean over tokens (what is in the frame) and a few
numbers per token flattened (where it is), into a one-hidden-layer MLP.

Stage "reward" (resumable, like the world model's stages): trains on the tokenized dataset's `train`
split, reports MSE and R^2 (explained variance) on `val` and every `ood*` split, checkpoints to
WORKDIR/checkpoints/reward and writes WORKDIR/tables/reward.json; given the tokenizer's alignment term, the
table also holds how both rewards follow the handcrafted one on held-out episodes (`quality.py`). Settings
come from the world-model config's `reward_head` group; a missing field takes `TRAIN_DEFAULTS`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from data_pipelines.loader import WindowConfig, WindowLoader
from rsr.rewards import quality
from rsr.train import loop
from rsr.train.checkpoint import Checkpointer
from rsr.train.optim import adamw_cosine
from rsr.utils import checks, configs, media
from rsr.world_model import tokenizer_train

STAGE = "reward"


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
  s = settings(config)
  return RewardHeadConfig(vocab=int(vocab), tokens_per_frame=int(tokens_per_frame), d_model=s["d_model"],
                          hidden=s["hidden"]).validate()


@struct.dataclass
class RewardState:
  step: jax.Array  # i32[]
  params: Any
  opt_state: Any


def _optimizer(s: dict) -> optax.GradientTransformation:
  return adamw_cosine(s["lr"], s["warmup"], s["steps"], s["weight_decay"], s["grad_clip"])


def init_state(model: RewardHead, s: dict, key: jax.Array) -> RewardState:
  c = model.cfg
  params = model.init(key, jnp.zeros((1, c.tokens_per_frame), jnp.int32), jnp.zeros((1,), jnp.int32))
  return RewardState(step=jnp.zeros((), jnp.int32), params=params, opt_state=_optimizer(s).init(params))


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

  def step(state: RewardState, batch: dict) -> tuple[RewardState, dict]:
    (_, metrics), grads = jax.value_and_grad(lambda p: reward_head_loss(model, p, batch), has_aux=True)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), metrics

  return jax.jit(step, donate_argnums=0)


def _held_out(tok_ds, split: str, max_windows: int) -> dict[str, np.ndarray]:
  """Up to `max_windows` distinct transitions of `split` (one batch of the first epoch's order), valid only."""
  probe = WindowLoader(tok_ds, split, WindowConfig(batch_size=1, window=2), seed=7)
  n = min(max_windows, probe.num_windows)
  b = transitions(WindowLoader(tok_ds, split, WindowConfig(batch_size=n, window=2), seed=7).batch(0))
  return {k: v[b["mask"]] for k, v in b.items()}


def held_out_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
  """{mse, r2} of predictions against rewards (r2 left out when the rewards are constant)."""
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  mse = float(np.mean((pred - target) ** 2))
  var = float(np.var(target))
  return {"mse": mse, **({"r2": 1.0 - mse / var} if var > 0 else {})}


def reward_stage(config, workdir: str, tok_ds, progress: bool = True,
                 max_steps_this_run: int | None = None, align: Callable | None = None,
                 imagine: Callable | None = None) -> dict:
  """Trains the reward head (stage "reward") on `tok_ds` (a `TokenDataset`); returns the summary written
  to WORKDIR/tables/reward.json, or {} when stopped early by `max_steps_this_run`.

  align, imagine: `quality.for_world_model(...)`; with align the summary adds, per held-out split, the rank
  correlations of the endogenous alignment term and of the head with the handcrafted reward
  (`{split}/align_spearman`, `{split}/head_spearman`, their `_within` forms, `{split}/quality_episodes`,
  `{split}/quality_steps`); with imagine too, those of the endogenous reward on imagined frames
  (`{split}/imagined_align_spearman`, `{split}/imagined_reward_spearman`, ...)."""

  check(config)
  s = settings(config)
  vocab = tokenizer_train.tokenizer_config(config).codebook_size
  hcfg = head_config(config, vocab, tok_ds.tokens_per_frame)
  model = RewardHead(hcfg)
  loader = WindowLoader(tok_ds, "train", WindowConfig(batch_size=s["batch_size"], window=2), seed=config.seed)
  state = init_state(model, s, jax.random.PRNGKey(config.seed + 3))
  step_fn = make_train_step(model, s)
  held = {split: _held_out(tok_ds, split, s["eval_windows"])
          for split in tok_ds.splits if split == "val" or split.startswith("ood")}
  predict = jax.jit(model.apply)

  def evaluate(state: RewardState) -> dict:
    out = {}
    for split, b in held.items():
      if len(b["reward"]):
        m = held_out_metrics(predict(state.params, b["tokens"], b["task"]), b["reward"])
        out.update({f"{split}/reward_{k}": v for k, v in m.items()})
    return out

  state, last, finished = loop.run(
      STAGE, workdir, state, step_fn, evaluate, loop.Schedule(s["steps"], s["eval_every"], s["checkpoint_every"]),
      _compat(config, hcfg, s, tok_ds), loader=loader, batch_fn=transitions, progress=progress,
      max_steps_this_run=max_steps_this_run)
  if not finished:
    return {}
  params = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(state.params)))
  summary = {"steps": s["steps"], "params": params, **last}
  if align is not None:
    head = lambda t, k: predict(state.params, jnp.asarray(t, jnp.int32), jnp.asarray(k, jnp.int32))  # noqa: E731
    for split in held:
      q = quality.reward_quality(align, tok_ds, split, s["quality_episodes"], head, imagine,
                                 context=config.dynamics_train.eval_context)
      summary.update({f"{split}/{'quality_' if k in ('episodes', 'steps') else ''}{k}": v for k, v in q.items()})
  media.write_json(os.path.join(workdir, "tables", f"{STAGE}.json"), summary)
  return summary


def _compat(config, hcfg: RewardHeadConfig, s: dict, tok_ds) -> dict:
  """What a reward checkpoint must agree on to be resumed: the model, the batch, the seed, the tokens."""
  return {STAGE: dataclasses.asdict(hcfg), "batch_size": s["batch_size"], "seed": config.seed,
          "tokens": tok_ds.meta.get("fingerprint")}


def load_reward_head(config, workdir: str, vocab: int, tokens_per_frame: int) -> tuple[RewardHead, Any]:
  """The trained reward head of WORKDIR: (model, params) of the latest "reward" checkpoint.

  Raises a ValueError when there is none, or when it was trained with another head configuration."""
  directory = os.path.join(workdir, "checkpoints", STAGE)
  compat_path = os.path.join(directory, "compat.json")
  missing = ValueError(f"no reward-head checkpoint in {directory}: run the 'reward' stage first")
  if not os.path.isfile(compat_path):
    raise missing
  hcfg = head_config(config, vocab, tokens_per_frame)
  with open(compat_path) as f:
    stored = json.load(f)
  bad = configs.differences(stored.get(STAGE, {}), configs.plain(dataclasses.asdict(hcfg)))
  if bad:
    raise ValueError(f"the reward head in {directory} comes from an incompatible config: "
                     + "; ".join(f"{k}: checkpoint has {a!r}, config has {b!r}" for k, a, b in bad))
  ckpt = Checkpointer(directory, compat=stored)  # the stored fields: only the head must match to load
  try:
    if ckpt.latest_step() is None:
      raise missing
    model = RewardHead(hcfg)
    state, _ = ckpt.restore(init_state(model, settings(config), jax.random.PRNGKey(0)))
  finally:
    ckpt.close()
  return model, state.params
