r"""Throughput benchmarks; each entry writes its figures into one JSON object.

    python -m experiments.bench --only=sim --out=/tmp/bench.json

Entries:
  sim   physics + 64x64 front-camera render for a batch of environments: the jitted, vmapped MJX + JAX
        renderer path against the conventional loop (C MuJoCo stepping each environment, then its OpenGL
        renderer), same task, same actions, measured in the same run. Also reports the JAX path's
        physics-only and render-only rates to show where the time goes.
  data  the windowed loader (data_pipelines.loader): (B, T) windows/s decoded from array_record streaming
        (every window decodes its episode from disk) and from a warm cache, and through `iterate` (background
        prefetch + device placement). Reads --data_dir, or writes a synthetic dataset of --data_episodes
        episodes in the real schema at --image_size first (a temporary directory).
  world_model  the cpu preset's dynamics model on random tokens: training tokens/s (one jitted step of
        --wm_batch windows), and imagination frames/s for --wm_envs environments: MaskGIT with the temporal
        cache (one frame of work per refinement) against recomputing the whole window per refinement.
  imagination  RL inside the world model at the cpu presets (random weights: the cost does not depend on
        them): imagined transitions/s of the fused PPO step (rsr/train/fused.py: --imag_envs environments,
        policy -> MaskGIT frame with the cache -> decode -> endogenous reward, GAE and the PPO epochs, all
        one compiled call) against the reference design (a gym-style Python loop over 2 environments, one
        step per call: the policy, the next frame recomputing the whole window per refinement, pixels
        decoded to the host and the reward computed there from the tokenizer's features), same weights,
        same run. FLOP/s of the fused step (XLA's cost analysis per piece x how often the step runs it,
        since XLA counts a scan's body once) over the measured dense-matmul FLOP/s of this machine (mfu).
        With --imag_guidance=W the same fused step with action guidance W is timed too (its cost ratio).
  scaling  world-model training tokens/s on --scaling_devices devices (fake CPU devices unless XLA_FLAGS
        already sets them; data parallel, plus one FSDP row with a model axis of 2), relative to 1 device;
        and the paper model on 8 devices under FSDP: per-device parameter and optimizer memory for model
        axes 1..8 (from the arrays' shardings) and the time to lower and compile one training step.
        Run it alone: it starts jax with the fake devices.
Speed is compared as a ratio within one run; the machine is shared and absolute numbers are noisy.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time

from absl import flags

from experiments.common import run, usage_errors

BENCHES = ("sim", "data", "world_model", "imagination", "scaling")
_ONLY = flags.DEFINE_string("only", ",".join(BENCHES), f"Comma list of entries to run: {', '.join(BENCHES)}.")
_OUT = flags.DEFINE_string("out", None, "Where to write the JSON figures.")
_BATCH = flags.DEFINE_integer("batch", 64, "Environments stepped in parallel.")
_SIZE = flags.DEFINE_integer("image_size", 64, "Rendered image height and width.")
_STEPS = flags.DEFINE_integer("steps", 20, "Control steps timed on the JAX path.")
_REF_STEPS = flags.DEFINE_integer("reference_steps", 3, "Control steps timed per env on the reference loop.")
_TASK = flags.DEFINE_string("task", "pick_cube", "Task whose scene is simulated.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "data: a collected dataset (default: a synthetic one).")
_DATA_EPISODES = flags.DEFINE_integer("data_episodes", 256, "data: episodes of the synthetic dataset.")
_DATA_BATCH = flags.DEFINE_integer("data_batch", 32, "data: windows per batch.")
_WINDOW = flags.DEFINE_integer("window", 16, "data: frames per window.")
_DATA_STEPS = flags.DEFINE_integer("data_steps", 50, "data: batches timed per measurement.")
_WM_PRESET = flags.DEFINE_string("wm_preset", "cpu", "world_model: preset of configs/world_model.py.")
_WM_ENVS = flags.DEFINE_integer("wm_envs", 64, "world_model: environments imagined in parallel.")
_WM_OUTPUT = flags.DEFINE_string("wm_output", "", "world_model: the token head, codes | digits ('': the preset's).")
_WM_SELF_CONTEXT = flags.DEFINE_float("wm_self_context", None, "world_model: dynamics_train.self_context of the "
                                      "timed training step (its extra guessing pass; default: the preset's).")
_WM_CHANNELS = flags.DEFINE_list("wm_channels", [], "world_model: tokenizer.channels, one per downsampling stage "
                                 "(3 stages: an 8x8 token grid at 64x64; default: the preset's).")
_WM_LEVELS = flags.DEFINE_list("wm_levels", [], "world_model: tokenizer.levels, the FSQ digits (default: the "
                               "preset's).")
_IMAG_ENVS = flags.DEFINE_integer("imag_envs", 256, "imagination: environments of the fused step.")
_IMAG_REF_STEPS = flags.DEFINE_integer("imag_reference_steps", 6, "imagination: steps timed on the reference loop.")
_IMAG_GUIDANCE = flags.DEFINE_float("imag_guidance", 1.0, "imagination: also time the fused step with this action "
                                    "guidance (generate.action_guidance; 1: not timed) in the same run.")
_IMAG_CHUNK = flags.DEFINE_integer("imag_chunk", -1, "imagination: environments imagined at once (wm_env.chunk; "
                                   "-1: auto, the cpu preset's: 8 on a CPU, the whole batch on an accelerator; "
                                   "0: the whole batch).")
_SCALE_PRESET = flags.DEFINE_string("scaling_preset", "cpu", "scaling: world-model preset whose training is timed.")
_SCALE_DEVICES = flags.DEFINE_string("scaling_devices", "1,2,4,8", "scaling: device counts (CPU: fake devices).")
_SCALE_PAPER = flags.DEFINE_bool("scaling_paper", True, "scaling: also compile one FSDP step of the paper "
                                 "model on an 8-device mesh (minutes on CPU).")


def _timed_steps(step, state, *args, repeats: int = 3):
  """(state, mean seconds per call) of a state-threading step after one warm-up (compilation) call."""
  import jax
  state, m = step(state, *args)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(repeats):
    state, m = step(state, *args)
  jax.block_until_ready(m)
  return state, (time.perf_counter() - t) / repeats


def _timed(fn, *args, repeats: int = 3) -> float:
  """Best wall time of `repeats` calls after one warm-up (compilation) call."""
  import jax
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best


def bench_sim(task: str, batch: int, size: int, steps: int, ref_steps: int) -> dict:
  import jax
  import mujoco
  import numpy as np

  from rsr import envs
  from rsr.envs.tabletop import mjcf, oracle, scenes
  from rsr.envs.tabletop.env import action_to_ctrl

  env = envs.make(task, height=size, width=size)
  key = jax.random.PRNGKey(0)
  scene = scenes.sample_batch(key, "id", batch)
  state = jax.jit(jax.vmap(env.reset))(jax.random.split(key, batch), scene)
  actions = jax.random.uniform(jax.random.PRNGKey(1), (steps, batch, 5), minval=-1.0, maxval=1.0)

  def run(state, actions):
    def body(s, a):
      s = jax.vmap(env.step)(s, a)
      return s, s.obs["rgb"][:, 0, 0]
    return jax.lax.scan(body, state, actions)

  jax_time = _timed(jax.jit(run), state, actions)
  render_only = jax.jit(jax.vmap(lambda inner: env.render(inner)[0]))
  render_time = _timed(render_only, state.inner)
  # Physics alone: the same steps in a state-only env (no camera).
  blind = envs.make(task, cameras=())
  blind_state = jax.jit(jax.vmap(blind.reset))(jax.random.split(key, batch), scene)
  physics = jax.jit(lambda s, a: jax.lax.scan(lambda s, a: (jax.vmap(blind.step)(s, a), None), s, a)[0])
  physics_time = _timed(physics, blind_state, actions)

  # Reference: one C MuJoCo model, one MjData per env, one OpenGL renderer, a Python loop.
  first = jax.tree_util.tree_map(lambda x: x[0], state.inner)
  m, _ = oracle.to_mujoco(env, first)
  datas = [oracle.to_mujoco(env, jax.tree_util.tree_map(lambda x, i=i: x[i], state.inner))[1]
           for i in range(batch)]
  acts = np.asarray(actions)
  renderer = mujoco.Renderer(m, size, size)
  try:
    def reference():
      for t in range(ref_steps):
        for i, d in enumerate(datas):
          oracle.step(m, d, np.asarray(action_to_ctrl(d.qpos, acts[t % steps, i])), mjcf.N_SUBSTEPS)
          renderer.update_scene(d, camera="front")
          renderer.render()
    reference()  # warm-up
    t0 = time.perf_counter()
    reference()
    ref_time = time.perf_counter() - t0
  finally:
    renderer.close()

  jax_fps = batch * steps / jax_time
  ref_fps = batch * ref_steps / ref_time
  return {
      "task": task, "batch": batch, "image_size": size, "shadows": env.config.shadows,
      "jax_frames_per_s": jax_fps,
      "jax_render_only_frames_per_s": batch / render_time,
      "jax_physics_only_steps_per_s": batch * steps / physics_time,
      "physics_substeps": mjcf.N_SUBSTEPS,
      "reference_frames_per_s": ref_fps,
      "ratio": jax_fps / ref_fps,
      "jax_device": str(jax.devices()[0]),
      "reference": "C MuJoCo mj_step + mujoco.Renderer (OpenGL via MUJOCO_GL="
                   f"{os.environ.get('MUJOCO_GL')}), one env at a time",
  }


def bench_data(data_dir: str | None, episodes: int, size: int, batch: int, window: int, steps: int) -> dict:
  import dataclasses
  import tempfile

  import jax
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  from data_pipelines import dataset as dataset_lib
  from data_pipelines import loader as loader_lib
  from data_pipelines import synthetic

  tmp = None
  if data_dir is None:
    tmp = tempfile.TemporaryDirectory(prefix="rsr_bench_data_")
    data_dir = synthetic.write_synthetic(tmp.name, {"train": episodes}, image_size=size)
  try:
    ds = dataset_lib.open_dataset(data_dir)
    cfg = loader_lib.WindowConfig(batch_size=batch, window=window)
    n = ds.num_episodes("train")

    def timed_batches(loader, first_step):
      t = time.perf_counter()
      for s in range(first_step, first_step + steps):
        loader.batch(s)
      return batch * steps / (time.perf_counter() - t)

    t = time.perf_counter()
    for i in range(min(n, 64)):
      ds.read("train", i)
    decode_eps = min(n, 64) / (time.perf_counter() - t)
    # Streaming: a cache of one episode, so every window decodes its episode from disk (a dataset far
    # larger than memory); warm: every episode decoded once and held (the cache's normal state).
    stream = timed_batches(loader_lib.WindowLoader(ds, "train", dataclasses.replace(cfg, cache_gb=0.0)), 0)
    warm_loader = loader_lib.WindowLoader(ds, "train", cfg)
    for i in range(n):
      warm_loader._episode(i)  # fill the cache: every episode decoded once  # pylint: disable=protected-access
    warm = timed_batches(warm_loader, 0)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    it = warm_loader.iterate(warm_loader.init_state(), sharding=sharding)
    jax.block_until_ready(next(it)[0])
    t = time.perf_counter()
    for _ in range(steps):
      b, _ = next(it)
    jax.block_until_ready(b)
    device = batch * steps / (time.perf_counter() - t)
    it.close()
    frame_bytes = ds.spec.height * ds.spec.width * 3 * len(ds.spec.cameras)
    return {
        "data_dir": None if tmp else ds.path, "synthetic": tmp is not None, "episodes": n,
        "image": [ds.spec.height, ds.spec.width, 3], "cameras": list(ds.spec.cameras),
        "batch": batch, "window": window, "windows_per_epoch": warm_loader.num_windows,
        "decode_episodes_per_s": decode_eps,
        "stream_windows_per_s": stream, "warm_windows_per_s": warm, "iterate_windows_per_s": device,
        "warm_frames_per_s": warm * window, "warm_mb_per_s": warm * window * frame_bytes / 1e6,
        "trainer_windows_per_s": None,  # the world-model trainer (next issue) reports its own rate
    }
  finally:
    if tmp is not None:
      tmp.cleanup()


def _ints(flag) -> tuple[int, ...]:
  try:
    return tuple(int(x) for x in flag.value)
  except ValueError:
    raise ValueError(f"--{flag.name} takes integers separated by commas, got {','.join(flag.value)!r}") from None


def bench_world_model(preset: str, envs: int, output: str = "", self_context: float | None = None,
                      channels: tuple[int, ...] = (), levels: tuple[int, ...] = ()) -> dict:
  """The preset's dynamics training step (its dynamics_train settings; self_context overrides the preset's) and
  its imagination, cached against the uncached reference design, on random tokens and weights. `channels` and
  `levels` override the tokenizer's: the token grid and the vocabulary the dynamics is sized for."""
  import jax
  import jax.numpy as jnp

  from experiments.configs import world_model as wm_configs
  from rsr.stages import tokenizer as stage_tokenizer
  from rsr.stages import world_model as wm_stages
  from rsr.world_model import dynamics as dyn
  from rsr.world_model import dynamics_train, generate

  c = wm_configs.get_config(preset)
  if output:
    c.dynamics.output = output
  if channels:
    c.tokenizer.channels = tuple(channels)
  if levels:
    c.tokenizer.levels = tuple(levels)
  tcfg = stage_tokenizer.tokenizer_config(c)
  # The paper-sized presets (paper, gpu, tpu_pod) model the paper's data: 128x128 front + wrist views.
  paper_like = wm_configs.model_preset(preset) == "paper"
  side, views = (128 // tcfg.downsample, 2) if paper_like else (64 // tcfg.downsample, 1)
  mcfg = dynamics_train.dynamics_config(c, tcfg.codebook_size, views * side * side, "action")
  model = dyn.Dynamics(mcfg)
  if self_context is not None:
    c.dynamics_train.self_context = self_context
  trn = wm_stages.train_config(c)
  state = dynamics_train.init_state(model, trn, jax.random.PRNGKey(0))
  step = dynamics_train.make_train_step(model, trn)
  b, w, n = trn.batch_size, mcfg.window, mcfg.tokens_per_frame
  key = jax.random.PRNGKey(1)
  batch = {"tokens": jax.random.randint(key, (b, w, n), 0, mcfg.vocab), "action": jnp.zeros((b, w, 5)),
           "task": jnp.zeros((b,), jnp.int32), "done": jnp.zeros((b, w)), "mask": jnp.ones((b, w), bool)}
  t0 = time.perf_counter()
  flops = _flops(step, state, batch)  # XLA's count (lowers and compiles; nothing runs, nothing donated)
  state, train_time = _timed_steps(step, state, batch)
  mm = matmul_flops_per_s(dtype=mcfg.dtype)
  # Printed now: on a time-limited accelerator lease the imagination half below can outlast the lease
  # (each of its programs compiles separately), and the training figure should not be lost with it.
  print(f"world_model: training step {train_time:.3f} s ({flops / 1e9:.0f} GFLOP, mfu "
        f"{flops / train_time / mm:.2f} of {mm / 1e9:.0f} {mcfg.dtype} matmul GFLOP/s); compile and "
        f"timing took {time.perf_counter() - t0:.0f} s; now the imagination programs (compiling...)", flush=True)
  params = state.params
  gen = generate.GenerateConfig.from_config(c.generate)  # what the trainers decode with
  cache = dyn.init_cache(mcfg, envs)
  obs = jax.jit(lambda p, cch, tok: model.apply(p, cch, tok, jnp.zeros((envs, 5)), jnp.ones((envs,), bool),
                                               jnp.zeros((envs,), jnp.int32), method=dyn.Dynamics.observe)[0])
  for _ in range(w - 1):  # a full cache, as in steady-state imagination
    cache = obs(params, cache, jax.random.randint(key, (envs, n), 0, mcfg.vocab))
  cached = jax.jit(lambda p, cch, k: generate.imagine(model, p, cch, jnp.zeros((envs, 5)),
                                                      jnp.zeros((envs,), jnp.int32), k, gen)[1])

  def uncached_frame(p, window_tokens, k):
    # The reference design: every refinement re-runs the whole window (context + the frame being made).
    toks = jnp.concatenate([window_tokens, jnp.full((envs, 1, n), mcfg.mask_id)], axis=1)[:, -w:]
    acts = jnp.zeros((envs, w, 5))
    for s_ in range(gen.steps):
      logits, _ = model.apply(p, toks, acts, jnp.zeros((envs,), jnp.int32))
      new = jnp.argmax(logits[:, -1], -1)
      keep = generate.fixed_after(s_, gen.steps, n)
      conf = jnp.max(jax.nn.log_softmax(logits[:, -1]), -1)
      masked = toks[:, -1] == mcfg.mask_id
      conf = jnp.where(masked, conf, jnp.inf)
      th = jnp.sort(conf, -1)[:, n - keep][:, None]
      toks = toks.at[:, -1].set(jnp.where(masked & (conf >= th), new, toks[:, -1]))
    model.apply(p, toks, acts, jnp.zeros((envs,), jnp.int32))  # the final pass (done head)
    return toks[:, -1]

  uncached = jax.jit(uncached_frame)
  window_tokens = jax.random.randint(key, (envs, w - 1, n), 0, mcfg.vocab)
  t_cached = _timed(cached, params, cache, key)
  t_uncached = _timed(uncached, params, window_tokens, key)
  return {
      "preset": preset, "output": c.dynamics.output, "params": dyn.param_count(params), "window": w,
      "tokens_per_frame": n, "vocab": tcfg.codebook_size,
      "train_batch": b, "self_context": trn.self_context, "train_step_s": train_time,
      "train_tokens_per_s": b * w * n / train_time,
      "train_windows_per_s": b / train_time, "train_gflop_per_step": flops / 1e9,
      "train_gflop_per_s": flops / 1e9 / train_time, "matmul_flops_per_s": mm, "dtype": mcfg.dtype,
      "train_mfu": flops / train_time / mm,
      "envs": envs, "maskgit_steps": gen.steps,
      "imagined_frames_per_s": envs / t_cached, "uncached_frames_per_s": envs / t_uncached,
      "cache_speedup": t_uncached / t_cached,
  }


def bench_scaling(preset: str, device_counts: list[int], paper: bool) -> dict:
  """World-model training throughput on 1..8 devices (data parallel; the batch is split, the parameters
  replicated), one FSDP row (model axis 2), and the paper model's per-device memory under FSDP."""
  import jax
  import jax.numpy as jnp

  from experiments.configs import world_model as wm_configs
  from rsr.train import sharding
  from rsr.world_model import dynamics as dyn
  from rsr.world_model import dynamics_train

  c = wm_configs.get_config(preset)
  side = 16 if preset != "tiny" else 4
  mcfg = dynamics_train.dynamics_config(c, 1000, side * side, "action")
  model = dyn.Dynamics(mcfg)
  b, w, n = max(c.dynamics_train.batch_size, max(device_counts)), mcfg.window, mcfg.tokens_per_frame
  trn = dynamics_train.DynamicsTrainConfig(batch_size=b, steps=100)
  key = jax.random.PRNGKey(0)
  host_batch = {"tokens": jax.random.randint(key, (b, w, n), 0, 1000), "action": jnp.zeros((b, w, 5)),
                "task": jnp.zeros((b,), jnp.int32), "done": jnp.zeros((b, w)), "mask": jnp.ones((b, w), bool)}
  rows = []
  for devices, model_axis in [(d, 1) for d in device_counts] + [(max(device_counts), 2)]:
    if devices > jax.device_count():
      continue
    mesh = sharding.make_mesh(devices, model=model_axis)
    fsdp = model_axis > 1
    placed = sharding.state_shardings(jax.eval_shape(lambda: dynamics_train.init_state(model, trn, key)),
                                      mesh, fsdp)
    state = jax.device_put(dynamics_train.init_state(model, trn, key), placed)
    batch = jax.device_put(host_batch, sharding.batch_sharding(mesh))
    train_step = dynamics_train.make_train_step(model, trn)

    def step(s, bt, train_step=train_step, placed=placed):  # one layout across calls, as loop.run keeps it
      s, m = train_step(s, bt)
      return jax.device_put(s, placed), m

    state, t = _timed_steps(step, state, batch, repeats=3)
    rows.append({"devices": devices, "model_axis": model_axis, "fsdp": fsdp, "step_s": t,
                 "tokens_per_s": b * w * n / t})
  base = rows[0]["tokens_per_s"]
  for r in rows:
    r["relative_to_1"] = r["tokens_per_s"] / base
  out = {"preset": preset, "batch": b, "rows": rows}
  if paper and jax.device_count() >= 8:
    pc = wm_configs.get_config("paper")
    pcfg = dynamics_train.dynamics_config(pc, 15360, 512, "action")
    pm = dyn.Dynamics(pcfg)
    ptrn = dynamics_train.DynamicsTrainConfig(batch_size=8, steps=100)
    t = time.perf_counter()
    lowered, abstract, _ = dynamics_train.lower_sharded_step(pm, ptrn, sharding.make_mesh(8, model=8), True, 8)
    t_lower = time.perf_counter() - t
    compiled = lowered.compile()
    mem = {}
    for m in (1, 2, 4, 8):
      sh = sharding.state_shardings(abstract, sharding.make_mesh(8, model=m), fsdp=m > 1)
      mem[f"model_{m}"] = {"params_mb": sharding.bytes_per_device(abstract.params, sh.params) / 2**20,
                           "opt_state_mb": sharding.bytes_per_device(abstract.opt_state, sh.opt_state) / 2**20}
    out["paper"] = {"params": dyn.param_count(abstract.params), "per_device": mem, "lower_s": t_lower,
                    "compile_s": time.perf_counter() - t - t_lower,
                    "params_mb_after_step": sharding.bytes_per_device(
                        abstract.params, compiled.output_shardings[0].params) / 2**20}
  return out


def matmul_flops_per_s(n: int | None = None, repeats: int = 5, dtype: str = "float32") -> float:
  """Dense matmul FLOP/s of this machine now in `dtype` (the denominator of compute efficiency: bf16 for
  a model computing in bf16); 1024^2 on a CPU, 8192^2 on an accelerator (smaller products leave a GPU
  idle between launches)."""
  import jax
  import jax.numpy as jnp

  n = n or (1024 if jax.default_backend() == "cpu" else 8192)

  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
  mm = jax.jit(lambda x: x @ x)
  return 2.0 * n ** 3 / _timed(mm, a, repeats=repeats)


def _flops(fn, *args) -> float:
  """XLA's FLOP count of one call of fn(*args) (a scan's body counts once: callers multiply)."""
  import jax
  ca = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((ca[0] if isinstance(ca, list) else ca).get("flops", float("nan")))


def bench_imagination(envs: int, reference_steps: int, chunk: int = -1, guidance: float = 1.0) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from experiments.configs import policy as policy_configs
  from experiments.configs import world_model as wm_configs
  from rsr.agents import ppo
  from rsr.agents.networks import ActorCritic, init_params
  from rsr.envs import wrappers
  from rsr.imagination import env as wm_env
  from rsr.rewards import distance
  from rsr.stages import policy_config
  from rsr.train import fused
  from rsr.world_model import dynamics as dyn
  from rsr.world_model import dynamics_train, generate
  from rsr.world_model.tokenizer import Tokenizer, TokenizerConfig

  wc, pc = wm_configs.get_config("cpu"), policy_configs.get_config("cpu")
  pc.ppo.num_envs, pc.ppo.updates_per_call = envs, 1
  tcfg = TokenizerConfig(channels=tuple(wc.tokenizer.channels), levels=tuple(wc.tokenizer.levels))
  side, hw = 64 // tcfg.downsample, 64
  mcfg = dynamics_train.dynamics_config(wc, tcfg.codebook_size, side * side, "action")
  tok, model = Tokenizer(tcfg), dyn.Dynamics(mcfg)
  key = jax.random.PRNGKey(0)
  tok_params = tok.init(key, jnp.zeros((1, hw, hw, 3), jnp.uint8))
  dyn_params = dynamics_train.init_state(model, dynamics_train.DynamicsTrainConfig(), key).params
  n, c = mcfg.tokens_per_frame, pc.wm_env.context
  bank = wm_env.StartBank(context=jax.random.randint(key, (64, c, n), 0, mcfg.vocab),
                          actions=jnp.zeros((64, c, 5)), task=jnp.zeros((64,), jnp.int32),
                          goal=jax.random.randint(jax.random.PRNGKey(1), (64, n), 0, mcfg.vocab))
  gen = generate.GenerateConfig.from_config(wc.generate)
  chunk = policy_config.imagined_chunk(pc.wm_env.chunk if chunk < 0 else chunk, 1, jax.default_backend())
  ecfg = wm_env.WMEnvConfig(horizon=pc.wm_env.horizon, reward=policy_config.reward_config(pc), generate=gen,
                            chunk=chunk)
  parts = wm_env.WMParts(dynamics=model, tokenizer=tok)
  env_params = wm_env.WMParams(dynamics=dyn_params, tokenizer=tok_params)
  def env_maker(cfg: wm_env.WMEnvConfig):
    return lambda p: wrappers.AutoReset(wrappers.Vmap(wrappers.EpisodeStats(
        wm_env.WorldModelEnv(parts, p, bank, cfg))), reuse_first=pc.wm_env.reset == "first")

  make_env = env_maker(ecfg)
  acfg = policy_config.agent_config(pc)
  agent = ActorCritic(acfg)
  params = init_params(acfg, key, (hw, hw))
  fcfg = policy_config.ppo_config(pc)
  opt = ppo.make_optimizer(fcfg.ppo)
  state = jax.jit(lambda ep: fused.init_state(make_env(ep), params, opt, key, jnp.full((envs,), -1, jnp.int32),
                                              envs))(env_params)
  step = fused.make_fused_step(make_env, agent.apply, opt, fcfg)
  state, t_fused = _timed_steps(step, state, env_params, repeats=2)
  transitions = envs * fcfg.rollout_len
  guided = {}
  if guidance != gen.action_guidance:  # each MaskGIT pass runs the dynamics twice (rsr/world_model/generate.py)
    gcfg = dataclasses.replace(ecfg, generate=dataclasses.replace(gen, action_guidance=guidance))
    guided_step = fused.make_fused_step(env_maker(gcfg), agent.apply, opt, fcfg)
    _, t_guided = _timed_steps(guided_step, state, env_params, repeats=2)
    guided = {"guidance": guidance, "guided_fused_steps_per_s": transitions / t_guided,
              "guided_cost_ratio": t_guided / t_fused}

  # FLOPs of one call, piece by piece: T x (policy + env step), the bootstrap value, E x M minibatch updates.
  # (Counted on the whole batch: XLA's cost analysis counts a loop body once, and chunks are a loop.)
  whole = dataclasses.replace(ecfg, chunk=0)
  plain = wrappers.Vmap(wrappers.EpisodeStats(wm_env.WorldModelEnv(parts, env_params, bank, whole)))

  def act_step(p, s, k):
    obs = fused.policy_obs(s.obs, False)
    mean, log_std, _ = agent.apply(p, obs)
    raw, _ = ppo.sample_action(k, mean, log_std)
    return plain.step(s, jnp.clip(raw, -1, 1))

  s0 = jax.jit(lambda k: plain.reset(jax.random.split(k, envs), jnp.full((envs,), -1, jnp.int32)))(key)
  f_step = _flops(act_step, params, s0, key)
  f_value = _flops(agent.apply, params, fused.policy_obs(s0.obs, False))
  mb = transitions // fcfg.ppo.minibatches
  batch = ppo.Batch(obs={"rgb": jnp.zeros((mb, hw, hw, 3), jnp.uint8), "task": jnp.zeros((mb,), jnp.int32)},
                    action=jnp.zeros((mb, 5)), log_prob=jnp.zeros((mb,)), value=jnp.zeros((mb,)),
                    advantage=jnp.ones((mb,)), returns=jnp.ones((mb,)))

  def update(p, o, b):
    g = jax.grad(lambda q: ppo.ppo_loss(agent.apply, q, b, fcfg.ppo)[0])(p)
    u, o = opt.update(g, o, p)
    return u, o

  f_update = _flops(update, params, opt.init(params), batch)
  flops = (fcfg.rollout_len * f_step + f_value
           + fcfg.ppo.epochs * fcfg.ppo.minibatches * f_update)

  # The reference design: 2 environments, a Python loop, one step per call, no cache, reward on the host.
  ref_envs, w = 2, mcfg.window
  act = jax.jit(lambda p, o: agent.apply(p, o)[0])

  @jax.jit
  def next_frame(p, window_tokens, actions):
    toks = jnp.concatenate([window_tokens, jnp.full((ref_envs, 1, n), mcfg.mask_id)], axis=1)
    task = jnp.zeros((ref_envs,), jnp.int32)
    for s_ in range(gen.steps):  # every refinement re-runs the whole window
      logits, _ = model.apply(p, toks, actions, task)
      new = jnp.argmax(logits[:, -1], -1)
      conf = jnp.max(jax.nn.log_softmax(logits[:, -1]), -1)
      masked = toks[:, -1] == mcfg.mask_id
      conf = jnp.where(masked, conf, jnp.inf)
      th = jnp.sort(conf, -1)[:, n - generate.fixed_after(s_, gen.steps, n)][:, None]
      toks = toks.at[:, -1].set(jnp.where(masked & (conf >= th), new, toks[:, -1]))
    _, done = model.apply(p, toks, actions, task)
    return toks[:, -1], jax.nn.sigmoid(done[:, -1])

  decode = jax.jit(lambda p, t: tok.apply(p, t.reshape(ref_envs, side, side), method=Tokenizer.decode))
  feats = jax.jit(lambda p, x: tok.apply(p, x, method=Tokenizer.features))
  goal = np.asarray(decode(tok_params, bank.goal[:ref_envs]))
  goal_f = [np.asarray(f) for f in feats(tok_params, jnp.asarray(goal))]
  window = [np.asarray(bank.context[:ref_envs, 0])] * (w - 1)
  acts = np.zeros((ref_envs, w, 5), np.float32)
  frame = (goal * 255).astype(np.uint8)
  task = np.zeros((ref_envs,), np.int32)

  def ref_step():
    nonlocal frame, window
    a = np.clip(np.asarray(act(params, {"rgb": frame, "task": task})), -1, 1)
    acts[:, :-1], acts[:, -1] = acts[:, 1:], a
    toks, done = next_frame(dyn_params, np.stack(window, 1), acts)
    pix = np.asarray(decode(tok_params, toks))
    f = [np.asarray(x) for x in feats(tok_params, jnp.asarray(pix))]
    d = np.asarray(distance.feature_distance(f, goal_f))  # op by op on host arrays, as a Python env would
    reward = 1 - d + 10 * (np.asarray(done) >= 0.9)
    window = window[1:] + [np.asarray(toks)]
    frame = (pix * 255).astype(np.uint8)
    return reward

  ref_step()  # compile
  obs0 = {"rgb": jnp.asarray(frame), "task": jnp.asarray(task)}
  window0, pix0 = jnp.asarray(np.stack(window, 1)), jnp.asarray(goal)
  f_ref = (_flops(act, params, obs0) + _flops(next_frame, dyn_params, window0, jnp.asarray(acts))
           + _flops(decode, tok_params, bank.goal[:ref_envs]) + _flops(feats, tok_params, pix0))
  t = time.perf_counter()
  for _ in range(reference_steps):
    ref_step()
  t_ref = (time.perf_counter() - t) / reference_steps
  mm = matmul_flops_per_s()
  fused_rate, loop_rate = transitions / t_fused, ref_envs / t_ref
  return {
      "envs": envs, "chunk": chunk, "rollout_len": fcfg.rollout_len, "epochs": fcfg.ppo.epochs,
      "minibatches": fcfg.ppo.minibatches, "window": w, "tokens_per_frame": n,
      "maskgit_steps": gen.steps, "fused_call_s": t_fused,
      "fused_steps_per_s": fused_rate, "loop_steps_per_s": loop_rate, "ratio": fused_rate / loop_rate,
      "flops_per_call": flops, "flops_per_s": flops / t_fused, "matmul_flops_per_s": mm,
      "mfu": flops / t_fused / mm,
      # Work per transition of each design: the ratio that equal compute efficiency would give. The
      # reference re-runs the whole window at every MaskGIT step; the fused step reads the cache.
      "fused_flops_per_transition": flops / transitions, "loop_flops_per_transition": f_ref / ref_envs,
      "ratio_at_equal_efficiency": (f_ref / ref_envs) / (flops / transitions),
      "loop_flops_per_s": f_ref / t_ref,
      **guided,
      "flops_share": {"rollout": fcfg.rollout_len * f_step / flops,
                      "updates": fcfg.ppo.epochs * fcfg.ppo.minibatches * f_update / flops},
  }


def main(argv):
  del argv
  with usage_errors():
    only = [b.strip() for b in _ONLY.value.split(",") if b.strip()]
    if "sim" in only:
      # The sim entry's reference renders through MuJoCo's OpenGL renderer: headless, that is EGL. Set
      # before mujoco is first imported (below), and only for it: with MUJOCO_GL=egl and no libEGL on the
      # machine (some GPU images), `import mujoco` itself fails, also for entries that never render.
      os.environ.setdefault("MUJOCO_GL", "egl")
    bad = [b for b in only if b not in BENCHES]
    if bad or not only:
      raise ValueError(f"unknown benchmark(s) {bad or _ONLY.value!r}; valid: {', '.join(BENCHES)}")
    for name in ("batch", "image_size", "steps", "reference_steps", "data_episodes", "data_batch", "window",
                 "data_steps", "imag_envs", "imag_reference_steps"):
      if getattr(flags.FLAGS, name) <= 0:
        raise ValueError(f"--{name} must be positive, got {getattr(flags.FLAGS, name)}")
    from rsr.envs import TASK_NAMES
    if _TASK.value not in TASK_NAMES:
      raise ValueError(f"unknown task {_TASK.value!r}; valid tasks: {', '.join(TASK_NAMES)}")

  if "scaling" in only and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # Fake CPU devices for the scaling rows (set before jax starts; no effect on accelerators' devices).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                               + str(max(int(d) for d in _SCALE_DEVICES.value.split(",")))).strip()
  import jax
  results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                         "jax": jax.__version__, "backend": jax.default_backend()}}
  if "sim" in only:
    print(f"sim: batch {_BATCH.value}, {_SIZE.value}x{_SIZE.value}, task {_TASK.value} (compiling...)", flush=True)
    results["sim"] = bench_sim(_TASK.value, _BATCH.value, _SIZE.value, _STEPS.value, _REF_STEPS.value)
    s = results["sim"]
    print(f"sim: jax {s['jax_frames_per_s']:.0f} frames/s, reference {s['reference_frames_per_s']:.1f} "
          f"frames/s, ratio {s['ratio']:.1f}x (render only: {s['jax_render_only_frames_per_s']:.0f} frames/s, "
          f"physics only: {s['jax_physics_only_steps_per_s']:.0f} steps/s of {s['physics_substeps']} substeps)")
  if "data" in only:
    print(f"data: batch {_DATA_BATCH.value} x window {_WINDOW.value} from "
          f"{_DATA_DIR.value or f'a synthetic dataset ({_DATA_EPISODES.value} episodes, {_SIZE.value}x{_SIZE.value})'}",
          flush=True)
    with usage_errors():
      results["data"] = bench_data(_DATA_DIR.value, _DATA_EPISODES.value, _SIZE.value, _DATA_BATCH.value,
                                   _WINDOW.value, _DATA_STEPS.value)
    d = results["data"]
    print(f"data: {d['warm_windows_per_s']:.0f} windows/s warm ({d['warm_frames_per_s']:.0f} frames/s, "
          f"{d['warm_mb_per_s']:.0f} MB/s), {d['stream_windows_per_s']:.0f} windows/s streaming, "
          f"{d['iterate_windows_per_s']:.0f} windows/s through iterate(); decode "
          f"{d['decode_episodes_per_s']:.0f} episodes/s")
  if "world_model" in only:
    print(f"world_model: preset {_WM_PRESET.value}, {_WM_ENVS.value} environments (compiling...)", flush=True)
    with usage_errors():
      results["world_model"] = bench_world_model(
          _WM_PRESET.value, _WM_ENVS.value, _WM_OUTPUT.value, _WM_SELF_CONTEXT.value,
          _ints(_WM_CHANNELS), _ints(_WM_LEVELS))
    w = results["world_model"]
    print(f"world_model: {w['tokens_per_frame']} tokens a frame of {w['vocab']} codes; training "
          f"{w['train_tokens_per_s']:.0f} tokens/s ({w['train_windows_per_s']:.1f} "
          f"windows/s, {w['train_gflop_per_s']:.0f} GFLOP/s, mfu {w['train_mfu']:.2f} of "
          f"{w['matmul_flops_per_s'] / 1e9:.0f} {w['dtype']} matmul GFLOP/s); imagination "
          f"{w['imagined_frames_per_s']:.1f} "
          f"frames/s cached vs {w['uncached_frames_per_s']:.1f} uncached ({w['cache_speedup']:.1f}x)")
  if "imagination" in only:
    print(f"imagination: fused PPO step over {_IMAG_ENVS.value} imagined environments vs the reference loop "
          "(compiling...)", flush=True)
    with usage_errors():
      results["imagination"] = bench_imagination(_IMAG_ENVS.value, _IMAG_REF_STEPS.value, _IMAG_CHUNK.value,
                                                 _IMAG_GUIDANCE.value)
    r = results["imagination"]
    print(f"imagination: fused {r['fused_steps_per_s']:.1f} transitions/s vs reference loop "
          f"{r['loop_steps_per_s']:.2f} ({r['ratio']:.1f}x); {r['flops_per_s'] / 1e9:.1f} GFLOP/s of "
          f"{r['matmul_flops_per_s'] / 1e9:.1f} matmul GFLOP/s (mfu {r['mfu']:.2f}); work per transition "
          f"{r['fused_flops_per_transition'] / 1e9:.2f} vs {r['loop_flops_per_transition'] / 1e9:.2f} GFLOP "
          f"(ratio at equal efficiency {r['ratio_at_equal_efficiency']:.1f}x)")
    if "guidance" in r:
      print(f"imagination: with action guidance {r['guidance']:g}: {r['guided_fused_steps_per_s']:.1f} "
            f"transitions/s, {r['guided_cost_ratio']:.2f}x the time of the unguided step")
  if "scaling" in only:
    devices = [int(d) for d in _SCALE_DEVICES.value.split(",")]
    print(f"scaling: {_SCALE_PRESET.value} world-model training on {devices} devices (compiling...)", flush=True)
    with usage_errors():
      results["scaling"] = bench_scaling(_SCALE_PRESET.value, devices, _SCALE_PAPER.value)
    for r in results["scaling"]["rows"]:
      print(f"scaling: {r['devices']} devices (model axis {r['model_axis']}): {r['tokens_per_s']:.0f} tokens/s "
            f"({r['relative_to_1']:.2f}x of 1 device)")
    if "paper" in results["scaling"]:
      p = results["scaling"]["paper"]
      print(f"scaling: paper model ({p['params'] / 1e6:.0f}M) per device: "
            + ", ".join(f"{k} {v['params_mb']:.0f}+{v['opt_state_mb']:.0f} MB" for k, v in p["per_device"].items())
            + f" (params + optimizer); FSDP step lowers in {p['lower_s']:.0f} s, compiles in {p['compile_s']:.0f} s")
  if _OUT.value:
    from rsr.utils import media
    media.write_json(_OUT.value, results)
    print(f"wrote {os.path.abspath(_OUT.value)}")


if __name__ == "__main__":
  run(main)
