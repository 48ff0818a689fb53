"""The environments a policy stage trains in, built from a train_policy config: the trained world model of
`world_model_dir` as a batched, auto-resetting WorldModelEnv, or the simulator (the ppo_sim baseline)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np

from rsr.envs import registry, wrappers
from rsr.envs.tabletop.tasks import TASKS
from rsr.imagination import env as wm_env
from rsr.stages import policy_config
from rsr.stages import reward as stage_reward
from rsr.stages import tokenizer as stage_tokenizer
from rsr.stages import world_model as wm_stages
from rsr.utils import configs
from rsr.world_model import generate
from rsr.world_model.tokenizer import Tokenizer


def world_model_env(config, ds, progress: bool = True, chunk: int | None = None):
  """(make_env(params) -> batched auto-reset WorldModelEnv, world-model params, start bank).

  chunk: environments stepped at once (default: the config's wm_env.chunk for one device of this backend,
  `imagined_chunk`; 0 in run configs that predate it)."""
  wm = world_model_parts(config, ds, progress, chunk)
  return batched_world_model(config, wm), wm.params, wm.bank


def batched_world_model(config, wm: "WorldModelParts"):
  """make_env(params) -> the batched, auto-resetting WorldModelEnv over the config's start bank."""

  def make_env(p):
    return wrappers.AutoReset(wrappers.Vmap(wrappers.EpisodeStats(wm.make(p, wm.bank))),
                              reuse_first=config.wm_env.reset == "first")

  return make_env


@dataclasses.dataclass(frozen=True)
class WorldModelParts:
  """What a WorldModelEnv is built from: make(params, bank) -> the plain (unbatched-protocol) env."""

  make: Callable[[Any, Any], Any]
  params: Any  # WMParams
  bank: Any  # the config's StartBank
  encode_video: Callable[[np.ndarray], np.ndarray]  # uint8[K, T, H, W, 3] -> tokens i32[K, T, N]
  decode: Callable[[Any], Any]  # codes i32[..., N] -> frames f32[..., H, W, 3] in [0, 1]
  tokens: Any  # the world model's own TokenDataset (data_pipelines.tokenized)
  config: Any  # the world model's run config (world_model_dir/config.json)


def world_model_parts(config, ds, progress: bool = True, chunk: int | None = None) -> WorldModelParts:
  """The trained world model of config.world_model_dir as the pieces of a WorldModelEnv (world_model_env)."""
  wdir = os.path.abspath(config.world_model_dir)
  wcfg = policy_config.world_model_config(wdir)
  tok_model, tok_params, _ = wm_stages.load_tokenizer(wcfg, wdir, ds)
  tok_ds = wm_stages.tokenize_stage(wcfg, wdir, ds, progress=progress)
  vocab = stage_tokenizer.tokenizer_config(wcfg).codebook_size
  dyn_model, dyn_params = wm_stages.load_dynamics(wcfg, wdir, tok_ds, vocab, "dynamics")
  gen = generate.GenerateConfig.from_config(wcfg.generate)
  head = head_params = None
  if config.reward == "learned":
    head, head_params = stage_reward.load(wcfg, wdir, vocab, tok_ds.tokens_per_frame)
  w = config.wm_env
  goal_fn = None
  if w.goal == "model":
    goal_model, goal_params = wm_stages.load_dynamics(wcfg, wdir, tok_ds, vocab, "goal")
    run = jax.jit(lambda f, t: generate.goal_rollout(goal_model, goal_params, f, t, jax.random.PRNGKey(config.seed),
                                                     wcfg.dynamics_train.goal_max_steps, w.done_threshold, gen)[0])
    goal_fn = lambda f, t: run(f, t)  # noqa: E731
  bank = wm_env.start_bank(tok_ds, w.split, w.context, TASKS[config.task].task_id, w.goal, goal_fn, w.max_starts,
                           starts=w.starts, ds=ds if w.render == "anchored" else None,
                           seed=config.seed)
  parts = wm_env.WMParts(dynamics=dyn_model, tokenizer=tok_model, views=len(ds.frame_keys), reward_head=head)
  params = wm_env.WMParams(dynamics=dyn_params, tokenizer=tok_params, reward_head=head_params)
  chunk = policy_config.imagined_chunk(w.chunk, 1, jax.default_backend()) if chunk is None else chunk
  ecfg = configs.typed(wm_env.WMEnvConfig, w, reward=policy_config.reward_config(config), generate=gen, chunk=chunk)

  return WorldModelParts(make=lambda p, b: wm_env.WorldModelEnv(parts, p, b, ecfg), params=params, bank=bank,
                         encode_video=wm_stages.video_encoder(wcfg, tok_model, tok_params),
                         decode=jax.jit(lambda c: tok_model.apply(tok_params, c, method=Tokenizer.decode)),
                         tokens=tok_ds, config=wcfg)


def sim_env(config, ds):
  """The simulator PPO trains in (the `ppo_sim` baseline). Episodes run to the horizon: with the staged
  dense reward and termination on success, lingering near the goal out-earns succeeding (the noise-free
  expert returns 73.8 on push_cube at 100% success, the expert with action noise 0.6 returns 121.7 at
  34%). Evaluation (sim_evaluator) still ends episodes on success."""
  env = registry.make(config.task, height=ds.spec.height, width=ds.spec.width, terminate_on_success=False)
  batched = wrappers.AutoReset(wrappers.Vmap(wrappers.EpisodeStats(env)))
  return (lambda _: batched), None
