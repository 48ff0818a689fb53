"""The policy stages of experiments.train_policy: behaviour cloning, then PPO in the world model or the sim.

    bc_stage(config, workdir, ds)              WORKDIR/checkpoints/bc   (one init for every task: task-conditioned)
    ppo_stage(config, workdir, ds)             WORKDIR/checkpoints/ppo  (critic warm-up, then PPO)

Both run in the shared resumable loop (rsr/train/loop.py). The PPO stage's checkpoint holds the whole
`PolicyState` (parameters, optimizer, the environments' state, reward scaler, RNG), so a killed run
resumes exactly. Evaluation is always in the real simulator (success on `eval.splits`), whatever `env`
the policy trains in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from rsr.agents import bc as bc_lib
from rsr.agents import ppo
from rsr.agents.networks import ActorCritic, AgentConfig, init_params
from rsr.envs import registry, wrappers
from rsr.envs import rollout as rollout_lib
from rsr.envs.tabletop import scenes as scenes_lib
from rsr.envs.tabletop.tasks import TASKS
from rsr.rewards.endogenous import RewardConfig
from rsr.train import fused, loop, sharding
from rsr.train.checkpoint import Checkpointer
from rsr.utils import configs as configs_lib
from rsr.utils import media

ENVS = ("world_model", "sim")
REWARDS = ("endogenous", "learned", "handcrafted")


def agent_config(config) -> AgentConfig:
  a = config.agent
  return AgentConfig(channels=tuple(a.channels), hidden=a.hidden, use_goal=a.use_goal,
                     init_log_std=a.init_log_std)


def check(config, stages: tuple[str, ...] | list[str] | None = None, ds=None) -> None:
  """Every setting of the policy `stages` a command will run, before anything compiles: ValueErrors naming
  the field. `stages` defaults to config.stages. With the dataset (`ds`, data_pipelines.Dataset) also what the stages need of it (BC's
  demonstrations) and of the world model PPO would train in: world_model_dir exists, is a
  train_world_model workdir holding the stages PPO loads, and was trained on frames of the dataset's size."""
  from rsr.envs import SPLITS
  from rsr.utils import checks

  stages = [x.strip() for x in config.stages.split(",") if x.strip()] if stages is None else stages
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
  if "ppo" not in stages:
    return
  p = config.ppo
  checks.positive(p, "ppo", "updates", "num_envs", "rollout_len", "updates_per_call", "epochs", "minibatches", "lr",
                  "clip_eps", "max_grad_norm", "checkpoint_every", "eval_every")
  checks.non_negative(p, "ppo", "critic_warmup", "vf_coef", "ent_coef")
  for name in ("gamma", "lam"):
    if not 0.0 <= p[name] <= 1.0:
      raise ValueError(f"ppo.{name} must be in [0, 1], got {p[name]!r}")
  try:
    ppo_config(config)
  except ValueError as e:
    raise ValueError(f"ppo: {e}") from None
  checks.divides_devices(p.num_envs, "ppo.num_envs")
  e = config.eval
  for split in [x.strip() for x in e.splits.split(",") if x.strip()]:
    if split not in SPLITS:
      raise ValueError(f"eval.splits: unknown split {split!r}; valid: {', '.join(SPLITS)}")
  checks.positive(e, "eval", "episodes")
  checks.non_negative(e, "eval", "videos")
  if config.env != "world_model":
    return
  w = config.wm_env
  checks.positive(w, "wm_env", "horizon", "context", "max_starts")
  if not 0.0 < w.done_threshold < 1.0:
    raise ValueError(f"wm_env.done_threshold must be in (0, 1), got {w.done_threshold!r}")
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
  from data_pipelines import dataset as dataset_lib

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
  need = ["tokenizer", "dynamics"] + ["goal"] * (config.wm_env.goal == "model") + ["reward"] * (config.reward == "learned")
  for stage in need:
    directory = os.path.join(wdir, "checkpoints", stage)
    steps = [n for n in (os.listdir(directory) if os.path.isdir(directory) else []) if n.isdigit()]
    if not steps:
      raise ValueError(f"{field} has no '{stage}' checkpoint ({directory}), which PPO with env=world_model"
                       f"{', wm_env.goal=model' if stage == 'goal' else ''}{', reward=learned' if stage == 'reward' else ''}"
                       f" loads; run experiments.train_world_model there with --config.stages including {stage}")
  compat = os.path.join(wdir, "checkpoints", "tokenizer", "compat.json")
  try:
    with open(compat) as f:
      stored = json.load(f)
    image, cameras = [int(v) for v in stored["image"]], list(stored["cameras"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{field}: cannot read {compat} ({type(e).__name__}: {e})") from None
  from data_pipelines import rlds

  want = [rlds.camera_key(c) for c in spec.cameras]
  if image != [spec.height, spec.width] or cameras != want:
    raise ValueError(f"{field} (preset {wcfg.get('preset', '?')!r}) was trained on {image[0]}x{image[1]} frames "
                     f"of {', '.join(cameras)}; data_dir holds {spec.height}x{spec.width} frames of {', '.join(want)}: "
                     "use a world model trained on this dataset's frames")


# ---- behaviour cloning ------------------------------------------------------------------------------

@struct.dataclass
class BCState:
  step: jax.Array
  params: Any
  opt_state: Any


def _bc_optimizer(config) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config.bc.lr))


def bc_stage(config, workdir: str, ds, progress: bool = True, max_steps_this_run: int | None = None) -> dict:
  """Behaviour cloning on the train split (every task; windows of one frame)."""
  from data_pipelines.loader import WindowConfig, WindowLoader

  check(config, ("bc",))

  acfg = agent_config(config)
  model = ActorCritic(acfg)
  hw = (ds.spec.height, ds.spec.width)
  params = init_params(acfg, jax.random.PRNGKey(config.seed), hw)
  opt = _bc_optimizer(config)
  state = BCState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params))
  inner = bc_lib.make_bc_step(model.apply, opt, shift=config.bc.shift)
  base_key = jax.random.PRNGKey(config.seed + 7)
  front = ds.frame_keys[0]

  def to_batch(b):
    obs = {"rgb": b[front][:, 0], "task": b["task"]}
    if acfg.use_goal:  # demonstrations carry no goal image: the policy learns to act without one first
      obs["goal"] = np.zeros_like(obs["rgb"])
    return {"obs": obs, "action": b["action"][:, 0]}

  def step_fn(state: BCState, batch):
    # The augmentation's key follows the step: a resumed run draws the same shifts.
    params, opt_state, m = inner(state.params, state.opt_state, batch, jax.random.fold_in(base_key, state.step))
    return BCState(step=state.step + 1, params=params, opt_state=opt_state), m

  loader = WindowLoader(ds, "train", WindowConfig(batch_size=config.bc.batch_size, window=1), seed=config.seed,
                        select=bc_episodes(config, ds, "train"))
  held = to_batch(WindowLoader(ds, "val", WindowConfig(batch_size=256, window=1), seed=3,
                               select=bc_episodes(config, ds, "val")).batch(0))
  val_loss = jax.jit(lambda p: bc_lib.bc_loss(model.apply, p, held)[1])

  def evaluate(state):
    return {f"val/bc_{k}": float(v) for k, v in val_loss(state.params).items()}

  state, last, finished = loop.run(
      "bc", workdir, state, loader, step_fn, config.bc.steps, evaluate, config.bc.steps,
      config.bc.checkpoint_every, compat=bc_compat(config, hw),
      batch_fn=to_batch, progress=progress, max_steps_this_run=max_steps_this_run)
  return {"steps": config.bc.steps, **last} if finished else {}


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


def bc_compat(config, hw: tuple[int, int]) -> dict:
  """The fields a BC checkpoint must agree on with the config that loads it."""
  return {"agent": dataclasses.asdict(agent_config(config)), "image": list(hw), "bc_batch": config.bc.batch_size,
          "bc_episodes": config.bc.episodes, "bc_shift": config.bc.shift, "seed": config.seed}


def load_bc(config, workdir: str, hw: tuple[int, int]) -> Any:
  acfg = agent_config(config)
  directory = os.path.join(workdir, "checkpoints", "bc")
  ckpt = Checkpointer(directory, compat=bc_compat(config, hw))
  try:
    if ckpt.latest_step() != config.bc.steps:
      raise ValueError(f"behaviour cloning in {directory} is not finished: run the 'bc' stage first")
    params = init_params(acfg, jax.random.PRNGKey(config.seed), hw)
    opt = _bc_optimizer(config)
    state, _ = ckpt.restore(BCState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params)))
  finally:
    ckpt.close()
  return state.params


# ---- environments -----------------------------------------------------------------------------------

def world_model_config(world_model_dir: str) -> ml_collections.ConfigDict:
  path = os.path.join(world_model_dir, "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"world_model_dir: no {path} (run experiments.train_world_model there first)")
  return configs_lib.read(path, "world_model")




def reward_config(config) -> RewardConfig:
  r = config.rewards
  return RewardConfig(kind=config.reward, distance=r.distance, lpips_weights=r.lpips_weights,
                      w_align=r.w_align, w_done=r.w_done, tau=r.tau).validate()


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


def world_model_parts(config, ds, progress: bool = True, chunk: int | None = None) -> WorldModelParts:
  """The trained world model of config.world_model_dir as the pieces of a WorldModelEnv (world_model_env)."""
  from rsr.world_model import env as wm_env
  from rsr.world_model import generate, pipeline, tokenizer_train

  wdir = os.path.abspath(config.world_model_dir)
  wcfg = world_model_config(wdir)
  tok_model, tok_params, _ = pipeline.load_tokenizer(wcfg, wdir, ds)
  tok_ds = pipeline.tokenize_stage(wcfg, wdir, ds, progress=progress)
  vocab = tokenizer_train.tokenizer_config(wcfg).codebook_size
  dyn_model, dyn_params = pipeline.load_dynamics(wcfg, wdir, tok_ds, vocab, "dynamics")
  gen = generate.GenerateConfig.from_config(wcfg.generate)
  head = head_params = None
  if config.reward == "learned":
    from rsr.rewards import learned
    head, head_params = learned.load_reward_head(wcfg, wdir, vocab, tok_ds.tokens_per_frame)
  w = config.wm_env
  goal_fn = None
  if w.goal == "model":
    goal_model, goal_params = pipeline.load_dynamics(wcfg, wdir, tok_ds, vocab, "goal")
    run = jax.jit(lambda f, t: generate.goal_rollout(goal_model, goal_params, f, t, jax.random.PRNGKey(config.seed),
                                                     wcfg.dynamics_train.goal_max_steps, w.done_threshold, gen)[0])
    goal_fn = lambda f, t: run(f, t)  # noqa: E731
  render = w.render
  bank = wm_env.start_bank(tok_ds, w.split, w.context, TASKS[config.task].task_id, w.goal, goal_fn, w.max_starts,
                           starts=w.starts, ds=ds if render == "anchored" else None,
                           seed=config.seed)
  parts = wm_env.WMParts(dynamics=dyn_model, tokenizer=tok_model, views=len(ds.frame_keys), reward_head=head)
  params = wm_env.WMParams(dynamics=dyn_params, tokenizer=tok_params, reward_head=head_params)
  ecfg = wm_env.WMEnvConfig(horizon=w.horizon, done_threshold=w.done_threshold, reward=reward_config(config),
                            generate=gen, render=render,
                            chunk=imagined_chunk(w.chunk, 1, jax.default_backend()) if chunk is None
                            else chunk)

  return WorldModelParts(make=lambda p, b: wm_env.WorldModelEnv(parts, p, b, ecfg), params=params, bank=bank,
                         encode_video=pipeline.video_encoder(wcfg, tok_model, tok_params))


def sim_env(config, ds):
  """The simulator PPO trains in (the `ppo_sim` baseline). Episodes run to the horizon: with the staged
  dense reward and termination on success, lingering near the goal out-earns succeeding (the noise-free
  expert returns 73.8 on push_cube at 100% success, the expert with action noise 0.6 returns 121.7 at
  34%). Evaluation (sim_evaluator) still ends episodes on success."""
  env = registry.make(config.task, height=ds.spec.height, width=ds.spec.width, terminate_on_success=False)
  batched = wrappers.AutoReset(wrappers.Vmap(wrappers.EpisodeStats(env)))
  return (lambda _: batched), None


# ---- PPO --------------------------------------------------------------------------------------------

def ppo_config(config) -> fused.FusedConfig:
  p = config.ppo
  pc = ppo.PPOConfig(gamma=p.gamma, lam=p.lam, clip_eps=p.clip_eps, vf_coef=p.vf_coef, ent_coef=p.ent_coef,
                     epochs=p.epochs, minibatches=p.minibatches, lr=p.lr, max_grad_norm=p.max_grad_norm,
                     microbatch=p.microbatch)
  return fused.FusedConfig(num_envs=p.num_envs, rollout_len=p.rollout_len, updates_per_call=p.updates_per_call,
                           reward_scaling=p.reward_scaling, use_goal=config.agent.use_goal, ppo=pc).validate()


def mean_policy(apply_fn, params, use_goal: bool) -> rollout_lib.Policy:
  """The agent's mean action, clipped, for rsr.envs.rollout (one environment at a time)."""

  def act(carry, state, key):
    del key
    obs = {"rgb": state.obs["rgb"][None], "task": state.obs["task"][None]}
    if use_goal:  # the simulator has no goal image: the BC convention (zeros)
      obs["goal"] = state.obs["goal"][None] if "goal" in state.obs else jnp.zeros_like(obs["rgb"])
    mean, _, _ = apply_fn(params, obs)
    return carry, jnp.clip(mean[0], -1.0, 1.0)

  return rollout_lib.Policy(init=lambda: jnp.zeros(()), act=act)


def sim_evaluator(config, ds, apply_fn):
  """evaluate(params, split, episodes, key, record=False) -> Episodes, in the real simulator (mean actions)."""
  env = registry.make(config.task, height=ds.spec.height, width=ds.spec.width)

  def policy(params):
    return mean_policy(apply_fn, params, config.agent.use_goal)

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


def ppo_stage(config, workdir: str, ds, progress: bool = True, max_steps_this_run: int | None = None,
              mesh=None) -> dict:
  """Critic warm-up, then PPO in config.env from the BC parameters; evaluation in the simulator."""
  check(config, ("ppo",), ds)
  fcfg = ppo_config(config)
  acfg = agent_config(config)
  model = ActorCritic(acfg)
  hw = (ds.spec.height, ds.spec.width)
  params = load_bc(config, workdir, hw)
  mesh = mesh if mesh is not None else sharding.make_mesh()
  wm = None
  if config.env == "world_model":
    chunk = imagined_chunk(config.wm_env.chunk, mesh.devices.size, jax.default_backend())
    wm = world_model_parts(config, ds, progress, chunk=chunk)
    make_env, env_params = batched_world_model(config, wm), wm.params
    scenes = jnp.full((fcfg.num_envs,), -1, jnp.int32)  # -1: every start is drawn from the bank
  else:
    make_env, env_params = sim_env(config, ds)
    scenes = scenes_lib.sample_batch(jax.random.PRNGKey(config.seed + 17), "id", fcfg.num_envs)
  opt = ppo.make_optimizer(fcfg.ppo)
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
  splits = [s.strip() for s in config.eval.splits.split(",") if s.strip()]

  def evaluate(state):
    out = {}
    for split in splits:
      ep = evaluate_sim(state.params, split, config.eval.episodes, jax.random.PRNGKey(config.seed + 100))
      out[f"sim_{split}/success"] = float(np.mean(ep.success))
      out[f"sim_{split}/return"] = float(np.mean(ep.ret))
      out[f"sim_{split}/length"] = float(np.mean(ep.length))
    return out

  state, last, finished = loop.run(
      "ppo", workdir, state, None, step_fn, calls, evaluate, p.eval_every, p.checkpoint_every,
      compat=ppo_compat(config), log_every=1, progress=progress, max_steps_this_run=max_steps_this_run)
  if not finished:
    return {}
  _videos(config, workdir, evaluate_sim, state.params, splits)
  if config.env == "world_model" and config.eval.videos > 0:
    _imagined_video(config, workdir, make_env, env_params, model.apply, state.params)
  summary = {"updates": calls * p.updates_per_call, "env": config.env, "reward": config.reward,
             "task": config.task, **last}
  if wm is not None and config.eval.gap_starts:
    summary["exploitation"] = exploitation_report(config, ds, wm, model.apply,
                                                  {"bc": params, "ppo": jax.device_get(state.params)})
  if sharding.lead():
    media.write_json(os.path.join(workdir, "tables", "ppo.json"), summary)
  return summary


def exploitation_report(config, ds, wm: WorldModelParts, apply_fn, named_params: dict) -> dict:
  """Imagined vs real success of each of `named_params` (e.g. the BC start and the PPO result) from the same
  eval.gap_starts id scenes, over wm_env.horizon steps (rsr/eval/exploitation.py); the starts' goals are
  the expert's real success frames."""
  from rsr.eval import exploitation

  env = registry.make(config.task, height=ds.spec.height, width=ds.spec.width)
  starts = exploitation.paired_starts(env, wm.encode_video, jax.random.PRNGKey(config.seed + 400), "id",
                                      config.eval.gap_starts, config.wm_env.context)
  imagined = wm.make(wm.params, starts.bank)
  key = jax.random.PRNGKey(config.seed + 401)
  return {name: exploitation.gap(env, imagined, mean_policy(apply_fn, p, config.agent.use_goal), starts, key,
                                 config.wm_env.horizon) for name, p in named_params.items()}


# Policy-config fields (by section) that change how the work is computed, not what it computes: a
# checkpoint or a finished run stays valid when they change (ppo_compat, rsr.eval.reproduce).
SPEED_FIELDS = {"ppo": ("microbatch",), "wm_env": ("chunk",)}


def without_speed_fields(d: dict) -> dict:
  """A policy config as a plain dict (or some of its sections) without SPEED_FIELDS."""
  return {k: ({f: x for f, x in v.items() if f not in SPEED_FIELDS[k]} if k in SPEED_FIELDS else v)
          for k, v in d.items()}


def ppo_compat(config) -> dict:
  """The fields a PPO checkpoint must agree on with the config that loads it."""
  fcfg = dataclasses.asdict(ppo_config(config))
  kept = without_speed_fields({"ppo": fcfg["ppo"], "wm_env": config.wm_env.to_dict()})  # a resume may change them
  return {"agent": dataclasses.asdict(agent_config(config)), "ppo": dict(fcfg, ppo=kept["ppo"]),
          "env": config.env, "reward": config.reward, "task": config.task, "seed": config.seed,
          "wm_env": kept["wm_env"] if config.env == "world_model" else {},
          "rewards": config.rewards.to_dict() if config.reward == "endogenous" else {}}


def ppo_calls(config) -> int:
  """Compiled calls of a finished PPO stage (its checkpoint's last step)."""
  return -(-config.ppo.updates // config.ppo.updates_per_call)


def load_ppo_params(config, workdir: str, hw: tuple[int, int]) -> tuple[Any, int]:
  """(actor-critic parameters, step) of the PPO stage's latest checkpoint, read without the rest of the
  PolicyState (the environments' state: restoring it would need the environment built)."""
  acfg = agent_config(config)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints", "ppo"), compat=ppo_compat(config))
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
  env = make_env(env_params)
  while isinstance(env, wrappers.Wrapper):  # the single world-model env under the batch wrappers
    env = env.env
  n = config.eval.videos
  run = jax.jit(lambda p, k: rollout_lib.rollout(env, mean_policy(apply_fn, p, config.agent.use_goal), k,
                                                 jnp.full((n,), -1, jnp.int32), env.horizon, trajectory=True))
  ep = run(params, jax.random.PRNGKey(config.seed + 300))
  rgb = np.asarray(ep.trajectory.obs["rgb"])  # [T + 1, n, H, W, 3]
  goal = np.asarray(ep.trajectory.obs["goal"])
  zoom = max(1, -(-96 // rgb.shape[2]))
  video = np.stack([media.upscale(np.concatenate([np.concatenate([r, g], axis=0) for r, g in zip(fr, go, strict=True)],
                                                 axis=1), zoom) for fr, go in zip(rgb, goal, strict=True)])
  if sharding.lead():
    media.write_gif(os.path.join(workdir, "videos", "imagined.gif"), video, fps=8)
