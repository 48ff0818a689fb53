"""Held-out evaluation of the dynamics model: open-loop imagination, action control, the done head.

Open loop: from C real context frames (their tokens) and the REAL actions, imagine H frames (MaskGIT with
the cache), decode them and compare with the real frames (PSNR per imagined step). Two references:
  copy-last-frame: every future frame predicted as the last real context frame (a MaskGIT world model
    that ignores actions and copies collapses to this; beating it is the first sign of dynamics), in
    pixels (`psnr_copy`) and through the tokenizer (`psnr_copy_tokens`: the last context frame's tokens
    decoded, so that both sides carry the same reconstruction error and only dynamics differ);
  shuffled actions: the same context with another window's actions; real actions must do better if the
    model listens to its actions (action control).
Done head: teacher-forced (unmasked real tokens) done probabilities on every valid frame of held-out
windows against the step labels: AUC and F1 at 0.5.
Held-out loss: the training objective (masked-token cross-entropy, weights and all) and its accuracies on
held-out windows under one fixed mask draw, the counterpart of train/ce: a held-out ce that rises while
train/ce falls is the dynamics memorising its train episodes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rsr.utils import media
from rsr.world_model import dynamics as dyn
from rsr.world_model import dynamics_train, generate
from rsr.world_model import probe as probe_lib
from rsr.world_model.tokenizer_train import psnr


def _observe(model: dyn.Dynamics, params, tokens, actions, task, frames: int):
  """Real frames 0..frames-1 (tokens [B, >= frames, N]) fed one at a time into a fresh cache, frame t with
  action t - 1: (cache, done logits f32[frames, B])."""
  b = tokens.shape[0]

  def obs(cache, t):
    prev = actions[:, jnp.maximum(t - 1, 0)] * (t > 0)
    cache, done, _ = model.apply(params, cache, tokens[:, t], prev, jnp.full((b,), t > 0), task,
                                 method=dyn.Dynamics.observe)
    return cache, done

  return jax.lax.scan(obs, dyn.init_cache(model.cfg, b), jnp.arange(frames))


def make_rollout(model: dyn.Dynamics, context: int, horizon: int, gen: generate.GenerateConfig):
  """Jitted (params, tokens f32[B, C, N], actions f32[B, C + H, A], task i32[B], key)
  -> (imagined tokens i32[B, H, N], done logits f32[B, H], confidence f32[B, H] (generate.Imagined))."""

  @jax.jit
  def run(params, tokens, actions, task, key):
    cache, _ = _observe(model, params, tokens, actions, task, context)

    def step(carry, h):
      cache, key = carry
      key, k = jax.random.split(key)
      cache, tok, done, conf = generate.imagine(model, params, cache, actions[:, context - 1 + h], task, k, gen)
      return (cache, key), (tok, done, conf)

    _, out = jax.lax.scan(step, (cache, key), jnp.arange(horizon))
    return tuple(jnp.swapaxes(x, 0, 1) for x in out)

  return run


def full_windows(batch_tok: dict, batch_pix: dict) -> np.ndarray:
  """Indices of windows with no padding (both loaders sample the same windows of the same episodes)."""
  assert np.array_equal(batch_tok["episode"], batch_pix["episode"])
  assert np.array_equal(batch_tok["start"], batch_pix["start"])
  return np.flatnonzero(batch_tok["mask"].all(axis=1))


def open_loop(model, params, decode, tok_batch: dict, pix_frames: np.ndarray, context: int, horizon: int,
              gen: generate.GenerateConfig, key: jax.Array, views: int) -> dict:
  """PSNR per imagined step for real actions, shuffled actions, and the copy-last-frame baseline, the
  half-width of a 95% normal interval of the mean per-window gain over copy-last-frame, and the share of
  tokens an imagined step changes ("changed") beside the real frames' ("changed_real").

  tok_batch: windows of C + H frames (tokens, action, task); pix_frames uint8[B, C + H, V, H, W, 3].
  decode: token ids i32[..., h, w] -> f32[..., H, W, 3] in [0, 1].
  """
  run = make_rollout(model, context, horizon, gen)
  tokens = jnp.asarray(tok_batch["tokens"][:, :context], jnp.int32)
  actions = jnp.asarray(tok_batch["action"])
  task = jnp.asarray(tok_batch["task"])
  real = pix_frames[:, context:].astype(np.float32) / 255.0  # [B, H, V, Hp, Wp, 3]
  b = tokens.shape[0]
  side = int(np.sqrt(model.cfg.tokens_per_frame // views))

  def score(acts):
    toks, _, _ = run(params, tokens, acts, task, key)
    frames = np.asarray(decode(toks.reshape(b, horizon, views, side, side)))
    return np.asarray(psnr(jnp.asarray(frames), jnp.asarray(real))), toks, frames

  p_true, toks, frames = score(actions)  # PSNR f32[B, H, V]
  p_shuf, _, _ = score(jnp.roll(actions, 1, axis=0))
  last = pix_frames[:, context - 1:context].astype(np.float32) / 255.0
  p_copy = np.asarray(psnr(jnp.asarray(np.broadcast_to(last, real.shape)), jnp.asarray(real)))
  last_tok = np.asarray(decode(tokens[:, context - 1].reshape(b, 1, views, side, side)))
  p_copy_tok = np.asarray(psnr(jnp.asarray(np.broadcast_to(last_tok, real.shape)), jnp.asarray(real)))
  p_anchored = np.asarray(psnr(jnp.asarray(anchored(frames, last_tok, last)), jnp.asarray(real)))
  # Motion: the share of tokens an imagined step changes from the frame before it, beside the real frames'
  # (a model that imagines standing still changes almost none, whatever its PSNR).
  toks = np.asarray(toks)
  before = np.concatenate([np.asarray(tokens[:, context - 1:]), toks[:, :-1]], axis=1)
  real_tok = np.asarray(tok_batch["tokens"][:, context - 1:])
  changed, changed_real = (toks != before).mean(), (real_tok[:, 1:] != real_tok[:, :-1]).mean()
  # Windows are the independent samples: the paired per-window gain gives the comparison its error bar.
  gain = (p_true - p_copy).mean(axis=(1, 2))
  ci = ci95(gain)
  per_step = lambda p: p.mean(axis=(0, 2))  # noqa: E731
  return {"psnr": per_step(p_true), "psnr_shuffled": per_step(p_shuf), "psnr_copy": per_step(p_copy),
          "psnr_copy_tokens": per_step(p_copy_tok), "psnr_anchored": per_step(p_anchored),
          "gain_over_copy_ci95": ci, "windows": b, "frames": frames,
          "changed": float(changed), "changed_real": float(changed_real)}


def ci95(samples: np.ndarray):
  """The 95% half-width of the mean of samples [N, ...] over axis 0 (normal approximation); None for N < 2."""
  n = len(samples)
  return 1.96 * samples.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else None


def anchored(decoded, anchor_decoded, anchor_real):
  """Imagined frames rendered against a real anchor frame: anchor_real + (decoded - anchor_decoded), in
  [0, 1]. The tokenizer's error on the anchor cancels wherever the imagined tokens decode as the anchor's
  did (the static scene), and only the predicted changes are drawn by the decoder."""
  return np.clip(anchor_real + (decoded - anchor_decoded), 0.0, 1.0)


# An imagined step has left its real episode when the state probe reads its frame this far (cm) from the real
# frame's reading: about twice the probe's own error on real held-out frames of the cpu preset (~2-3 cm).
DIVERGED_CM = 5.0
# Where imagination ends an episode as a success and the endogenous reward pays its bonus (the paper's 0.9:
# WMEnvConfig.done_threshold, RewardConfig.tau).
DONE_TAU = 0.9


def probe_open_loop(run, params, decode, predict, probe_params, tok_batch: dict, context: int, views: int,
                    key: jax.Array) -> dict:
  """The state probe (rsr/world_model/probe.py) on imagined frames: per imagined step, the error (cm) of the
  gripper and of cube_a read off the imagined frame, against the simulator's positions, with three
  references: the probe on the real frame's tokens (its own floor), on the last context frame held still
  (copy-last-frame) and on imagination driven by another window's actions (shuffled).

  run: `make_rollout(model, context, horizon, ...)`; tok_batch: full windows of C + H frames (tokens,
  action, task, state); predict: probe.make_predict(...). Returns {"probe/<object>_<kind>": f32[H],
  "guard/auc": the AUC of the rollout's summed surprise for diverged steps (None with one class),
  "guard/auc_horizon": the step count's, "guard/auc_within": at each step (mean), "guard/diverged": the
  share of imagined steps that diverged}."""
  tokens = jnp.asarray(tok_batch["tokens"], jnp.int32)
  actions, task = jnp.asarray(tok_batch["action"]), jnp.asarray(tok_batch["task"])
  b, t, n = tokens.shape
  side = int(np.sqrt(n // views))
  horizon = t - context
  front = lambda tok: decode(tok[..., :side * side].reshape(tok.shape[:-1] + (side, side)))  # noqa: E731
  target = probe_lib.positions(np.asarray(tok_batch["state"])[:, context:])  # [B, H, O, 3]
  task_h = jnp.broadcast_to(task[:, None], (b, horizon))
  read = lambda frames: np.asarray(predict(probe_params, frames, task_h))  # noqa: E731
  imagined, done_logit, confidence = run(params, tokens[:, :context], actions, task, key)
  shuffled, _, _ = run(params, tokens[:, :context], jnp.roll(actions, 1, axis=0), task, key)
  last = jnp.broadcast_to(tokens[:, context - 1:context], (b, horizon, n))
  out, seen, errs = {}, {}, {}
  for kind, frames_tokens in (("imagined", imagined), ("shuffled", shuffled), ("copy", last),
                              ("real", tokens[:, context:])):
    seen[kind] = read(front(frames_tokens))
    errs[kind] = probe_lib.errors_cm(seen[kind], target)
    for obj in ("gripper", "cube_a"):
      out[f"probe/{obj}_{kind}"] = errs[kind][obj].mean(axis=0)
  # How much closer the true actions bring the imagined object than shuffled actions or standing still, per
  # window (paired: same windows, same draws), with the 95% half-width of its mean over the windows.
  for obj in ("gripper", "cube_a"):
    for ref in ("shuffled", "copy"):
      gain = errs[ref][obj] - errs["imagined"][obj]  # [B, H] cm
      out[f"probe/{obj}_gain_over_{ref}"] = gain.mean(axis=0)
      if b > 1:
        out[f"probe/{obj}_gain_over_{ref}_ci95"] = ci95(gain)
  # The exploit guard's test: does the rollout's surprise (summed -log frame confidence, the signal of
  # WMEnvConfig.max_surprise) tell the steps where imagination left the real episode (the probe reads the
  # imagined and the real frame more than DIVERGED_CM apart, gripper or cube) from those where it did not?
  # Both frames read by the same probe, so its own error mostly cancels. Divergence grows with the step, so
  # the step count alone is the baseline, and "within" ranks the windows at each step separately.
  apart = probe_lib.errors_cm(seen["imagined"], seen["real"])
  diverged = np.maximum(apart["gripper"], apart["cube_a"]) > DIVERGED_CM  # [B, H]
  surprise = np.cumsum(-np.log(np.maximum(np.asarray(confidence, np.float64), 1e-30)), axis=1)
  steps = np.broadcast_to(np.arange(horizon, dtype=np.float64), (b, horizon))
  out["guard/auc"] = dynamics_train.auc(surprise.ravel(), diverged.ravel())
  out["guard/auc_horizon"] = dynamics_train.auc(steps.ravel(), diverged.ravel())
  within = [a for a in (dynamics_train.auc(surprise[:, h], diverged[:, h]) for h in range(horizon)) if a is not None]
  out["guard/auc_within"] = float(np.mean(within)) if within else None
  out["guard/diverged"] = float(diverged.mean())
  out["imagined_done"] = np.asarray(jax.nn.sigmoid(done_logit))  # [B, H], for done_open_loop
  return out


def make_replay(model: dyn.Dynamics):
  """Jitted (params, tokens i32[B, T, N], actions f32[B, T, A], task i32[B]) -> done logits f32[B, T]: the
  real frames fed one at a time through the same cache as imagination (make_rollout), so that the done head
  reads real frames exactly as it reads imagined ones."""

  @jax.jit
  def run(params, tokens, actions, task):
    _, done = _observe(model, params, tokens, actions, task, tokens.shape[1])
    return jnp.swapaxes(done, 0, 1)

  return run


def done_open_loop(imagined: np.ndarray, replayed: np.ndarray, labels: np.ndarray, tau: float = DONE_TAU
                   ) -> dict:
  """The done head on imagined frames against the same head on the real frames, along the same held-out
  real action sequences: the exploitation gap without a policy. A window whose real frames never reach
  success but whose imagination passes `tau` pays the success bonus for nothing.

  imagined, replayed f32[B, H]: done probabilities on the imagined and on the real frames of each window's
  H open-loop steps; labels f32[B, H]: the real done labels (>= 0.5: done). Returns, each None where no
  window qualifies: {"false_imagined", "false_real": the share of windows without real success where the
  head passes tau at some step, "recall_imagined", "recall_real": the share of windows with real success
  where it does, "auc_imagined", "auc_real": per-step AUC against the labels, "windows_success": count}."""
  done = labels >= 0.5
  success = done.any(axis=1)
  out = {"windows_success": int(success.sum())}
  for kind, p in (("imagined", imagined), ("real", replayed)):
    fires = (p >= tau).any(axis=1)
    out[f"false_{kind}"] = float(fires[~success].mean()) if (~success).any() else None
    out[f"recall_{kind}"] = float(fires[success].mean()) if success.any() else None
    out[f"auc_{kind}"] = dynamics_train.auc(p.ravel(), done.ravel())
  return out


def make_heldout_loss(model: dyn.Dynamics, cfg: dynamics_train.DynamicsTrainConfig):
  """-> jitted (params, batch) -> {ce, token_acc, changed_acc} (f32 scalars); batch as in training (tokens
  i32[B, T, N], action, task, done, mask), the masks drawn from one fixed key so that evaluations compare."""

  @jax.jit
  def loss(params, batch: dict) -> dict:
    _, m = dynamics_train.losses(model, params, batch, jax.random.PRNGKey(13), cfg)
    return {k: m[k] for k in ("ce", "token_acc", "changed_acc")}

  return loss


def done_metrics(model, params, tok_batch: dict) -> dict:
  logits, done_logit = jax.jit(model.apply)(params, jnp.asarray(tok_batch["tokens"], jnp.int32),
                                            jnp.asarray(tok_batch["action"]), jnp.asarray(tok_batch["task"]))
  del logits
  p = np.asarray(jax.nn.sigmoid(done_logit))
  valid = tok_batch["mask"]
  labels = tok_batch["done"][valid] >= 0.5
  scores = p[valid]
  return {"auc": dynamics_train.auc(scores, labels), "f1": dynamics_train.f1(scores >= 0.5, labels),
          "positives": int(labels.sum()), "frames": int(valid.sum())}



def goal_metrics(model, params, decode, tok_ds, ds, split: str, episodes: int, max_steps: int, views: int,
                 gen: generate.GenerateConfig) -> dict:
  """WM_goal from the first frames of held-out successful episodes: how often its rollout reaches done,
  in how many steps, and how close its goal image is to the real frame of first success (PSNR), next to
  the first frame itself as the do-nothing reference. Also a grid image: first | imagined goal | real."""

  idx = [i for i in range(tok_ds.num_episodes(split)) if tok_ds.read(split, i)["success"].any()][:episodes]
  if not idx:
    return {"images": np.zeros((8, 8, 3), np.uint8)}
  first = jnp.asarray(np.stack([tok_ds.read(split, i)["tokens"][0] for i in idx]))
  task = jnp.asarray([int(tok_ds.read(split, i)["task"][0]) for i in idx])
  run = jax.jit(lambda p, f, t, k: generate.goal_rollout(model, p, f, t, k, max_steps, config=gen))
  goal, reached, steps = run(params, first, task, jax.random.PRNGKey(5))
  side = int(np.sqrt(model.cfg.tokens_per_frame // views))
  goal_img = np.asarray(decode(goal.reshape(len(idx), views, side, side)))
  real, start = [], []
  for i in idx:
    e = ds.read(split, i)
    t = int(np.argmax(e["success"]))
    real.append(np.stack([e[k][t] for k in ds.frame_keys]))
    start.append(np.stack([e[k][0] for k in ds.frame_keys]))
  real = np.stack(real).astype(np.float32) / 255.0
  start = np.stack(start).astype(np.float32) / 255.0
  p_goal = np.asarray(psnr(jnp.asarray(goal_img), jnp.asarray(real))).mean()
  p_start = np.asarray(psnr(jnp.asarray(start), jnp.asarray(real))).mean()
  to8 = lambda x: (np.clip(x, 0, 1) * 255).round().astype(np.uint8)  # noqa: E731
  zoom = max(1, -(-96 // real.shape[-2]))
  rows = [[media.upscale(to8(start[j, 0]), zoom), media.upscale(to8(goal_img[j, 0]), zoom),
           media.upscale(to8(real[j, 0]), zoom)] for j in range(min(8, len(idx)))]
  return {"reached": float(np.mean(reached)), "steps": float(np.mean(steps)), "psnr": float(p_goal),
          "psnr_first_frame": float(p_start), "images": media.grid(rows)}
