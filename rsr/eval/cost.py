"""What the reproduce grid costs on this machine: an estimate before it starts, and a bar weighted by it.

Every sub-run of the grid is a `Job`: its kind, its work in that kind's unit, and a key naming the fields
that set the cost of one unit (the network and batch shapes, not the budgets):

    collect                 simulator steps (episodes x task horizon)
    tokenizer, dynamics, goal, reward, bc    training steps
    ppo_sim, ppo_wm         policy updates (each of ppo.num_envs x ppo.rollout_len transitions)
    dyna                    policy updates, with the rounds' real episodes and fine-tuning spread over them
    evaluate                simulator steps (episodes x splits x task horizon)

The seconds per unit come from this machine: each sub-run that ran from its start (not resumed) records its
wall time, compilation included, in `Speeds` (a JSON file, by default ~/.cache/rsr/speeds.json, or
$RSR_CACHE/speeds.json), so a second grid of the same shapes is estimated from the first, and within one grid
each kind is estimated once its first sub-run ends. Kinds not yet measured are listed, not guessed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Iterable

from rsr.envs.tabletop.tasks import TASKS
from rsr.utils import media

KINDS = ("collect", "tokenizer", "dynamics", "goal", "reward", "bc", "ppo_sim", "ppo_wm", "dyna", "evaluate")
# Config fields that are budgets, places or names: they change how many units a job has, not a unit's cost.
_NOT_SHAPE = frozenset({"steps", "updates", "episodes", "train_episodes", "val_episodes", "ood_episodes",
                        "tasks", "task", "seed", "seeds", "data_dir", "world_model_dir", "stages", "splits",
                        "eval_every", "checkpoint_every", "log_every", "videos", "ood_splits"})


@dataclasses.dataclass(frozen=True)
class Job:
  name: str  # e.g. "roboscape_r pick_cube seed 0"
  kind: str  # one of KINDS
  key: str  # kind:fingerprint of the fields that set a unit's cost
  units: float  # the work, in the kind's unit


def shape_key(kind: str, *sections: Any) -> str:
  """kind:fingerprint of config sections (ConfigDicts, dicts or plain values) without their budget fields."""

  def strip(x):
    if isinstance(x, dict):
      return {k: strip(v) for k, v in sorted(x.items()) if k not in _NOT_SHAPE}
    return x

  plain = [strip(json.loads(json.dumps(s.to_dict() if hasattr(s, "to_dict") else s, default=str)))
           for s in sections]
  digest = hashlib.sha1(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]
  return f"{kind}:{digest}"


def horizon(task: str) -> int:
  return TASKS[task].horizon


class Speeds:
  """Seconds per unit of each job key, measured on this machine; a JSON file, written atomically."""

  def __init__(self, path: str | None = None):
    root = os.environ.get("RSR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rsr")
    self.path = path or os.path.join(root, "speeds.json")
    self._table: dict[str, dict] = {}
    if os.path.isfile(self.path):
      try:
        with open(self.path) as f:
          self._table = json.load(f)
      except (OSError, ValueError):  # a damaged cache only costs the estimate: start it again
        self._table = {}

  def seconds_per_unit(self, key: str) -> float | None:
    e = self._table.get(key)
    return e["seconds"] / e["units"] if e and e["units"] > 0 else None

  def record(self, key: str, units: float, seconds: float) -> None:
    """Adds one measured sub-run: the estimate is total seconds over total units of every run measured."""
    if units <= 0 or seconds <= 0:
      return
    e = self._table.setdefault(key, {"units": 0.0, "seconds": 0.0, "runs": 0})
    e["units"] += float(units)
    e["seconds"] += float(seconds)
    e["runs"] += 1
    try:
      media.write_json(self.path, self._table)
    except OSError:  # a read-only home: the estimate stays in memory for this process
      pass

  def estimate(self, job: Job) -> float | None:
    s = self.seconds_per_unit(job.key)
    return None if s is None else s * job.units


def total(jobs: Iterable[Job], speeds: Speeds) -> tuple[float, list[Job]]:
  """(estimated seconds of the measured jobs, the jobs of kinds not yet measured here)."""
  seconds, unknown = 0.0, []
  for j in jobs:
    e = speeds.estimate(j)
    if e is None:
      unknown.append(j)
    else:
      seconds += e
  return seconds, unknown


def duration(seconds: float) -> str:
  """e.g. '2 h 05 min', '14 min', '40 s'."""
  s = int(round(seconds))
  if s >= 3600:
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
  return f"{s // 60} min" if s >= 60 else f"{s} s"


def describe(jobs: list[Job], speeds: Speeds) -> str:
  """One paragraph for the start of a grid: the pending work, its estimated cost, what is not measured."""
  if not jobs:
    return "nothing left to run: every sub-run is done"
  seconds, unknown = total(jobs, speeds)
  known = len(jobs) - len(unknown)
  text = f"{len(jobs)} sub-runs to run; estimated {duration(seconds)} for {known} of them on this machine"
  if unknown:
    kinds: dict[str, int] = {}
    for j in unknown:
      kinds[j.kind] = kinds.get(j.kind, 0) + 1
    text += ("; not yet measured here (estimated once the first of each ends): "
             + ", ".join(f"{k} x{n}" for k, n in kinds.items()))
  return text + f" (speeds: {speeds.path})"


class GridBar:
  """One bar over the whole grid, its length the estimated seconds of the pending jobs, so that its ETA
  weighs a world-model PPO run above an evaluation. Each finished job that ran from its start is recorded in
  `speeds`, and the remaining jobs are re-estimated. A job of a kind not measured yet counts as the mean
  measured job (as one unit each while nothing is measured)."""

  def __init__(self, jobs: list[Job], speeds: Speeds, progress: bool = True, desc: str = "grid"):
    from tqdm.auto import tqdm

    self.jobs, self.speeds = list(jobs), speeds
    self._done: list[Job] = []
    self.bar = tqdm(total=1, desc=desc, disable=not progress, dynamic_ncols=True, position=0,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
    self._refresh()

  def _weights(self) -> dict[str, float]:
    known = [e for e in (self.speeds.estimate(j) for j in self.jobs) if e is not None]
    fill = sum(known) / len(known) if known else 1.0
    return {j.name: (self.speeds.estimate(j) or fill) for j in self.jobs}

  def _refresh(self) -> None:
    w = self._weights()
    self.bar.total = max(sum(w.values()), 1e-9)
    self.bar.n = sum(w[j.name] for j in self._done)
    unknown = len({j.kind for j in self.jobs if self.speeds.estimate(j) is None})
    self._note = f"{len(self._done)}/{len(self.jobs)} runs" + (f", {unknown} kinds unmeasured" if unknown else "")
    self.bar.refresh()

  def start(self, job: Job) -> None:
    self.bar.set_postfix_str(f"{self._note}: {job.name}")

  def finish(self, job: Job, seconds: float | None) -> None:
    """seconds: the job's wall time if it ran from its start here (None: resumed or skipped, not a measure)."""
    if seconds is not None:
      self.speeds.record(job.key, job.units, seconds)
    self._done.append(job)
    self._refresh()
    self.bar.set_postfix_str(self._note)

  def close(self) -> None:
    self.bar.close()
