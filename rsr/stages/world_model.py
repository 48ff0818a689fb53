"""The world model's stages after the tokenizer: tokenize the dataset once, then train the dynamics and
the goal model.

    tokenizer (rsr/stages/tokenizer.py) -> tokenize (tokenize_stage) -> dynamics, goal (dynamics_stage)

Each stage reads what the previous one left in the workdir (the tokenizer's latest checkpoint, the
tokenized dataset) and refuses stale inputs: the tokenized dataset carries the fingerprint of the dataset
and tokenizer checkpoint it came from.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from data_pipelines import tokenized
from data_pipelines.loader import DONE_LABELS, WindowConfig, WindowLoader
from rsr.envs.tabletop.tasks import TASKS
from rsr.rewards import learned
from rsr.stages import tokenizer as stage_tokenizer
from rsr.train import loop, sharding
from rsr.train.checkpoint import Checkpointer
from rsr.utils import checks, configs, media
from rsr.world_model import dynamics as dyn
from rsr.world_model import dynamics_train, generate, tokenizer_train
from rsr.world_model import evaluate as wm_eval
from rsr.world_model import probe as probe_lib
from rsr.world_model.fsq import FSQ
from rsr.world_model.tokenizer import Tokenizer


def check(config, stages, spec) -> None:
  """Every setting of the world-model `stages` a command will run (tokenizer, tokenize, dynamics, goal,
  reward), against the dataset's frames (`spec`: rlds.DatasetSpec) and the devices present: ValueErrors
  naming the field, before anything compiles, so that a stage running later in the same command cannot
  fail on its settings after the earlier ones trained."""
  stage_tokenizer.check(config, spec)  # every later stage loads the tokenizer these fields describe
  if {"dynamics", "goal"} & set(stages):
    check_dynamics(config, spec)
  if "reward" in stages:
    learned.check(config)


def check_dynamics(config, spec) -> None:
  """The settings WM_act and WM_goal both train with (dynamics, dynamics_train, generate, mesh)."""

  tcfg = stage_tokenizer.tokenizer_config(config)
  checks.positive(config.dynamics, "dynamics", "d_model", "layers", "heads", "mlp_ratio", "window")
  n = len(spec.cameras) * (spec.height // tcfg.downsample) * (spec.width // tcfg.downsample)
  for section, build in (("dynamics", lambda: dynamics_train.dynamics_config(config, tcfg.codebook_size, n, "action")),
                         ("generate", lambda: generate.GenerateConfig.from_config(config.generate))):
    try:
      build()
    except ValueError as e:  # the dataclasses name the field, not the config section it sits in
      raise ValueError(f"{section}.{e}") from None
  d = config.dynamics_train
  checks.positive(d, "dynamics_train", "batch_size", "steps", "lr", "grad_clip", "eval_every", "checkpoint_every",
                  "eval_windows", "eval_context", "eval_horizon", "goal_episodes", "goal_max_steps", "ramp_steps")
  checks.non_negative(d, "dynamics_train", "warmup", "weight_decay", "done_weight")
  checks.one_of(d.done_label, "dynamics_train.done_label", DONE_LABELS)
  checks.non_negative(d, "dynamics_train", "probe_horizon", "probe_steps")
  try:
    train_config(config)
  except ValueError as e:
    raise ValueError(f"dynamics_train.{e}") from None
  m = config.get("mesh", None) or {}
  checks.divides_devices(d.batch_size, "dynamics_train.batch_size", checks.mesh_model(m.get("model", 1)))


def load_tokenizer(config, workdir: str, ds) -> tuple[Tokenizer, dict, str]:
  """The trained tokenizer: (model, params, identity string for fingerprints)."""
  tcfg = stage_tokenizer.tokenizer_config(config)
  directory = os.path.join(workdir, "checkpoints", "tokenizer")
  if not os.path.isdir(directory):
    raise ValueError(f"no tokenizer checkpoint in {directory}: run the 'tokenizer' stage first")
  model = Tokenizer(tcfg)
  trn = configs.typed(tokenizer_train.TokenizerTrainConfig, config.tokenizer_train)
  target = tokenizer_train.init_state(model, trn, jax.random.PRNGKey(0), (ds.spec.height, ds.spec.width))
  ckpt = Checkpointer(directory, compat=stage_tokenizer.checkpoint_compat(config, ds))
  step = ckpt.latest_step()
  if step is None:
    raise ValueError(f"no tokenizer checkpoint in {directory}: run the 'tokenizer' stage first")
  state, _ = ckpt.restore(target)
  ckpt.close()
  return model, state.params, f"tokenizer-step{step}"


def tokenize_stage(config, workdir: str, ds, progress: bool = True) -> tokenized.TokenDataset:
  """The tokenized dataset of the trained tokenizer (built once; reused while its fingerprint holds).

  With `tokenizer.sticky_margin` > 0 every episode is quantized with hysteresis (FSQ.sticky_codes). A new
  build also writes tables/tokenize.json: per held-out split, the share of tokens equal between
  consecutive frames beside the share of token-sized pixel patches that did not change."""
  model, params, ident = load_tokenizer(config, workdir, ds)
  margin = float(config.tokenizer.sticky_margin)
  if margin:
    ident += f"-sticky{margin:g}"
  fingerprint = tokenized.source_fingerprint(ds, ident)
  out = os.path.join(workdir, "tokens")
  try:
    return tokenized.open_tokens(out, fingerprint)
  except tokenized.DatasetError:
    pass  # missing or stale: (re)build it
  latents, codes = video_quantization(config, model, params)
  per_episode = None if codes is None else jax.jit(codes)
  tokenized.tokenize(ds, lambda f: np.asarray(latents(f)), out, fingerprint, progress=progress,
                     per_episode=None if per_episode is None else (lambda b: np.asarray(per_episode(b))))
  tok_ds = tokenized.open_tokens(out, fingerprint)
  if sharding.lead():
    media.write_json(os.path.join(workdir, "tables", "tokenize.json"),
                     {"sticky_margin": margin, **stability_report(ds, tok_ds, model.config.downsample)})
  return tok_ds


def video_quantization(config, model: Tokenizer, params):
  """How the project turns video into tokens, in two parts: (latents, codes).

  latents: frames uint8[..., H, W, 3] -> per-frame latents [..., h, w, (d)], jitted (batches of frames
  from any episodes), token ids [..., h, w] themselves without hysteresis; codes: with
  `tokenizer.sticky_margin` > 0, one view's latents of T consecutive frames [T, h, w, d] -> token ids
  i32[T, h, w] by FSQ hysteresis along T, pure; None without (the latents are the ids already)."""
  margin = float(config.tokenizer.sticky_margin)
  if not margin:
    return jax.jit(lambda x: model.apply(params, x, method=Tokenizer.encode)), None
  fsq = FSQ(model.config.levels)
  return (jax.jit(lambda x: model.apply(params, x, method=Tokenizer.encode_bounded)),
          lambda b: fsq.sticky_codes(b, margin))


def video_encoder(config, model: Tokenizer, params):
  """encode(frames uint8[K, T, H, W, 3]: T consecutive frames of one view) -> token ids i32[K, T, h * w], as
  the tokenize stage encodes a video (`video_quantization`)."""
  latents, codes = video_quantization(config, model, params)

  @jax.jit
  def encode(frames):
    ids = latents(frames) if codes is None else jax.vmap(codes)(latents(frames))
    return ids.reshape(ids.shape[:2] + (-1,))

  return lambda frames: np.asarray(encode(jnp.asarray(frames)))


def stability_report(ds, tok_ds, patch: int, episodes: int = 64) -> dict:
  """Per held-out split, over its first `episodes` (tokenizer_train.token_stability): token stability (share
  of tokens equal between consecutive frames), patch stability (share of token-sized pixel patches with no
  pixel changed), flicker (share of unchanged patches whose token changed) and missed changes (share of
  changed patches whose token stayed)."""
  out = {}
  for split in [s for s in ds.splits if s == "val" or s.startswith("ood")]:
    total = collections.Counter()
    for i in range(min(episodes, ds.num_episodes(split))):
      e = ds.read(split, i)
      frames = np.stack([e[k] for k in ds.frame_keys], axis=1)
      total.update(tokenizer_train.token_stability(frames, tok_ds.read(split, i)["tokens"], patch))
    n, unchanged = total["positions"], total["unchanged"]
    if n:
      out.update({f"{split}/token_stability": total["equal"] / n, f"{split}/patch_stability": unchanged / n,
                  f"{split}/flicker": total["flicker"] / max(unchanged, 1),
                  f"{split}/missed": total["missed"] / max(n - unchanged, 1), f"{split}/frame_pairs": n})
  return out


def dynamics_stage(config, workdir: str, ds, tok_ds, progress: bool = True,
                   max_steps_this_run: int | None = None, stage: str = "dynamics") -> dict:
  """Trains WM_act (stage "dynamics") or WM_goal (stage "goal": the same network conditioned on the task
  only) on the tokenized windows; evaluates open-loop imagination and the done head, and for the goal
  model the goal images it imagines from held-out first frames."""
  if stage not in ("dynamics", "goal"):
    raise ValueError(f"stage must be 'dynamics' or 'goal', got {stage!r}")
  check_dynamics(config, ds.spec)
  tcfg = stage_tokenizer.tokenizer_config(config)
  tok_model, tok_params, _ = load_tokenizer(config, workdir, ds)
  conditioning = "action" if stage == "dynamics" else "task"
  mcfg = dynamics_train.dynamics_config(config, tcfg.codebook_size, tok_ds.tokens_per_frame, conditioning)
  model = dyn.Dynamics(mcfg)
  d = config.dynamics_train
  trn = train_config(config)
  win = WindowConfig(batch_size=d.batch_size, window=mcfg.window, done_label=d.done_label,
                     ramp_steps=d.ramp_steps)
  loader = WindowLoader(tok_ds, "train", win, seed=config.seed)
  state = dynamics_train.init_state(model, trn, jax.random.PRNGKey(config.seed + (1 if stage == "dynamics" else 2)))
  step_fn = dynamics_train.make_train_step(model, trn)
  gen = generate.GenerateConfig.from_config(config.generate)
  decode = jax.jit(lambda c: tok_model.apply(tok_params, c, method=Tokenizer.decode))
  views = len(ds.frame_keys)
  context, horizon = d.eval_context, d.eval_horizon

  held = {}
  for split in [s for s in ds.splits if s == "val" or s.startswith("ood")]:
    wcfg = dataclasses.replace(win, batch_size=d.eval_windows, window=context + horizon)
    tb = WindowLoader(tok_ds, split, wcfg, seed=7).batch(0)
    pb = WindowLoader(ds, split, wcfg, seed=7).batch(0)
    keep = wm_eval.full_windows(tb, pb)
    pix = np.stack([pb[k] for k in ds.frame_keys], axis=2)  # [B, T, V, H, W, 3]
    done_b = WindowLoader(tok_ds, split, dataclasses.replace(win, batch_size=d.eval_windows), seed=8).batch(0)
    held[split] = ({k: v[keep] for k, v in tb.items()}, pix[keep], done_b)
  last_frames, goal_images = {}, {}
  heldout_loss = wm_eval.make_heldout_loss(model, trn)

  def evaluate(state) -> dict:
    out = {}
    for split, (tb, pix, done_b) in held.items():
      if len(tb["tokens"]):
        r = wm_eval.open_loop(model, state.params, decode, tb, pix, context, horizon, gen,
                              jax.random.PRNGKey(11), views)
        last_frames[split] = (r["frames"], pix, tb["task"])
        out[f"{split}/psnr"] = float(r["psnr"].mean())
        out[f"{split}/psnr_last"] = float(r["psnr"][-1])
        out[f"{split}/psnr_copy"] = float(r["psnr_copy"].mean())
        out[f"{split}/gain_over_copy"] = out[f"{split}/psnr"] - out[f"{split}/psnr_copy"]
        if r["gain_over_copy_ci95"] is not None:
          out[f"{split}/gain_over_copy_ci95"] = float(r["gain_over_copy_ci95"])
        out[f"{split}/windows"] = r["windows"]
        out[f"{split}/tokens_changed"] = r["changed"]
        out[f"{split}/tokens_changed_real"] = r["changed_real"]
        out[f"{split}/psnr_copy_tokens"] = float(r["psnr_copy_tokens"].mean())
        out[f"{split}/psnr_anchored"] = float(r["psnr_anchored"].mean())
        out[f"{split}/gain_over_copy_anchored"] = out[f"{split}/psnr_anchored"] - out[f"{split}/psnr_copy"]
        out[f"{split}/gain_over_copy_tokens"] = out[f"{split}/psnr"] - out[f"{split}/psnr_copy_tokens"]
        if stage == "dynamics":
          out[f"{split}/psnr_shuffled"] = float(r["psnr_shuffled"].mean())
          out[f"{split}/gain_over_shuffled"] = out[f"{split}/psnr"] - out[f"{split}/psnr_shuffled"]
      dm = wm_eval.done_metrics(model, state.params, done_b)
      if done_b["mask"].any():
        hl = heldout_loss(state.params, {k: jnp.asarray(done_b[k]) for k in ("tokens", "action", "task", "done",
                                                                             "mask")})
        out.update({f"{split}/{k}": float(v) for k, v in hl.items()})
      out.update({f"{split}/done_{k}": v for k, v in dm.items() if v is not None})
      if stage == "goal":
        g = wm_eval.goal_metrics(model, state.params, decode, tok_ds, ds, split, d.goal_episodes,
                                 d.goal_max_steps, views, gen)
        goal_images[split] = g.pop("images")
        out.update({f"{split}/goal_{k}": v for k, v in g.items()})
    return out

  mesh, fsdp = sharding.config_mesh(config)
  state, last, finished = loop.run(
      stage, workdir, state, step_fn, evaluate, loop.Schedule(trn.steps, d.eval_every, d.checkpoint_every),
      dynamics_compat(config, mcfg, tok_ds.meta["fingerprint"], stage), loader=loader,
      batch_fn=lambda b: {k: b[k] for k in ("tokens", "action", "task", "done", "mask")},
      progress=progress, max_steps_this_run=max_steps_this_run, mesh=mesh, fsdp=fsdp)
  if not finished:
    return {}
  summary = {"steps": trn.steps, "params": dyn.param_count(state.params), "context": context,
             "horizon": horizon, **last}
  if stage == "dynamics" and d.probe_horizon:
    summary.update(probe_report(config, workdir, ds, tok_ds, model, state.params, decode, gen, views, progress))
  if sharding.lead():  # every process holds the same results; one writes them
    if stage == "dynamics":
      _write_videos(workdir, last_frames, context, ds)
    for split, img in goal_images.items():
      media.write_png(os.path.join(workdir, "images", f"goals_{split}.png"), img)
    media.write_json(os.path.join(workdir, "tables", f"{stage}.json"), summary)
  return summary


def state_probe(config, workdir: str, tok_ds, decode, views: int, progress: bool = True,
                max_frames: int = 20_000) -> tuple[probe_lib.ProbeConfig, Any]:
  """The state probe of this token dataset: trained once on the train split's front frames as the
  tokenizer decodes them (what the probe will read off imagined frames), then kept in WORKDIR/probe/probe.npz
  with the token fingerprint it was trained on. -> (probe config, params)."""
  d = config.dynamics_train
  cfg = probe_lib.ProbeConfig(steps=d.probe_steps)
  path = os.path.join(workdir, "probe", "probe.npz")
  tag = f"{tok_ds.meta['fingerprint']}/steps{cfg.steps}"
  side = int(np.sqrt(tok_ds.tokens_per_frame // views))
  if os.path.exists(path):
    with np.load(path) as z:
      if str(z["tag"]) == tag:
        flat = {tuple(k.split("/")): jnp.asarray(z[k]) for k in z.files if k != "tag"}
        return cfg, traverse_util.unflatten_dict(flat)
  if "state" not in tok_ds.read("train", 0):
    raise ValueError(f"{tok_ds.path} holds no simulator states (made before they were kept): delete it and "
                     "run the tokenize stage again")
  tokens, tasks, states = [], [], []
  for i in range(tok_ds.num_episodes("train")):
    e = tok_ds.read("train", i)
    tokens.append(e["tokens"][:, :side * side])
    tasks.append(e["task"])
    states.append(e["state"])
  tokens, tasks, states = np.concatenate(tokens), np.concatenate(tasks), np.concatenate(states)
  pick = np.random.default_rng(config.seed).permutation(len(tokens))[:max_frames]
  frames = np.concatenate([
      np.asarray(jnp.clip(decode(jnp.asarray(tokens[c].reshape(-1, side, side))) * 255.0 + 0.5, 0, 255)
                 ).astype(np.uint8) for c in np.array_split(pick, max(1, len(pick) // 256))])
  params = probe_lib.train(cfg, frames, tasks[pick], probe_lib.positions(states[pick]),
                           jax.random.PRNGKey(config.seed + 5), progress=progress)
  if sharding.lead():
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    media.write_npz(path, {**flat, "tag": np.asarray(tag)})
  return cfg, params


def probe_report(config, workdir: str, ds, tok_ds, model: dyn.Dynamics, params, decode,
                 gen: generate.GenerateConfig, views: int, progress: bool = True) -> dict:
  """The state probe on `probe_horizon`-step open loops from `eval_context` real frames of each held-out
  split (wm_eval.probe_open_loop): {"SPLIT/probe_OBJECT_KIND": per-step cm, ..._final: the last step}."""
  d = config.dynamics_train
  probe_cfg, probe_params = state_probe(config, workdir, tok_ds, decode, views, progress)
  predict = probe_lib.make_predict(probe_cfg)
  context, horizon = d.eval_context, d.probe_horizon
  run = wm_eval.make_rollout(model, context, horizon, gen)
  replay = wm_eval.make_replay(model)
  out = {"probe_horizon": horizon}
  for split in [s for s in ds.splits if s == "val" or s.startswith("ood")]:
    wcfg = WindowConfig(batch_size=d.eval_windows, window=context + horizon, with_state=True)
    tb = WindowLoader(tok_ds, split, wcfg, seed=9).batch(0)
    keep = np.flatnonzero(tb["mask"].all(axis=1))
    if not len(keep):
      continue
    held = {k: v[keep] for k, v in tb.items()}
    r = wm_eval.probe_open_loop(run, params, decode, predict, probe_params, held, context, views,
                                jax.random.PRNGKey(13))
    out[f"{split}/probe_windows"] = int(len(keep))
    for k in ("auc", "auc_horizon", "auc_within", "diverged"):
      out[f"{split}/guard_{k}"] = r.pop(f"guard/{k}")
    replayed = np.asarray(jax.nn.sigmoid(replay(params, jnp.asarray(held["tokens"], jnp.int32),
                                                jnp.asarray(held["action"]), jnp.asarray(held["task"]))))
    dr = wm_eval.done_open_loop(r.pop("imagined_done"), replayed[:, context:], held["done"][:, context:])
    out.update({f"{split}/done_open_loop_{k}": v for k, v in dr.items() if v is not None})
    for k, v in r.items():
      name = f"{split}/{k.replace('/', '_')}"
      out[name] = [round(float(x), 3) for x in v]
      out[f"{name}_final"] = float(v[-1])
  return out


def train_config(config) -> dynamics_train.DynamicsTrainConfig:
  return configs.typed(dynamics_train.DynamicsTrainConfig, config.dynamics_train)


def dynamics_compat(config, mcfg: dyn.DynamicsConfig, tokens: str, stage: str) -> dict:
  """What a dynamics checkpoint must agree on with what loads it; tokens: the token dataset's fingerprint."""
  # remat computes the same function; f32 is what checkpoints written before `dtype` existed hold.
  # Switches at their old default are left out, so checkpoints written before a switch existed still load.
  defaults = {"dtype": "float32", "action_film": False, "output": "codes", "levels": ()}
  arch = {k: v for k, v in dataclasses.asdict(mcfg).items()
          if k != "remat" and not (k in defaults and v == defaults[k])}
  return {stage: arch, "batch_size": config.dynamics_train.batch_size, "seed": config.seed,
          "tokens": tokens}


def load_dynamics(config, workdir: str, tok_ds, vocab: int, stage: str = "dynamics", directory: str | None = None,
                  compat: dict | None = None) -> tuple[dyn.Dynamics, dict]:
  """The trained WM_act (stage "dynamics") or WM_goal ("goal"): (model, params) of the latest checkpoint;
  a ValueError when there is none or it does not match the config and tokens. directory / compat: another
  run of the same network (WORKDIR/checkpoints/STAGE and dynamics_compat by default; the Dyna loop's
  fine-tuned rounds give theirs)."""
  conditioning = "action" if stage == "dynamics" else "task"
  mcfg = dynamics_train.dynamics_config(config, vocab, tok_ds.tokens_per_frame, conditioning)
  model = dyn.Dynamics(mcfg)
  directory = directory or os.path.join(workdir, "checkpoints", stage)
  missing = f"no {stage} checkpoint in {directory}: run the {stage!r} stage first"
  if not os.path.isdir(directory):
    raise ValueError(missing)
  compat = dynamics_compat(config, mcfg, tok_ds.meta["fingerprint"], stage) if compat is None else compat
  ckpt = Checkpointer(directory, compat=compat)
  try:
    if ckpt.latest_step() is None:
      raise ValueError(missing)
    target = dynamics_train.init_state(model, train_config(config), jax.random.PRNGKey(0))
    state, _ = ckpt.restore(target)
  finally:
    ckpt.close()
  return model, state.params


def _write_videos(workdir: str, last_frames: dict, context: int, ds) -> None:
  """videos/imagined_SPLIT_TASK.gif: real (left) | imagined (right) for one held-out window per task."""

  names = {t.task_id: n for n, t in TASKS.items()}
  for split, (frames, pix, task) in last_frames.items():
    for tid in sorted(set(np.asarray(task).tolist())):
      i = int(np.flatnonzero(np.asarray(task) == tid)[0])
      real = pix[i, context:, 0]  # front view
      fake = (np.clip(frames[i, :, 0], 0, 1) * 255).round().astype(np.uint8)
      zoom = max(1, -(-96 // ds.spec.height))
      video = np.stack([media.upscale(np.concatenate([r, f], axis=1), zoom) for r, f in zip(real, fake, strict=True)])
      media.write_gif(os.path.join(workdir, "videos", f"imagined_{split}_{names[tid]}.gif"), video, fps=4)
