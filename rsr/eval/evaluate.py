"""Success rates of a policy in the real simulator, per task and split, with 95% confidence intervals.

Episodes run in fixed-size batches through one compiled rollout per task (every split reuses it: scenes
are data). Scenes and episode randomness derive from (seed, task, split, batch size), so a result is
reproducible.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Callable, Iterable

import jax
import numpy as np
from tqdm.auto import tqdm

from rsr import envs
from rsr.envs.tabletop import scenes as scenes_lib
from rsr.eval import rollout as rollout_lib
from rsr.eval import stats

POLICIES = ("expert",)


@dataclasses.dataclass
class CellResult:
  task: str
  split: str
  episodes: int
  successes: int
  success_rate: float
  ci95: tuple[float, float]
  mean_length: float
  mean_return: float

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def cell_result(task: str, split: str, success: np.ndarray, length: np.ndarray, ret: np.ndarray) -> CellResult:
  """Summarises the episodes of one task x split: success bool[N], length i32[N], return f32[N]."""
  n, k = len(success), int(np.sum(success))
  return CellResult(task=task, split=split, episodes=n, successes=k, success_rate=k / n,
                    ci95=stats.wilson_interval(k, n), mean_length=float(np.mean(length)),
                    mean_return=float(np.mean(ret)))


def check_policy(policy: str) -> str:
  if policy not in POLICIES:
    raise ValueError(
        f"unknown policy {policy!r}; available: {', '.join(POLICIES)} (policy checkpoints are evaluated "
        "once the agents exist: see the RL issue)")
  return policy


def expand(value: str, valid: Iterable[str], what: str) -> list[str]:
  """'all' -> every valid name; a comma list -> its names; raises naming a bad one and the valid ones."""
  valid = list(valid)
  names = valid if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
  bad = [n for n in names if n not in valid]
  if bad or not names:
    raise ValueError(f"unknown {what} {', '.join(bad) or repr(value)}; valid: {', '.join(valid)} or 'all'")
  return names


def stream_key(seed: int, *names: str) -> jax.Array:
  """A PRNG key for a named stream (task, split, ...): streams never share randomness, whatever order
  they run in."""
  key = jax.random.PRNGKey(seed)
  for n in names:
    key = jax.random.fold_in(key, zlib.crc32(n.encode()) & 0x7FFFFFFF)
  return key


class TaskEvaluator:
  """Compiles the rollout of one task once; evaluates any split with it."""

  def __init__(self, task: str, noise: float = 0.0, batch_size: int = 100, **env_overrides):
    env_overrides.setdefault("cameras", ())  # the expert needs no pixels
    self.env = envs.make(task, **env_overrides)
    self.task = task
    self.batch_size = batch_size
    policy = rollout_lib.expert_policy(self.env, noise)
    self._run = jax.jit(lambda k, s: rollout_lib.rollout(self.env, policy, k, s, self.env.horizon))

  def evaluate(self, split: str, episodes: int, seed: int = 0,
               on_batch: Callable[[int], None] | None = None) -> CellResult:
    scenes_lib.check_split(split)
    if episodes <= 0:
      raise ValueError(f"episodes must be positive, got {episodes}")
    key = stream_key(seed, self.task, split)
    success, length, ret = [], [], []
    for start in range(0, episodes, self.batch_size):
      k = jax.random.fold_in(key, start)
      k_scene, k_roll = jax.random.split(k)
      scenes = scenes_lib.sample_batch(k_scene, split, self.batch_size)
      ep = jax.device_get(self._run(k_roll, scenes))
      take = min(self.batch_size, episodes - start)
      success.append(ep.success[:take])
      length.append(ep.length[:take])
      ret.append(ep.ret[:take])
      if on_batch:
        on_batch(take)
    return cell_result(self.task, split, np.concatenate(success), np.concatenate(length), np.concatenate(ret))


def evaluate(tasks: list[str], splits: list[str], episodes: int, seed: int = 0, noise: float = 0.0,
             batch_size: int = 100, progress: bool = True, **env_overrides) -> list[CellResult]:
  """Evaluates the expert on every task x split; a progress bar counts episodes."""
  results = []
  total = len(tasks) * len(splits) * episodes
  with tqdm(total=total, desc="evaluate", unit="ep", disable=not progress, dynamic_ncols=True) as bar:
    for task in tasks:
      bar.set_postfix_str(f"{task}: compiling")
      ev = TaskEvaluator(task, noise=noise, batch_size=min(batch_size, episodes), **env_overrides)
      for split in splits:
        bar.set_postfix_str(f"{task}/{split}")
        results.append(ev.evaluate(split, episodes, seed, on_batch=bar.update))
  return results


def summary(results: list[CellResult]) -> dict:
  """JSON-ready summary: pooled success rate and episode count, plus every cell."""
  n = sum(r.episodes for r in results)
  k = sum(r.successes for r in results)
  out = {"success_rate": k / n, "ci95": stats.wilson_interval(k, n), "episodes": n,
         "episodes_per_cell": results[0].episodes if results else 0,
         "results": [r.as_dict() for r in results]}
  return out


def table(results: list[CellResult]) -> str:
  """A markdown table: tasks as rows, splits as columns, success % with the 95% interval."""
  tasks = list(dict.fromkeys(r.task for r in results))
  splits = list(dict.fromkeys(r.split for r in results))
  cell = {(r.task, r.split): r for r in results}
  lines = ["| task | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
  for t in tasks:
    row = []
    for s in splits:
      r = cell.get((t, s))
      row.append("" if r is None else f"{100 * r.success_rate:.1f} [{100 * r.ci95[0]:.0f}, {100 * r.ci95[1]:.0f}]")
    lines.append(f"| {t} | " + " | ".join(row) + " |")
  return "\n".join(lines)
