"""Collection: behaviour-policy episodes in the simulator -> an RLDS dataset, resumable and published atomically.

Three phases, each safe to kill at any moment (kill -9 included):
  1. simulate: the plan is a list of chunks (task, index: `batch_size` consecutive episodes of the task's
     train, val and OOD episodes, which one batch may mix since scenes are data); each chunk is one
     jitted, vmapped rollout, truncated on the host (at the first success + steps_after_success, or the
     horizon) and saved as `WORKDIR/.collect/chunks/TASK.NNNN.npz` by an atomic rename. A chunk's content
     is a pure function of (config, task, index), so a re-run only simulates the chunks that are missing
     and the result is the same as an uninterrupted run's.
  2. write: TFDS writes the dataset from the chunks into `WORKDIR/.staging/`, which is then read back in
     full (every record decoded) to build the manifest's episode index; card, config and, last, the
     manifest (shard sizes + SHA-256) are written and synced.
  3. publish: one `os.rename` of the finished directory to `WORKDIR/data/rsr_tabletop/1.0.0/`; only then
     are the chunks and the staging area removed. Until the rename nothing loads as a dataset
     (`dataset.find` says the collection is unfinished, with the command that finishes it:
     `resume_command`); after it, a re-run checks every shard against the manifest's SHA-256 and reports
     the dataset complete, or names the shard that changed.
A workdir whose chunks or dataset were made with a different config is refused with the differing fields.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
import zlib
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from data_pipelines import behaviour, presets, rlds
from data_pipelines import dataset as dataset_lib
from data_pipelines import publish as publish_lib
from rsr.envs import SPLITS, TASK_NAMES, make
from rsr.envs import rollout as rollout_lib
from rsr.envs.tabletop import scenes as scenes_lib
from rsr.envs.tabletop.env import STATE_DIM, TabletopConfig
from rsr.envs.tabletop.tasks import TASKS
from rsr.utils import checks, configs, media

CHUNKS = os.path.join(".collect", "chunks")


@dataclasses.dataclass(frozen=True)
class CollectConfig:
  """The validated collection config (see data_pipelines/presets.py for the fields)."""

  tasks: tuple[str, ...]
  seed: int
  height: int
  width: int
  cameras: tuple[str, ...]
  shadows: bool
  splits: tuple[tuple[str, str, int], ...]  # (TFDS split, scene split, episodes per task)
  batch_size: int
  noise_levels: tuple[float, ...]
  noise_weights: tuple[float, ...]
  explore_fraction: float
  # The train split's mix: the preset's train_ fields, None resolved to the fields above.
  train_noise_levels: tuple[float, ...]
  train_noise_weights: tuple[float, ...]
  train_explore_fraction: float
  explore_segment_prob: float
  explore_segment_len: tuple[int, int]
  steps_after_success: int

  @classmethod
  def from_config(cls, c: Mapping[str, Any]) -> "CollectConfig":
    tasks = tuple(checks.expand(str(c["tasks"]), TASK_NAMES, "task"))
    ood = tuple(c["ood_splits"])
    bad = [s for s in ood if s not in SPLITS or s == "id"]
    if bad:
      raise ValueError(f"ood_splits: unknown OOD split(s) {', '.join(bad)}; valid: {', '.join(SPLITS[1:])}")
    for name in ("train_episodes", "val_episodes", "ood_episodes", "batch_size", "steps_after_success",
                 "image_size", "seed"):
      v = c[name]
      if not isinstance(v, int) or isinstance(v, bool) or v < 0 or (v == 0 and name in ("batch_size", "image_size")):
        raise ValueError(f"{name} must be a {'positive' if name in ('batch_size', 'image_size') else 'non-negative'} "
                         f"integer, got {v!r}")
    if c["train_episodes"] == 0:
      raise ValueError("train_episodes must be positive: a dataset needs a train split")
    if ood and c["ood_episodes"] == 0:
      raise ValueError(f"ood_episodes is 0 but ood_splits asks for {', '.join(ood)}")
    mix = {}
    for prefix in ("", "train_"):
      get = lambda f, p=prefix: c[f] if not p or c.get(p + f) is None else c[p + f]  # noqa: E731
      levels, weights = tuple(float(x) for x in get("noise_levels")), tuple(float(x) for x in get("noise_weights"))
      if len(levels) != len(weights) or not levels:
        raise ValueError(f"{prefix}noise_levels {levels} and {prefix}noise_weights {weights} must be non-empty "
                         "and of equal length")
      if any(w < 0 for w in weights) or sum(weights) <= 0 or any(x < 0 for x in levels):
        raise ValueError(f"{prefix}noise_levels and {prefix}noise_weights must be non-negative with a positive "
                         "total weight")
      if not 0.0 <= float(get("explore_fraction")) <= 1.0:
        raise ValueError(f"{prefix}explore_fraction must be in [0, 1], got {get('explore_fraction')}")
      mix.update({f"{prefix}noise_levels": levels, f"{prefix}noise_weights": weights,
                  f"{prefix}explore_fraction": float(get("explore_fraction"))})
    TabletopConfig(height=c["image_size"], width=c["image_size"], cameras=tuple(c["cameras"])).validate()
    splits = [("train", "id", c["train_episodes"])]
    if c["val_episodes"]:
      splits.append(("val", "id", c["val_episodes"]))
    splits += [(s, s, c["ood_episodes"]) for s in ood]
    return cls(tasks=tasks, seed=c["seed"], height=c["image_size"], width=c["image_size"],
               cameras=tuple(c["cameras"]), shadows=bool(c["shadows"]), splits=tuple(splits),
               batch_size=c["batch_size"], **mix,
               explore_segment_prob=float(c["explore_segment_prob"]),
               explore_segment_len=tuple(int(x) for x in c["explore_segment_len"]),
               steps_after_success=c["steps_after_success"])

  def spec(self) -> rlds.DatasetSpec:
    return rlds.DatasetSpec(height=self.height, width=self.width, cameras=self.cameras, state_dim=STATE_DIM,
                            action_dim=5, scene_shapes=rlds.scene_shapes())

  def env_overrides(self) -> dict:
    # Episodes continue past success (the data keeps a few completed states); truncation is the horizon.
    return dict(height=self.height, width=self.width, cameras=self.cameras, shadows=self.shadows,
                terminate_on_success=False)


@dataclasses.dataclass(frozen=True)
class Chunk:
  """One batch of a task's episodes. It may mix TFDS splits (scenes are data), so no batch is padded
  except the task's last."""

  task: str
  index: int
  episodes: tuple[tuple[str, int], ...]  # (TFDS split, episode index within task x split)

  @property
  def name(self) -> str:
    return f"{self.task}.{self.index:04d}"

  @property
  def count(self) -> int:
    return len(self.episodes)


def plan(cfg: CollectConfig) -> list[Chunk]:
  chunks = []
  for task in cfg.tasks:
    eps = [(split, i) for split, _, n in cfg.splits for i in range(n)]
    for c, start in enumerate(range(0, len(eps), cfg.batch_size)):
      chunks.append(Chunk(task, c, tuple(eps[start:start + cfg.batch_size])))
  return chunks


def behaviour_mix(cfg: CollectConfig, task: str, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-episode (noise f32[n], explore bool[n]) of a task x split: exact shares, seeded order."""
  train = split == "train"
  levels = cfg.train_noise_levels if train else cfg.noise_levels
  weights = cfg.train_noise_weights if train else cfg.noise_weights
  n_explore = int(round((cfg.train_explore_fraction if train else cfg.explore_fraction) * n))
  w = np.asarray(weights) / sum(weights)
  raw = w * (n - n_explore)
  counts = np.floor(raw).astype(int)
  counts[np.argsort(-(raw - counts), kind="stable")[: (n - n_explore) - counts.sum()]] += 1
  noise = np.concatenate([np.full(k, lv, np.float32) for k, lv in zip(counts, levels, strict=True)]
                         + [np.zeros(n_explore, np.float32)])
  explore = np.arange(n) >= n - n_explore
  order = np.random.default_rng([cfg.seed, _crc(task), _crc(split)]).permutation(n)
  return noise[order], explore[order]


def _crc(s: str) -> int:
  return zlib.crc32(s.encode()) & 0x7FFFFFFF


def episode_ends(success: np.ndarray, steps_after_success: int) -> np.ndarray:
  """success bool[T + 1, N] -> index of each episode's last observation i32[N]: the first success plus
  `steps_after_success` (capped at T), or T for episodes that never succeed."""
  horizon = success.shape[0] - 1
  first = np.where(success.any(0), success.argmax(0), horizon)
  return np.where(success.any(0), np.minimum(first + steps_after_success, horizon), horizon)


class TaskCollector:
  """Compiles one task's rollout (rendering included) once; simulates any of its chunks."""

  def __init__(self, cfg: CollectConfig, task: str):
    self.cfg = cfg
    self.task = task
    self.env = make(task, **cfg.env_overrides())
    policy = behaviour.behaviour_policy(self.env, cfg.explore_segment_prob, cfg.explore_segment_len)
    self._run = jax.jit(lambda k, s, a: rollout_lib.rollout(self.env, policy, k, s, self.env.horizon,
                                                            trajectory=True, init_args=a))

  def simulate(self, chunk: Chunk) -> dict[str, np.ndarray]:
    """The chunk's episodes as flat host arrays (steps of all episodes concatenated) + per-episode ones.

    Each episode's scene comes from its own key (task, split, index); behaviours from `behaviour_mix`.
    """
    cfg, b, task = self.cfg, self.cfg.batch_size, chunk.task
    scene_split = {s: ss for s, ss, _ in cfg.splits}
    n_of = {s: n for s, _, n in cfg.splits}
    mixes = {s: behaviour_mix(cfg, task, s, n_of[s]) for s, _ in chunk.episodes}
    parts = []
    for split in dict.fromkeys(s for s, _ in chunk.episodes):  # contiguous groups, in order
      idx = [i for s, i in chunk.episodes if s == split]
      base = rollout_lib.stream_key(cfg.seed, task, split)
      keys = jax.vmap(lambda i, base=base: jax.random.fold_in(base, i))(jnp.asarray(idx))
      parts.append(_sample_scenes(keys, scene_split[split]))
    pad = b - chunk.count
    scenes = jax.tree_util.tree_map(lambda *x: jnp.concatenate(list(x) + [x[0][:1]] * pad), *parts)
    noise = np.array([mixes[s][0][i] for s, i in chunk.episodes] + [0.0] * pad, np.float32)
    explore = np.array([mixes[s][1][i] for s, i in chunk.episodes] + [False] * pad, bool)
    args = behaviour.BehaviourArgs(noise=jnp.asarray(noise), explore=jnp.asarray(explore))
    k_roll = jax.random.fold_in(rollout_lib.stream_key(cfg.seed, task, "rollout"), chunk.index)
    ep = jax.device_get(self._run(k_roll, scenes, args))
    traj = ep.trajectory
    ends = episode_ends(np.asarray(traj.success), cfg.steps_after_success)[: chunk.count]
    out: dict[str, list] = {}

    def add(name, value):
      out.setdefault(name, []).append(value)

    action_pad = np.zeros((1,) + traj.action.shape[2:], np.float32)
    for i, end in enumerate(ends):
      for k, v in traj.obs.items():
        add(f"obs/{k}", v[: end + 1, i])
      # RLDS: the last step carries the final observation; its action and reward are padding.
      add("action", np.concatenate([traj.action[:end, i], action_pad]))
      add("reward", np.concatenate([traj.reward[:end, i], np.zeros(1, np.float32)]))
      add("success", traj.success[: end + 1, i])
    flat = {k: np.concatenate(v) for k, v in out.items()}
    flat["lengths"] = (ends + 1).astype(np.int32)
    flat["split"] = np.array([s for s, _ in chunk.episodes])
    flat["episode"] = np.array([i for _, i in chunk.episodes], np.int32)
    flat["noise"] = noise[: chunk.count]
    flat["explore"] = explore[: chunk.count]
    flat["ep_success"] = np.asarray(traj.success)[:, : chunk.count].any(0)
    for f in dataclasses.fields(scenes):
      flat[f"scene/{f.name}"] = np.asarray(getattr(scenes, f.name))[: chunk.count]
    return flat


@functools.lru_cache(maxsize=1)  # one task's executable alive at a time; a same-process re-run reuses it
def task_collector(cfg: CollectConfig, task: str) -> TaskCollector:
  return TaskCollector(cfg, task)


@functools.partial(jax.jit, static_argnums=1)
def _sample_scenes(keys: jax.Array, split: str) -> scenes_lib.SceneParams:
  return jax.vmap(lambda k: scenes_lib.sample(k, split))(keys)


def _chunk_episodes(path: str, chunk: Chunk, split: str, scene_split: str, instruction: str,
                    task_id: int) -> Iterator[tuple[str, dict]]:
  """The episodes of TFDS split `split` in a saved chunk, as (key, RLDS example)."""
  try:
    with np.load(path) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError) as e:  # chunks are renamed into place whole; this is disk damage
    raise dataset_lib.DatasetError(f"chunk {path} is unreadable ({e}); delete it and re-run to simulate it "
                                   "again") from None
  offsets = np.concatenate([[0], np.cumsum(arrays["lengths"])])
  obs_keys = [k for k in arrays if k.startswith("obs/")]
  for i in np.flatnonzero(arrays["split"] == split):
    s = slice(offsets[i], offsets[i + 1])
    steps = {"obs": {k[4:]: arrays[k][s] for k in obs_keys}, "action": arrays["action"][s],
             "reward": arrays["reward"][s], "success": arrays["success"][s]}
    episode_id = f"{chunk.task}/{split}/{int(arrays['episode'][i]):05d}"
    meta = {"episode_id": episode_id, "task": chunk.task, "task_id": task_id, "split": scene_split,
            "policy": "explore" if arrays["explore"][i] else "expert", "noise": float(arrays["noise"][i]),
            "success": bool(arrays["ep_success"][i]), "length": int(arrays["lengths"][i]),
            "scene": {k[6:]: arrays[k][i] for k in arrays if k.startswith("scene/")}}
    yield episode_id, rlds.episode_example(steps, meta, instruction)


def _check_same(stored_path: str, config: dict, what: str) -> None:
  with open(stored_path) as f:
    stored = json.load(f)
  diff = [f"{k}: {a!r} there, {b!r} now" for k, a, b in configs.differences(stored, config)]
  if diff:
    raise ValueError(f"{what} was collected with a different config ({stored_path}): " + "; ".join(diff)
                     + ". Use another --workdir, or delete that one to start over.")


def collect(config: Mapping[str, Any], workdir: str, progress: bool = True) -> str:
  """Runs (or resumes, or confirms) the collection; returns the published dataset directory."""
  cfg = CollectConfig.from_config(config)
  conf = configs.plain(config)
  workdir = os.path.abspath(workdir)
  final = dataset_lib.dataset_dir(workdir)
  if os.path.exists(os.path.join(final, dataset_lib.MANIFEST)):
    _check_same(os.path.join(final, "config.json"), conf, f"the dataset at {final}")
    try:  # "complete" is a claim about content: sizes alone miss a changed byte
      dataset_lib.open_dataset(final, verify="checksum")
    except dataset_lib.DatasetError as e:
      raise dataset_lib.DatasetError(
          f"the finished dataset in {workdir} was altered after it was published: {e}. Restore the file, or "
          f"delete {os.path.join(workdir, 'data')} and run the same command again to collect it anew") from None
    _cleanup(workdir)
    logging.info("dataset already complete at %s", final)
    return final

  os.makedirs(os.path.join(workdir, CHUNKS), exist_ok=True)
  stored = os.path.join(workdir, ".collect", "config.json")
  if os.path.exists(stored):
    _check_same(stored, conf, f"the unfinished collection in {workdir}")
  else:
    media.write_json(stored, conf)
  media.write_json(os.path.join(workdir, "config.json"), conf)

  t0 = time.time()
  chunks = plan(cfg)
  path_of = lambda c: os.path.join(workdir, CHUNKS, c.name + ".npz")  # noqa: E731
  todo = [c for c in chunks if not os.path.exists(path_of(c))]
  total = sum(c.count for c in chunks)
  with tqdm(total=total, initial=total - sum(c.count for c in todo), desc="collect", unit="ep",
            disable=not progress, dynamic_ncols=True) as bar:
    last = None
    for c in todo:
      bar.set_postfix_str(c.task + (": compiling" if c.task != last else ""))
      last = c.task
      media.write_npz(path_of(c), task_collector(cfg, c.task).simulate(c))
      bar.update(c.count)
  t_sim = time.time() - t0  # this run's share: chunks simulated before a kill are not counted

  def examples(split, scene_split):
    for c in chunks:
      if any(s == split for s, _ in c.episodes):
        task = TASKS[c.task]
        yield from _chunk_episodes(path_of(c), c, split, scene_split, task.instruction, task.task_id)

  card = publish_lib.write_dataset(
      workdir, cfg.spec(), {s: functools.partial(examples, s, ss) for s, ss, _ in cfg.splits},
      episodes=sum(c.count for c in chunks), config=conf, seconds={"simulate": t_sim},
      progress=progress)
  _cleanup(workdir)
  logging.info("published %s (%d episodes, %.1f MB) in %.0f s", final, card["episodes"],
               card["bytes"] / 1e6, time.time() - t0)
  return final


def resume_command(workdir: str) -> str:
  """The command that finishes the unfinished collection in `workdir`, as a user types it: its preset and
  every field that differs from the preset, read from the config it was started with."""
  import shlex

  with open(os.path.join(workdir, ".collect", "config.json")) as f:
    stored = json.load(f)
  preset = stored.get("preset", "cpu")
  base = configs.plain(presets.get_config(preset).to_dict())
  args = [f"--config=experiments/configs/collect.py:{preset}"]
  for field in sorted(stored):
    if field != "preset" and stored[field] != base.get(field):
      args.append(f"--config.{field}={_override(stored[field])}")
  args.append(f"--workdir={workdir}")

  def quote(a: str) -> str:  # "('ood_color',)" reads better than shlex's '"'"' dance, and means the same
    return a if shlex.quote(a) == a else f'"{a}"' if not set('"$`\\!') & set(a) else shlex.quote(a)

  return "python -m experiments.collect " + " ".join(quote(a) for a in args)


def _override(value: Any) -> str:
  """A config value as ml_collections parses it back from --config.FIELD=VALUE."""
  if isinstance(value, list):
    return repr(tuple(value))
  return value if isinstance(value, str) else repr(value)


def _cleanup(workdir: str) -> None:
  for d in (os.path.join(workdir, ".collect"), os.path.join(workdir, publish_lib.STAGING)):
    shutil.rmtree(d, ignore_errors=True)
