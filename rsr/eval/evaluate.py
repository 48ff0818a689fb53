"""Success rates of a policy in the real simulator, per task and split, with 95% confidence intervals.

A policy is a `PolicySpec`: the scripted expert (`expert_spec`) or a trained checkpoint (`trained_spec` of
rsr.stages.trained.load(workdir)). Episodes run in fixed-size batches through one compiled rollout per task
(every split and every set of weights reuses it: scenes and params are data). Scenes and episode randomness
derive from (seed, task, split, batch size), so a result is reproducible, and every policy evaluated with
the same seed meets the same scenes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import numpy as np
from tqdm.auto import tqdm

from rsr import envs
from rsr.envs import rollout as rollout_lib
from rsr.envs.tabletop import scenes as scenes_lib
from rsr.eval import stats
from rsr.utils import media

EXPERT = "expert"


@dataclasses.dataclass(frozen=True)
class PolicySpec:
  """What to evaluate: `make(env, params) -> rollout.Policy`, default `params`, and the env options the
  policy needs (image size, cameras). Params are an argument of the compiled rollout, so one compilation per
  task serves every checkpoint of the same network."""

  name: str
  make: Callable[[Any, Any], rollout_lib.Policy]
  params: Any = None
  env: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def expert_spec(noise: float = 0.0) -> PolicySpec:
  """The scripted expert on privileged state (no pixels needed: cameras=())."""
  return PolicySpec(name=EXPERT, make=lambda env, _: rollout_lib.expert_policy(env, noise), env={"cameras": ()})


def trained_spec(trained) -> PolicySpec:
  """A rsr.stages.trained.TrainedPolicy: its mean action on front-camera frames of its training size."""
  h, w = trained.image_size
  return PolicySpec(name=trained.workdir, make=lambda env, p: trained.make_policy(p), params=trained.params,
                    env={"height": h, "width": w, "cameras": ("front",)})


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


class TaskEvaluator:
  """Compiles the rollout of one task and policy network once; evaluates any split and any params with it.

  record=True keeps the front camera's frames of every batch (one compiled program serves evaluation and
  videos: a second, recording program would cost a second compilation); the expert then renders too.
  """

  def __init__(self, task: str, policy: PolicySpec | None = None, batch_size: int = 100, record: bool = False,
               **env_overrides):
    self.policy = policy if policy is not None else expert_spec()
    options = {**self.policy.env, **env_overrides}
    if record and not options.get("cameras", ("front",)):
      options["cameras"] = ("front",)
    self.env = envs.make(task, **options)
    self.task = task
    self.batch_size = batch_size
    self.record = record
    make, env = self.policy.make, self.env
    self._run = jax.jit(lambda p, k, s: rollout_lib.rollout(env, make(env, p), k, s, env.horizon, record=record))

  def evaluate(self, split: str, episodes: int, seed: int = 0, params: Any = None, videos: int = 0,
               on_batch: Callable[[int], None] | None = None) -> tuple[CellResult, np.ndarray | None]:
    """Success of `episodes` episodes on `split` (params default to the spec's); with videos=n (needs
    record=True), also the front-camera frames uint8[T + 1, n, H, W, 3] of the first n episodes."""
    scenes_lib.check_split(split)
    if episodes <= 0:
      raise ValueError(f"episodes must be positive, got {episodes}")
    if videos and not self.record:
      raise ValueError("videos need a TaskEvaluator built with record=True")
    params = self.policy.params if params is None else params
    key = rollout_lib.stream_key(seed, self.task, split)
    success, length, ret, frames = [], [], [], None
    for start in range(0, episodes, self.batch_size):
      k = jax.random.fold_in(key, start)
      k_scene, k_roll = jax.random.split(k)
      scenes = scenes_lib.sample_batch(k_scene, split, self.batch_size)
      ep = self._run(params, k_roll, scenes)
      take = min(self.batch_size, episodes - start)
      if videos and frames is None:
        frames = np.asarray(ep.frames["rgb"][:, :min(videos, take)])
      ep = jax.device_get(ep.replace(frames=None))
      success.append(ep.success[:take])
      length.append(ep.length[:take])
      ret.append(ep.ret[:take])
      if on_batch:
        on_batch(take)
    cell = cell_result(self.task, split, np.concatenate(success), np.concatenate(length), np.concatenate(ret))
    return cell, frames


def episode_video(frames: np.ndarray, cell: CellResult, min_side: int = 96) -> np.ndarray:
  """uint8[T + 1, n, H, W, 3] -> uint8[T + 1, H', W', 3]: the n episodes side by side, upscaled to at
  least `min_side` pixels, under a label naming the task, split and the cell's success rate."""
  zoom = max(1, -(-min_side // frames.shape[2]))
  text = f"{cell.task} {cell.split}: {100 * cell.success_rate:.0f}% of {cell.episodes}"
  return np.stack([media.label(media.grid([[media.upscale(f, zoom) for f in step]]), text) for step in frames])


def evaluate(tasks: list[str], splits: list[str], episodes: int, policy: PolicySpec | None = None, seed: int = 0,
             batch_size: int = 100, videos: int = 0,
             on_video: Callable[[CellResult, np.ndarray], None] | None = None, progress: bool = True,
             **env_overrides) -> list[CellResult]:
  """Evaluates a policy (default: the expert) on every task x split; a progress bar counts episodes.

  videos=n hands `on_video(cell, frames uint8[T + 1, n, H, W, 3])` the first n episodes of every cell.
  """
  results = []
  total = len(tasks) * len(splits) * episodes
  with tqdm(total=total, desc="evaluate", unit="ep", disable=not progress, dynamic_ncols=True) as bar:
    for task in tasks:
      bar.set_postfix_str(f"{task}: compiling")
      ev = TaskEvaluator(task, policy, batch_size=min(batch_size, episodes), record=videos > 0, **env_overrides)
      for split in splits:
        bar.set_postfix_str(f"{task}/{split}")
        cell, frames = ev.evaluate(split, episodes, seed, videos=videos, on_batch=bar.update)
        results.append(cell)
        if frames is not None and on_video is not None:
          on_video(cell, frames)
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
