"""train_policy's config read once: the library's typed configs it makes, the checks of every field, and what
a field selects (BC's demonstrations, the imagined chunk); the policy stages (rsr/stages/bc.py, ppo.py) and
the environments they train in (rsr/stages/environments.py) take their settings from here."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from data_pipelines import dataset as dataset_lib
from data_pipelines import rlds
from rsr.agents import ppo as ppo_lib
from rsr.agents.networks import AgentConfig
from rsr.envs import SPLITS
from rsr.envs.tabletop.tasks import TASKS
from rsr.rewards.endogenous import RewardConfig
from rsr.stages import POLICY, parse
from rsr.train import fused
from rsr.utils import checks
from rsr.utils import configs as configs_lib

ENVS = ("world_model", "sim")
REWARDS = ("endogenous", "learned", "handcrafted")


def agent_config(config) -> AgentConfig:
  return configs_lib.typed(AgentConfig, config.agent)


def reward_config(config) -> RewardConfig:
  return configs_lib.typed(RewardConfig, config.rewards, kind=config.reward)


def ppo_config(config) -> fused.FusedConfig:
  return configs_lib.typed(fused.FusedConfig, config.ppo, use_goal=config.agent.use_goal,
                           ppo=configs_lib.typed(ppo_lib.PPOConfig, config.ppo))


def world_model_config(world_model_dir: str) -> ml_collections.ConfigDict:
  path = os.path.join(world_model_dir, "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"world_model_dir: no {path} (run experiments.train_world_model there first)")
  return configs_lib.read(path, "world_model")


# wm_env.chunk = AUTO_CHUNK: CPU_CHUNK environments at once on one CPU device, the whole batch otherwise.
# On a CPU, chunks of 8 keep a chunk's activations in cache; on a GPU the same chunks are slower than the
# whole batch (docs/decisions.md, docs/benchmarks.md), and on a mesh the batch is already split (a chunk
# loop over a sharded batch would step one device's environments at a time).
AUTO_CHUNK, CPU_CHUNK = -1, 8


def imagined_chunk(chunk: int, devices: int, backend: str) -> int:
  """The environments a WorldModelEnv steps at once for config wm_env.chunk on `devices` devices of
  `backend` ('cpu', 'gpu', 'tpu'): 0 (the whole batch) on a mesh of several devices; CPU_CHUNK for
  AUTO_CHUNK on one CPU device and 0 on one accelerator; else `chunk` as set."""
  if devices > 1:
    return 0
  if chunk == AUTO_CHUNK:
    return CPU_CHUNK if backend == "cpu" else 0
  return chunk


def bc_episodes(config, ds, split: str) -> np.ndarray:
  """bool[E]: the episodes of `split` behaviour cloning learns from (config.bc.episodes)."""
  index = ds.index(split)
  if config.bc.episodes == "all":
    return np.ones(len(index["length"]), bool)
  demos = index["success"].astype(bool) & ~index["explore"].astype(bool)
  if not demos.any():
    raise ValueError(f"bc.episodes='demos': split {split!r} of {ds.path} has no successful episode without "
                     "exploration; collect more episodes or set bc.episodes='all'")
  return demos


# Policy-config fields (by section) that change how the work is computed, not what it computes: a
# checkpoint or a finished run stays valid when they change (ppo_compat, rsr.stages.reproduce).
SPEED_FIELDS = {"ppo": ("microbatch",), "wm_env": ("chunk",)}


def without_speed_fields(d: dict) -> dict:
  """A policy config as a plain dict (or some of its sections) without SPEED_FIELDS."""
  return {k: ({f: x for f, x in v.items() if f not in SPEED_FIELDS[k]} if k in SPEED_FIELDS else v)
          for k, v in d.items()}


def eval_splits(config) -> list[str]:
  """The simulator splits PPO evaluates on (config.eval.splits: a comma list, 'all', or '' for none)."""
  return checks.expand(config.eval.splits, SPLITS, "split") if config.eval.splits.strip() else []


def check(config, stages: tuple[str, ...] | list[str] | None = None, ds=None) -> None:
  """Every setting of the policy `stages` a command will run, before anything compiles: ValueErrors naming
  the field. `stages` defaults to config.stages. With the dataset (`ds`, data_pipelines.Dataset) also what
  the stages need of it (BC's demonstrations) and of the world model PPO would train in: world_model_dir
  exists, is a train_world_model workdir holding the stages PPO loads, and was trained on frames of the
  dataset's size."""
  stages = parse(config.stages, POLICY) if stages is None else stages
  if config.task not in TASKS:
    raise ValueError(f"task: unknown {config.task!r}; valid: {', '.join(TASKS)}")
  if config.env not in ENVS:
    raise ValueError(f"env must be one of {ENVS}, got {config.env!r}")
  if config.reward not in REWARDS:
    raise ValueError(f"reward must be one of {REWARDS}, got {config.reward!r}")
  if config.env == "sim" and config.reward != "handcrafted":
    raise ValueError(f"env=sim pays the simulator's handcrafted reward; reward={config.reward!r} needs "
                     "env=world_model")
  if config.env == "world_model" and config.reward == "handcrafted":
    raise ValueError("reward=handcrafted exists only in the simulator (env=sim)")
  if config.wm_env.reset not in ("first", "fresh"):
    raise ValueError(f"wm_env.reset must be 'first' or 'fresh', got {config.wm_env.reset!r}")
  chunk, envs = config.wm_env.chunk, config.ppo.num_envs
  if chunk < AUTO_CHUNK or (config.env == "world_model" and 0 < chunk < envs and envs % chunk):
    raise ValueError(f"wm_env.chunk must be -1 (auto), 0 (the whole batch) or divide ppo.num_envs = {envs}, "
                     f"got {chunk}")
  if config.env == "sim" and config.agent.use_goal:
    raise ValueError("agent.use_goal needs env=world_model (the simulator has no goal image)")
  if config.bc.episodes not in ("demos", "all"):
    raise ValueError(f"bc.episodes must be 'demos' or 'all', got {config.bc.episodes!r}")
  checks.positive_ints(config.agent.channels, "agent.channels")
  checks.positive(config.agent, "agent", "hidden")
  # BC's steps and batch matter to PPO too: it loads the finished BC checkpoint by them.
  checks.positive(config.bc, "bc", "steps", "batch_size", "lr", "checkpoint_every")
  checks.non_negative(config.bc, "bc", "shift")
  if ds is not None and "bc" in stages:
    for split in ("train", "val"):
      bc_episodes(config, ds, split)
  if "ppo" in stages and "dyna" in stages:
    raise ValueError("stages: ppo and dyna are two ways to train the policy after bc; pick one")
  if "dyna" in stages:
    checks.positive(config.dyna, "dyna", "rounds", "episodes", "wm_steps", "wm_lr", "repeat")
    if config.env != "world_model":
      raise ValueError("the dyna stage trains in the world model: it needs env=world_model")
    if config.agent.use_goal:
      raise ValueError("the dyna stage's real episodes have no goal image: it needs agent.use_goal=False")
  if not {"ppo", "dyna"} & set(stages):
    return
  p = config.ppo
  checks.positive(p, "ppo", "updates", "num_envs", "rollout_len", "updates_per_call", "epochs", "minibatches", "lr",
                  "clip_eps", "max_grad_norm", "checkpoint_every", "eval_every")
  checks.non_negative(p, "ppo", "critic_warmup", "vf_coef", "ent_coef", "actor_lr", "critic_lr")
  for name in ("gamma", "lam"):
    if not 0.0 <= p[name] <= 1.0:
      raise ValueError(f"ppo.{name} must be in [0, 1], got {p[name]!r}")
  try:
    ppo_config(config)
  except ValueError as e:
    raise ValueError(f"ppo: {e}") from None
  checks.divides_devices(p.num_envs, "ppo.num_envs")
  e = config.eval
  try:
    eval_splits(config)
  except ValueError as err:
    raise ValueError(f"eval.splits: {err}") from None
  checks.positive(e, "eval", "episodes")
  checks.non_negative(e, "eval", "videos", "gap_starts", "gap_offset")
  if config.env != "world_model":
    return
  w = config.wm_env
  checks.positive(w, "wm_env", "horizon", "context", "max_starts")
  if not 0.0 < w.done_threshold < 1.0:
    raise ValueError(f"wm_env.done_threshold must be in (0, 1), got {w.done_threshold!r}")
  checks.non_negative(w, "wm_env", "max_surprise")
  checks.one_of(w.goal, "wm_env.goal", ("model", "real"))
  try:
    reward_config(config)
  except ValueError as e:
    raise ValueError(f"rewards: {e}") from None
  if ds is not None:
    check_world_model(config, ds.spec)


def check_world_model(config, spec) -> None:
  """world_model_dir against what PPO in it loads: its config, the tokenizer (trained on frames of the
  dataset's size and cameras), WM_act, WM_goal (wm_env.goal=model) and the reward head (reward=learned)."""
  wdir = os.path.abspath(config.world_model_dir)
  field = f"world_model_dir {wdir}"
  if not os.path.isdir(wdir):
    raise ValueError(f"{field} does not exist; train one there with `python -m experiments.train_world_model "
                     f"--workdir={wdir}`, or point --config.world_model_dir at one")
  if os.path.isdir(dataset_lib.dataset_dir(wdir)) or os.path.isdir(os.path.join(wdir, ".collect")):
    raise ValueError(f"{field} is a collect workdir (a dataset), not a train_world_model workdir: pass it as "
                     "--config.data_dir, and a world model as --config.world_model_dir")
  if not os.path.isfile(os.path.join(wdir, "config.json")):
    raise ValueError(f"{field} has no config.json: not a train_world_model workdir")
  wcfg = world_model_config(wdir)
  need = (["tokenizer", "dynamics"] + ["goal"] * (config.wm_env.goal == "model")
          + ["reward"] * (config.reward == "learned"))
  for stage in need:
    directory = os.path.join(wdir, "checkpoints", stage)
    steps = [n for n in (os.listdir(directory) if os.path.isdir(directory) else []) if n.isdigit()]
    if not steps:
      why = {"goal": ", wm_env.goal=model", "reward": ", reward=learned"}.get(stage, "")
      raise ValueError(f"{field} has no '{stage}' checkpoint ({directory}), which PPO with env=world_model{why}"
                       f" loads; run experiments.train_world_model there with --config.stages including {stage}")
  compat = os.path.join(wdir, "checkpoints", "tokenizer", "compat.json")
  try:
    with open(compat) as f:
      stored = json.load(f)
    image, cameras = [int(v) for v in stored["image"]], list(stored["cameras"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{field}: cannot read {compat} ({type(e).__name__}: {e})") from None
  want = [rlds.camera_key(c) for c in spec.cameras]
  if image != [spec.height, spec.width] or cameras != want:
    raise ValueError(f"{field} (preset {wcfg.get('preset', '?')!r}) was trained on {image[0]}x{image[1]} frames "
                     f"of {', '.join(cameras)}; data_dir holds {spec.height}x{spec.width} frames of {', '.join(want)}: "
                     "use a world model trained on this dataset's frames")
