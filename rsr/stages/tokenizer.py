"""The `tokenizer` stage of experiments.train_world_model: the FSQ autoencoder trained on every camera's
frames of the dataset's train split (resumable; the maths are rsr/world_model/tokenizer_train.py).

    run(config, workdir, ds)   WORKDIR/checkpoints/tokenizer, images/tokenizer_recon.png, tables/tokenizer.json

`tokenizer_config` reads the model's fields from a world-model config; every later stage loads this
tokenizer, so `check` is theirs too.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import rlds
from data_pipelines.loader import WindowConfig, WindowLoader
from rsr.train import loop, sharding
from rsr.utils import checks, configs, media
from rsr.world_model.tokenizer import Tokenizer, TokenizerConfig
from rsr.world_model.tokenizer_train import TokenizerTrainConfig, init_state, make_eval, make_train_step, perplexity


def tokenizer_config(config) -> TokenizerConfig:
  """The TokenizerConfig of a world_model.py config."""
  return configs.typed(TokenizerConfig, config.tokenizer)


def check(config, spec) -> None:
  """Every tokenizer setting, against the dataset's frames (`spec`: rlds.DatasetSpec) and the devices
  present: ValueErrors naming the field, before anything compiles. The later stages load this tokenizer,
  so they check its model fields too."""

  tok = config.tokenizer
  channels = checks.positive_ints(tok.channels, "tokenizer.channels")
  checks.positive_ints(tok.levels, "tokenizer.levels", least=2)
  checks.non_negative(tok, "tokenizer", "res_blocks", "sticky_margin")
  try:
    tokenizer_config(config)
  except ValueError as e:
    raise ValueError(f"tokenizer.{e}") from None
  down = 2 ** len(channels)
  if spec.height % down or spec.width % down:
    raise ValueError(f"tokenizer.channels has {len(channels)} stages (downsampling by {down}), which does not "
                     f"divide the dataset's {spec.height}x{spec.width} frames")
  t = config.tokenizer_train
  checks.positive(t, "tokenizer_train", "batch_size", "steps", "lr", "grad_clip", "eval_every", "checkpoint_every",
                  "eval_frames")
  checks.non_negative(t, "tokenizer_train", "warmup", "weight_decay")
  m = config.get("mesh", None) or {}
  devices = checks.mesh_model(m.get("model", 1))
  checks.divides_devices(t.batch_size, "tokenizer_train.batch_size", devices)


def checkpoint_compat(config, ds) -> dict:
  """What a tokenizer checkpoint must agree on to be resumed or loaded: model, frames, batch, seed."""
  model = dataclasses.asdict(tokenizer_config(config))
  if model["norm"] == "group":  # what checkpoints written before `norm` existed hold
    del model["norm"]
  return {"tokenizer": model, "image": [ds.spec.height, ds.spec.width],
          "cameras": list(ds.frame_keys), "batch_size": config.tokenizer_train.batch_size, "seed": config.seed}


def _frames(batch: dict, cameras: tuple[str, ...]) -> np.ndarray:
  """Window batch (T = 1) -> uint8[B * views, H, W, 3]: every camera view is a frame of its own."""
  xp = jnp if isinstance(batch[cameras[0]], jax.Array) else np  # global arrays on a mesh stay on it
  return xp.concatenate([batch[k][:, 0] for k in cameras], axis=0)


def eval_frames(ds, split: str, cameras: tuple[str, ...], n: int, seed: int) -> np.ndarray:
  """The held-out frames the tokenizer is scored on: about n of `split` (seeded) -> uint8[n', H, W, 3]."""
  per = max(1, n // len(cameras))
  return _frames(WindowLoader(ds, split, WindowConfig(batch_size=per, window=1), seed=seed).batch(0), cameras)


def run(config, workdir: str, ds, progress: bool = True, max_steps_this_run: int | None = None) -> dict:
  """Trains (or resumes) the tokenizer stage from `config` (world_model.py's ConfigDict) on `ds`.

  Writes WORKDIR/checkpoints/tokenizer (orbax), metrics.jsonl lines of stage "tokenizer",
  images/tokenizer_recon.png (held-out frames | reconstructions) and tables/tokenizer.json.
  `max_steps_this_run` stops early without finishing, as a kill would (tests of resume use it).
  Returns the final held-out metrics.
  """
  tcfg = tokenizer_config(config)
  t = config.tokenizer_train
  trn = configs.typed(TokenizerTrainConfig, t)
  check(config, ds.spec)
  h, w = ds.spec.height, ds.spec.width
  cameras = tuple(rlds.camera_key(c) for c in ds.spec.cameras)
  loader = WindowLoader(ds, "train", WindowConfig(batch_size=trn.batch_size, window=1), seed=config.seed)
  model = Tokenizer(tcfg)
  state = init_state(model, trn, jax.random.PRNGKey(config.seed), (h, w))
  step_fn = make_train_step(model, trn)
  eval_fn = make_eval(model)
  ood_split = next((s for s in ds.splits if s.startswith("ood")), None)
  held = {"val": eval_frames(ds, "val", cameras, t.eval_frames, 1)} if "val" in ds.splits else {}
  if ood_split:
    held[ood_split] = eval_frames(ds, ood_split, cameras, t.eval_frames, 1)

  def evaluate(state) -> dict:
    out = {}
    for name, frames in held.items():
      p, codes = eval_fn(state.params, frames)
      out[f"{name}/psnr"] = float(np.mean(p))
      out[f"{name}/perplexity"] = perplexity(np.asarray(codes), tcfg.codebook_size)
    return out

  mesh, fsdp = sharding.config_mesh(config)
  state, last, finished = loop.run(
      "tokenizer", workdir, state, step_fn, evaluate, loop.Schedule(trn.steps, t.eval_every, t.checkpoint_every),
      checkpoint_compat(config, ds), loader=loader, batch_fn=lambda b: _frames(b, cameras), progress=progress,
      max_steps_this_run=max_steps_this_run, mesh=mesh, fsdp=fsdp)
  if not finished:
    return {}
  rows = []
  for name, frames in held.items():
    recon = np.asarray(jax.jit(lambda p, x: model.apply(p, x)[0])(state.params, frames[:8]))
    recon = (np.clip(recon, 0, 1) * 255).round().astype(np.uint8)
    zoom = max(1, -(-96 // h))
    rows.append([media.label(media.grid([[media.upscale(f, zoom) for f in frames[:8]],
                                         [media.upscale(f, zoom) for f in recon]]), f"{name}: real / recon")])
  summary = {"steps": trn.steps, "codebook_size": tcfg.codebook_size, **last}
  if sharding.lead():  # every process holds the same results; one writes them
    if rows:
      media.write_png(os.path.join(workdir, "images", "tokenizer_recon.png"), media.grid(rows, pad=4))
    media.write_json(os.path.join(workdir, "tables", "tokenizer.json"), summary)
  return summary
