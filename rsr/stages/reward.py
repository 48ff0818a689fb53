"""The `reward` stage of experiments.train_world_model: the reward head of the exogenous-reward baseline
(rsr/rewards/learned.py) trained on the tokenized dataset's handcrafted rewards (resumable), with the
held-out reports: MSE and R^2 on `val` and every `ood*` split, and, given the tokenizer's alignment term,
how both rewards follow the handcrafted one (rsr/rewards/quality.py).

    run(config, workdir, tok_ds)   WORKDIR/checkpoints/reward, tables/reward.json

Settings come from the world-model config's `reward_head` group.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.loader import WindowConfig, WindowLoader
from rsr.rewards import learned, quality
from rsr.rewards.learned import RewardHead, RewardHeadConfig, held_out_metrics, init_state, make_train_step, transitions
from rsr.stages import tokenizer as stage_tokenizer
from rsr.stages import world_model as wm_stages
from rsr.train import loop
from rsr.train.checkpoint import Checkpointer
from rsr.train.state import TrainState
from rsr.utils import configs, media
from rsr.world_model import generate

STAGE = "reward"


def _held_out(tok_ds, split: str, max_windows: int) -> dict[str, np.ndarray]:
  """Up to `max_windows` distinct transitions of `split` (one batch of the first epoch's order), valid only."""
  probe = WindowLoader(tok_ds, split, WindowConfig(batch_size=1, window=2), seed=7)
  n = min(max_windows, probe.num_windows)
  b = transitions(WindowLoader(tok_ds, split, WindowConfig(batch_size=n, window=2), seed=7).batch(0))
  return {k: v[b["mask"]] for k, v in b.items()}


def run(config, workdir: str, tok_ds, progress: bool = True,
        max_steps_this_run: int | None = None, align: Callable | None = None,
        imagine: Callable | None = None) -> dict:
  """Trains the reward head (stage "reward") on `tok_ds` (a `TokenDataset`); returns the summary written
  to WORKDIR/tables/reward.json, or {} when stopped early by `max_steps_this_run`.

  align, imagine: `for_world_model(...)`; with align the summary adds, per held-out split, the rank
  correlations of the endogenous alignment term and of the head with the handcrafted reward
  (`{split}/align_spearman`, `{split}/head_spearman`, their `_within` forms, `{split}/quality_episodes`,
  `{split}/quality_steps`); with imagine too, those of the endogenous reward on imagined frames
  (`{split}/imagined_align_spearman`, `{split}/imagined_reward_spearman`, ...)."""

  learned.check(config)
  s = learned.settings(config)
  vocab = stage_tokenizer.tokenizer_config(config).codebook_size
  hcfg = learned.head_config(config, vocab, tok_ds.tokens_per_frame)
  model = RewardHead(hcfg)
  loader = WindowLoader(tok_ds, "train", WindowConfig(batch_size=s["batch_size"], window=2), seed=config.seed)
  state = init_state(model, s, jax.random.PRNGKey(config.seed + 3))
  step_fn = make_train_step(model, s)
  held = {split: _held_out(tok_ds, split, s["eval_windows"])
          for split in tok_ds.splits if split == "val" or split.startswith("ood")}
  predict = jax.jit(model.apply)

  def evaluate(state: TrainState) -> dict:
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
    from tqdm.auto import tqdm

    # With imagine each split runs an open loop per episode after the head's own bar: show that it runs.
    for split in tqdm(list(held), desc="reward quality", unit="split", disable=not progress, dynamic_ncols=True):
      q = quality.reward_quality(align, tok_ds, split, s["quality_episodes"], head, imagine,
                                 context=config.dynamics_train.eval_context)
      summary.update({f"{split}/{'quality_' if k in ('episodes', 'steps') else ''}{k}": v for k, v in q.items()})
  media.write_json(os.path.join(workdir, "tables", f"{STAGE}.json"), summary)
  return summary


def _compat(config, hcfg: RewardHeadConfig, s: dict, tok_ds) -> dict:
  """What a reward checkpoint must agree on to be resumed: the model, the batch, the seed, the tokens."""
  return {STAGE: dataclasses.asdict(hcfg), "batch_size": s["batch_size"], "seed": config.seed,
          "tokens": tok_ds.meta.get("fingerprint")}


def load(config, workdir: str, vocab: int, tokens_per_frame: int) -> tuple[RewardHead, Any]:
  """The trained reward head of WORKDIR: (model, params) of the latest "reward" checkpoint.

  Raises a ValueError when there is none, or when it was trained with another head configuration."""
  directory = os.path.join(workdir, "checkpoints", STAGE)
  compat_path = os.path.join(directory, "compat.json")
  missing = ValueError(f"no reward-head checkpoint in {directory}: run the 'reward' stage first")
  if not os.path.isfile(compat_path):
    raise missing
  hcfg = learned.head_config(config, vocab, tokens_per_frame)
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
    state, _ = ckpt.restore(init_state(model, learned.settings(config), jax.random.PRNGKey(0)))
  finally:
    ckpt.close()
  return model, state.params


def for_world_model(config, workdir: str, ds, tok_ds) -> tuple[Callable, Callable | None]:
  """(align, imagine) of a world-model workdir for the reward stage: the trained tokenizer's alignment
  term, and the trained dynamics model's open loop (None while there is no dynamics checkpoint yet)."""

  tok_model, tok_params, _ = wm_stages.load_tokenizer(config, workdir, ds)
  align = quality.make_alignment(tok_model, tok_params, len(ds.frame_keys))
  if not os.path.isdir(os.path.join(workdir, "checkpoints", "dynamics")):
    return align, None
  vocab = stage_tokenizer.tokenizer_config(config).codebook_size
  model, params = wm_stages.load_dynamics(config, workdir, tok_ds, vocab, "dynamics")
  gen = generate.GenerateConfig.from_config(config.generate)
  return align, quality.make_imagine(model, params, config.dynamics_train.eval_context, gen, jax.random.PRNGKey(13))
