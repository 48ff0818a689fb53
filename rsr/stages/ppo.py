"""The `ppo` stage: critic warm-up, then PPO from the BC parameters in `env` (the world model or the
simulator), with the fused rollout-and-update step (rsr/train/fused.py) in the shared resumable loop; the
checkpoint holds the whole PolicyState (parameters, optimizer, the environments' state, reward scaler, RNG),
so a killed run resumes exactly. Evaluation is always in the real simulator (success on `eval.splits`),
whatever `env` the policy trains in.

    run(config, workdir, ds)        WORKDIR/checkpoints/ppo, tables/ppo.json, videos/
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rsr.agents import ppo as ppo_lib
from rsr.agents.networks import ActorCritic, init_params
from rsr.envs import registry, wrappers
from rsr.envs import rollout as rollout_lib
from rsr.envs.tabletop import scenes as scenes_lib
from rsr.eval import exploitation
from rsr.stages import bc as stage_bc
from rsr.stages import environments, policy_config
from rsr.train import fused, loop, sharding
from rsr.train.checkpoint import Checkpointer
from rsr.utils import media


def agent_policy(apply_fn, params, use_goal: bool, sample: bool = False) -> rollout_lib.Policy:
  """The agent as a rsr.envs.rollout Policy (one environment at a time), its action clipped: the mean
  (evaluation), or sampled from the Gaussian PPO trains (the policy's own visitation, the Dyna loop's data)."""

  def act(carry, state, key):
    obs = {"rgb": state.obs["rgb"][None], "task": state.obs["task"][None]}
    if use_goal:  # the simulator has no goal image: the BC convention (zeros)
      obs["goal"] = state.obs["goal"][None] if "goal" in state.obs else jnp.zeros_like(obs["rgb"])
    mean, log_std, _ = apply_fn(params, obs)
    action = mean[0] + jnp.exp(log_std[0]) * jax.random.normal(key, mean[0].shape) if sample else mean[0]
    return carry, jnp.clip(action, -1.0, 1.0)

  return rollout_lib.Policy(init=lambda: jnp.zeros(()), act=act)


def sim_evaluator(config, ds, apply_fn):
  """evaluate(params, split, episodes, key, record=False) -> Episodes, in the real simulator (mean actions)."""
  env = registry.make(config.task, height=ds.spec.height, width=ds.spec.width)

  def policy(params):
    return agent_policy(apply_fn, params, config.agent.use_goal)

  @jax.jit
  def run(params, key, scenes):
    return rollout_lib.rollout(env, policy(params), key, scenes, env.horizon)

  @jax.jit
  def run_recorded(params, key, scenes):
    return rollout_lib.rollout(env, policy(params), key, scenes, env.horizon, record=True)

  def evaluate(params, split: str, episodes: int, key, record: bool = False):
    scenes = scenes_lib.sample_batch(jax.random.fold_in(key, 1), split, episodes)
    return (run_recorded if record else run)(params, key, scenes)

  return evaluate


def run(config, workdir: str, ds, progress: bool = True, max_steps_this_run: int | None = None,
        mesh=None, wm: environments.WorldModelParts | None = None, start: Any = None) -> dict:
  """Critic warm-up, then PPO in config.env from the BC parameters; evaluation in the simulator.

  wm: the world model to train in (default: config.world_model_dir's); start: the actor-critic parameters
  to start from (default: this workdir's BC). The Dyna stage passes both, a round at a time."""
  policy_config.check(config, ("ppo",), ds)
  fcfg = policy_config.ppo_config(config)
  acfg = policy_config.agent_config(config)
  model = ActorCritic(acfg)
  hw = (ds.spec.height, ds.spec.width)
  params = stage_bc.load(config, workdir, hw) if start is None else start
  mesh = mesh if mesh is not None else sharding.make_mesh()
  if config.env == "world_model" and wm is None:
    chunk = policy_config.imagined_chunk(config.wm_env.chunk, mesh.devices.size, jax.default_backend())
    wm = environments.world_model_parts(config, ds, progress, chunk=chunk)
  if config.env == "world_model":
    make_env, env_params = environments.batched_world_model(config, wm), wm.params
    scenes = jnp.full((fcfg.num_envs,), -1, jnp.int32)  # -1: every start is drawn from the bank
  else:
    make_env, env_params = environments.sim_env(config, ds)
    scenes = scenes_lib.sample_batch(jax.random.PRNGKey(config.seed + 17), "id", fcfg.num_envs)
  opt = ppo_lib.make_optimizer(fcfg.ppo)
  state = jax.jit(lambda ep, s, k: fused.init_state(make_env(ep), params, opt, k, s, fcfg.num_envs))(
      env_params, scenes, jax.random.PRNGKey(config.seed + 1))
  state = fused.place(state, mesh, fcfg.num_envs)
  env_params = sharding.replicate(env_params, mesh)
  constrain = sharding.batch_constraint(mesh, fcfg.num_envs)
  step = fused.make_fused_step(make_env, model.apply, opt, fcfg, constrain)
  p = config.ppo
  calls = -(-p.updates // p.updates_per_call)
  warm_calls = -(-p.critic_warmup // p.updates_per_call)
  transitions = fcfg.num_envs * fcfg.rollout_len * fcfg.updates_per_call

  def step_fn(state, _):
    t0 = time.perf_counter()
    state, m = step(state, env_params, critic_only=int(state.step) < warm_calls)
    m = jax.device_get(m)
    m["env_steps_per_s"] = transitions / (time.perf_counter() - t0)
    m["critic_only"] = float(int(state.step) <= warm_calls)
    return state, m

  evaluate_sim = sim_evaluator(config, ds, model.apply)
  splits = policy_config.eval_splits(config)

  def evaluate(state):
    out = {}
    for split in splits:
      ep = evaluate_sim(state.params, split, config.eval.episodes, jax.random.PRNGKey(config.seed + 100))
      out[f"sim_{split}/success"] = float(np.mean(ep.success))
      out[f"sim_{split}/return"] = float(np.mean(ep.ret))
      out[f"sim_{split}/length"] = float(np.mean(ep.length))
    return out

  state, last, finished = loop.run(
      "ppo", workdir, state, step_fn, evaluate, loop.Schedule(calls, p.eval_every, p.checkpoint_every, log_every=1),
      compat(config), progress=progress, max_steps_this_run=max_steps_this_run)
  if not finished:
    return {}
  _videos(config, workdir, evaluate_sim, state.params, splits)
  if config.env == "world_model" and config.eval.videos > 0:
    _imagined_video(config, workdir, make_env, env_params, model.apply, state.params)
  summary = {"updates": calls * p.updates_per_call, "env": config.env, "reward": config.reward,
             "task": config.task, **last}
  if wm is not None and config.eval.gap_starts:
    use_goal = config.agent.use_goal
    summary["exploitation"] = exploitation_report(config, ds, wm, {
        "bc" if start is None else "start": agent_policy(model.apply, params, use_goal),
        "ppo": agent_policy(model.apply, jax.device_get(state.params), use_goal)})
  if sharding.lead():
    media.write_json(os.path.join(workdir, "tables", "ppo.json"), summary)
  return summary


def exploitation_report(config, ds, wm: environments.WorldModelParts, policies: dict) -> dict:
  """Imagined vs real success of each of `policies` (name -> rollout.Policy, e.g. the BC start and the PPO
  result) from the same eval.gap_starts id scenes after eval.gap_offset expert steps, over wm_env.horizon
  steps (rsr/eval/exploitation.py); the starts' goals are the expert's real success frames."""
  env = registry.make(config.task, height=ds.spec.height, width=ds.spec.width)
  starts = exploitation.paired_starts(env, wm.encode_video, jax.random.PRNGKey(config.seed + 400), "id",
                                      config.eval.gap_starts, config.wm_env.context, config.eval.gap_offset)
  imagined = wm.make(wm.params, starts.bank)
  key = jax.random.PRNGKey(config.seed + 401)
  return {name: exploitation.gap(env, imagined, policy, starts, key, config.wm_env.horizon)
          for name, policy in policies.items()}


# Switches added after PPO checkpoints were written, with the value those checkpoints ran with: at that value
# a switch is left out of the identity, so that they still load.
_COMPAT_OLD = {"wm_env": {"max_surprise": 0.0}, "rewards": {"align": "level", "success_fill": False},
               "ppo": {"actor_lr": 0.0, "critic_lr": 0.0}}


def compat(config) -> dict:
  """The fields a PPO checkpoint must agree on with the config that loads it."""
  fcfg = dataclasses.asdict(policy_config.ppo_config(config))
  # a resume may change the speed fields
  kept = policy_config.without_speed_fields({"ppo": fcfg["ppo"], "wm_env": config.wm_env.to_dict()})
  kept["rewards"] = config.rewards.to_dict()
  for group, old in _COMPAT_OLD.items():
    kept[group] = {k: v for k, v in kept[group].items() if not (k in old and v == old[k])}
  return {"agent": dataclasses.asdict(policy_config.agent_config(config)), "ppo": dict(fcfg, ppo=kept["ppo"]),
          "env": config.env, "reward": config.reward, "task": config.task, "seed": config.seed,
          "wm_env": kept["wm_env"] if config.env == "world_model" else {},
          "rewards": kept["rewards"] if config.reward == "endogenous" else {}}


def calls(config) -> int:
  """Compiled calls of a finished PPO stage (its checkpoint's last step)."""
  return -(-config.ppo.updates // config.ppo.updates_per_call)


def load_params(config, workdir: str, hw: tuple[int, int]) -> tuple[Any, int]:
  """(actor-critic parameters, step) of the PPO stage's latest checkpoint, read without the rest of the
  PolicyState (the environments' state: restoring it would need the environment built)."""
  acfg = policy_config.agent_config(config)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints", "ppo"), compat=compat(config))
  try:
    step = ckpt.latest_step()
    if step is None:
      raise ValueError(f"no PPO checkpoint in {ckpt.directory}")
    part = ckpt.restore_fields({"params": init_params(acfg, jax.random.PRNGKey(config.seed), hw)}, step)
  finally:
    ckpt.close()
  return part["params"], step


def _videos(config, workdir: str, evaluate_sim, params, splits) -> None:
  """videos/sim_SPLIT.gif: a few real-simulator episodes of the final policy, side by side."""
  n = config.eval.videos
  if n <= 0:
    return
  for split in splits:
    ep = evaluate_sim(params, split, n, jax.random.PRNGKey(config.seed + 200), record=True)
    frames = np.asarray(ep.frames["rgb"])  # [T + 1, n, H, W, 3]
    zoom = max(1, -(-96 // frames.shape[2]))
    video = np.stack([media.upscale(np.concatenate(list(f), axis=1), zoom) for f in frames])
    if sharding.lead():  # every process ran the episodes (a program over global arrays); one writes them
      media.write_gif(os.path.join(workdir, "videos", f"sim_{split}.gif"), video, fps=8)


def _imagined_video(config, workdir: str, make_env, env_params, apply_fn, params) -> None:
  """videos/imagined.gif: the final policy's episodes inside the world model, each imagined frame beside
  the goal image the reward aims at."""
  env = wrappers.unwrap(make_env(env_params))
  n = config.eval.videos
  run = jax.jit(lambda p, k: rollout_lib.rollout(env, agent_policy(apply_fn, p, config.agent.use_goal), k,
                                                 jnp.full((n,), -1, jnp.int32), env.horizon, trajectory=True))
  ep = run(params, jax.random.PRNGKey(config.seed + 300))
  rgb = np.asarray(ep.trajectory.obs["rgb"])  # [T + 1, n, H, W, 3]
  goal = np.asarray(ep.trajectory.obs["goal"])
  zoom = max(1, -(-96 // rgb.shape[2]))
  video = np.stack([media.upscale(np.concatenate([np.concatenate([r, g], axis=0) for r, g in zip(fr, go, strict=True)],
                                                 axis=1), zoom) for fr, go in zip(rgb, goal, strict=True)])
  if sharding.lead():
    media.write_gif(os.path.join(workdir, "videos", "imagined.gif"), video, fps=8)
