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
sees). 1: the same order as the handcrafted reward; 0: unrelated. The done bonus is the done head's, whose
AUC the dynamics stage reports.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from rsr.rewards import distance


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
  from rsr.world_model.tokenizer import Tokenizer

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
                   head: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> dict:
  """The report above for the first `episodes` successful episodes of `split` of a `TokenDataset`.

  align: from `make_alignment`; head(tokens i32[T, N], task i32[T]) -> f32[T], the learned reward head's
  prediction (optional). -> {episodes, steps, align_spearman, align_spearman_within, and head_* likewise};
  a correlation that is undefined (too few steps, a constant reward) is left out."""
  found = {"align": [], "head": [], "reward": []}
  for i in range(tok_ds.num_episodes(split)):
    if len(found["reward"]) == episodes:
      break
    e = tok_ds.read(split, i)
    if not np.any(e["success"]):
      continue
    t_star = int(np.argmax(e["success"]))
    if t_star < 1:
      continue
    tokens = e["tokens"][1:t_star + 1]
    found["reward"].append(np.asarray(e["reward"][:t_star], np.float64))
    found["align"].append(align(tokens, e["tokens"][t_star]))
    if head is not None:
      found["head"].append(np.asarray(head(tokens, e["task"][1:t_star + 1])))
  out: dict = {"episodes": len(found["reward"]), "steps": int(sum(len(r) for r in found["reward"]))}
  for name in ("align", "head"):
    if not found[name]:
      continue
    pooled = spearman(np.concatenate(found[name]), np.concatenate(found["reward"]))
    within = [s for s in (spearman(x, r) for x, r in zip(found[name], found["reward"])) if s is not None]
    if pooled is not None:
      out[f"{name}_spearman"] = pooled
    if within:
      out[f"{name}_spearman_within"] = float(np.mean(within))
  return out
