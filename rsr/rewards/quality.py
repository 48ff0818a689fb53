"""How well a reward follows the task on real held-out episodes: its rank correlation with the dataset's
handcrafted reward, step by step.

The endogenous reward is built without hand-written rewards, so nothing in training checks that it rises
as the task progresses. This report does, on the real episodes of a held-out split that reach success, up
to their first success step t* (where the real goal frame comes from, as `wm_env.goal = "real"` takes it):

    align_t = 1 - d(frame_t, frame_t*)      the endogenous alignment term, d the tokenizer-feature distance
                                            (the default), both frames decoded from their tokens as the
                                            world-model environment decodes its frames
    reward_{t-1}                            the handcrafted reward the action at t - 1 earned (frame t)

for t = 1 .. t*; the learned reward head, when given, predicts the same steps from the same tokens. Each
is reported as a Spearman rank correlation with the handcrafted reward, pooled over every step of the
split's episodes (`*_spearman`) and as the mean over episodes of the within-episode correlation
(`*_spearman_within`, which leaves out differences between scenes: what an advantage along one trajectory
sees). 1: the same order as the handcrafted reward; 0: unrelated.

Given the dynamics model, the same is measured on IMAGINED frames: the open loop from the episode's first C
real frames with its real actions (steps C .. t*), for the alignment term and for the whole endogenous
reward (the done head's bonus included): what PPO inside the world model is paid along a real trajectory.
The gap from real to imagined frames is what the world model's fidelity costs the reward.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from rsr.rewards import distance, endogenous
from rsr.world_model import evaluate as wm_eval
from rsr.world_model.tokenizer import Tokenizer


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
  """Spearman's rank correlation (ties share their mean rank) of two f32[S]; None when S < 3 or either
  is constant (the correlation is undefined)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return None
  return float(stats.spearmanr(a, b).statistic)


def make_alignment(tokenizer, tok_params, views: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  """-> align(tokens i32[T, N], goal i32[N]) -> f32[T]: 1 - the tokenizer-feature distance of each decoded
  frame to the decoded goal, averaged over the views (N = views x side x side), as WorldModelEnv pays it."""

  @jax.jit
  def align(tokens, goal):
    t, n = tokens.shape
    side = int(round((n // views) ** 0.5))
    frames = tokenizer.apply(tok_params, tokens.reshape(t, views, side, side), method=Tokenizer.decode)
    target = tokenizer.apply(tok_params, goal.reshape(1, views, side, side), method=Tokenizer.decode)
    d = distance.tokenizer_distance(tokenizer, tok_params, frames, jnp.broadcast_to(target, frames.shape))
    return 1.0 - d.mean(axis=-1)

  return lambda tokens, goal: np.asarray(align(jnp.asarray(tokens, jnp.int32), jnp.asarray(goal, jnp.int32)))


def reward_quality(align: Callable, tok_ds, split: str, episodes: int,
                   head: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                   imagine: Callable | None = None, context: int = 2,
                   reward: endogenous.RewardConfig = endogenous.RewardConfig()) -> dict:
  """The report above for the first `episodes` successful episodes of `split` of a `TokenDataset`.

  align: from `make_alignment`; head(tokens i32[T, N], task i32[T]) -> f32[T], the learned reward head's
  prediction (optional); imagine(tokens i32[B, C, N], actions f32[B, C + H, A], task i32[B]) -> (tokens
  i32[B, H, N], done probabilities f32[B, H]): the world model's open loop from the first C = `context`
  real frames with the real actions (optional; `make_imagine`). With it, the same correlations for the
  imagined frames of steps C .. t*: `imagined_align_*` (the alignment term) and `imagined_reward_*` (the
  whole endogenous reward of `reward`, the done bonus included): what the policy is paid in the world model.
  -> {episodes, steps, align_spearman, align_spearman_within, and head_*, imagined_* likewise}; a
  correlation that is undefined (too few steps, a constant reward) is left out."""
  chosen = []
  for i in range(tok_ds.num_episodes(split)):
    if len(chosen) == episodes:
      break
    e = tok_ds.read(split, i)
    t_star = int(np.argmax(e["success"])) if np.any(e["success"]) else 0
    if t_star >= (max(context, 1) if imagine is not None else 1):  # imagined frames follow C real ones
      chosen.append((e, t_star))
  found = {"align": [], "head": [], "reward": []}
  for e, t_star in chosen:
    tokens = e["tokens"][1:t_star + 1]
    found["reward"].append(np.asarray(e["reward"][:t_star], np.float64))
    found["align"].append(align(tokens, e["tokens"][t_star]))
    if head is not None:
      found["head"].append(np.asarray(head(tokens, e["task"][1:t_star + 1])))
  out: dict = {"episodes": len(chosen), "steps": int(sum(len(r) for r in found["reward"]))}
  for name in ("align", "head"):
    out.update(_correlations(name, found[name], found["reward"]))
  if imagine is not None and chosen:
    # One batch, padded to the longest episode (one compilation); steps past an episode's t* are dropped.
    h = max(t for _, t in chosen) - context + 1
    acts = np.zeros((len(chosen), context + h) + chosen[0][0]["action"].shape[1:], np.float32)
    for j, (e, t_star) in enumerate(chosen):
      n = min(len(e["action"]), context + h)
      acts[j, :n] = e["action"][:n]
    toks, done_p = imagine(np.stack([e["tokens"][:context] for e, _ in chosen]), acts,
                           np.array([int(e["task"][0]) for e, _ in chosen], np.int32))
    toks, done_p = np.asarray(toks), np.asarray(done_p)
    al, rw, target = [], [], []
    for j, (e, t_star) in enumerate(chosen):
      k = t_star - context + 1  # imagined frames C .. t*
      a = align(toks[j, :k], e["tokens"][t_star])
      al.append(a)
      rw.append(np.asarray(endogenous.endogenous_reward(jnp.asarray(1.0 - a), jnp.asarray(done_p[j, :k]), reward)))
      target.append(np.asarray(e["reward"][context - 1:t_star], np.float64))
    out.update(_correlations("imagined_align", al, target))
    out.update(_correlations("imagined_reward", rw, target))
  return out


def _correlations(name: str, values: list[np.ndarray], targets: list[np.ndarray]) -> dict:
  """{name}_spearman (pooled over every step) and {name}_spearman_within (mean over episodes), each only
  when defined."""
  if not values:
    return {}
  out = {}
  pooled = spearman(np.concatenate(values), np.concatenate(targets))
  within = [s for s in (spearman(x, r) for x, r in zip(values, targets)) if s is not None]
  if pooled is not None:
    out[f"{name}_spearman"] = pooled
  if within:
    out[f"{name}_spearman_within"] = float(np.mean(within))
  return out


def make_imagine(model, params, context: int, gen, key: jax.Array) -> Callable:
  """-> imagine(tokens i32[B, C, N], actions f32[B, C + H, A], task i32[B]) -> (tokens i32[B, H, N], done
  probabilities f32[B, H]) for `reward_quality`: the dynamics model's open loop (rsr/world_model/evaluate.py)
  from C = `context` real frames with the real actions, one compilation per H."""

  def imagine(tokens, actions, task):
    run = wm_eval.make_rollout(model, context, actions.shape[1] - context, gen)
    toks, done, _ = run(params, jnp.asarray(tokens, jnp.int32), jnp.asarray(actions), jnp.asarray(task, jnp.int32),
                        key)
    return toks, jax.nn.sigmoid(done)

  return imagine


