"""Training stages resume exactly: a run killed mid-way and re-run matches an uninterrupted run, metric for
metric; a checkpoint from an incompatible config is refused, naming the fields."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import open_dataset
from experiments.configs import world_model as wm_configs
from rsr.stages import tokenizer as stage_tokenizer
from rsr.stages import world_model as wm_stages
from rsr.world_model import tokenizer_train
from rsr.world_model.fsq import FSQ
from rsr.world_model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def setup(tiny_dataset, tmp_path_factory):
  c = wm_configs.get_config("tiny")
  c.data_dir = tiny_dataset
  ds = open_dataset(tiny_dataset)
  root = tmp_path_factory.mktemp("wm")
  straight, killed = str(root / "straight"), str(root / "killed")
  return c, ds, straight, killed


def _lines(workdir, stage):
  with open(f"{workdir}/metrics.jsonl") as f:
    return [json.loads(ln) for ln in f if json.loads(ln)["stage"] == stage]


@pytest.mark.slow
def test_tokenizer_resume_is_exact(setup):
  c, ds, straight, killed = setup
  a = stage_tokenizer.run(c, straight, ds, progress=False)
  assert stage_tokenizer.run(c, killed, ds, progress=False, max_steps_this_run=6) == {}  # "killed" at 6
  b = stage_tokenizer.run(c, killed, ds, progress=False)  # resumes from the checkpoint at step 4
  assert a == b and a["val/psnr"] > 0
  assert _lines(straight, "tokenizer") == _lines(killed, "tokenizer")
  # Training learns: held-out PSNR well above the untrained tokenizer's on the same frames.
  model = Tokenizer(stage_tokenizer.tokenizer_config(c))
  init = tokenizer_train.init_state(model, tokenizer_train.TokenizerTrainConfig(), jax.random.PRNGKey(c.seed),
                                    (16, 16))
  frames = stage_tokenizer.eval_frames(ds, "val", ("rgb",), c.tokenizer_train.eval_frames, 1)
  before = float(np.mean(tokenizer_train.make_eval(model)(init.params, frames)[0]))
  assert a["val/psnr"] > before + 2.0, (before, a["val/psnr"])


def test_incompatible_checkpoint_names_the_fields(setup):
  c, ds, straight, _ = setup
  _trained_tokenizers(c, ds, straight)
  other = c.copy_and_resolve_references()
  other.tokenizer.channels = (8, 24)
  with pytest.raises(ValueError,
                     match=r"incompatible config: tokenizer\.channels: checkpoint has \[8, 16\], config has \[8, 24\]$"):
    stage_tokenizer.run(other, straight, ds, progress=False)


def _trained_tokenizers(c, ds, *workdirs):
  for w in workdirs:  # a no-op (restores the final checkpoint) when an earlier test trained it
    stage_tokenizer.run(c, w, ds, progress=False)


@pytest.mark.slow
def test_dynamics_resume_is_exact(setup):
  c, ds, straight, killed = setup
  _trained_tokenizers(c, ds, straight, killed)
  tok_a = wm_stages.tokenize_stage(c, straight, ds, progress=False)
  tok_b = wm_stages.tokenize_stage(c, killed, ds, progress=False)
  assert tok_a.meta["fingerprint"] == tok_b.meta["fingerprint"]
  a = wm_stages.dynamics_stage(c, straight, ds, tok_a, progress=False)
  assert wm_stages.dynamics_stage(c, killed, ds, tok_b, progress=False, max_steps_this_run=5) == {}
  b = wm_stages.dynamics_stage(c, killed, ds, tok_b, progress=False)
  assert a == b
  assert _lines(straight, "dynamics") == _lines(killed, "dynamics")
  for key in ("val/psnr", "val/psnr_copy", "val/psnr_shuffled", "val/done_f1"):
    assert key in a
  assert np.isfinite(a["val/psnr"]) and a["params"] > 0
  # The error bar of the gain over copy-last-frame: paired over the held-out windows.
  assert a["val/windows"] >= 2 and 0 < a["val/gain_over_copy_ci95"] < 10, a


def test_tokenized_dataset_matches_the_tokenizer(setup):
  c, ds, straight, _ = setup
  _trained_tokenizers(c, ds, straight)
  tok = wm_stages.tokenize_stage(c, straight, ds, progress=False)  # reused: same fingerprint
  model, params, _ = wm_stages.load_tokenizer(c, straight, ds)
  e = ds.read("val", 1)
  codes = np.asarray(jax.jit(lambda x: model.apply(params, x, method=type(model).encode))(e["rgb"]))
  tokens = tok.read("val", 1)["tokens"]
  np.testing.assert_array_equal(tokens[0], codes[0].reshape(-1))  # the first frame: plain rounding
  # Later frames: hysteresis against the previous frame's levels (tokenizer.sticky_margin), by hand.
  margin = c.tokenizer.sticky_margin
  bounded = np.asarray(jax.jit(lambda x: model.apply(params, x, method=type(model).encode_bounded))(e["rgb"]))
  levels = [np.round(bounded[0])]
  for b in bounded[1:]:
    keep = np.all(np.abs(b - levels[-1]) <= 0.5 + margin, axis=-1, keepdims=True)
    levels.append(np.where(keep, levels[-1], np.round(b)))
  half = np.asarray(c.tokenizer.levels) // 2
  by_hand = np.asarray(FSQ(tuple(c.tokenizer.levels)).codes(jnp.asarray(np.stack(levels) / half)))
  np.testing.assert_array_equal(tokens, by_hand.reshape(len(by_hand), -1))
  assert margin == 0 or (tokens != codes.reshape(len(codes), -1)).any()  # the hysteresis did something
  np.testing.assert_array_equal(tok.read("val", 1)["action"], e["action"])
