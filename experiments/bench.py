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
Speed is compared as a ratio within one run; the machine is shared and absolute numbers are noisy.
"""

from __future__ import annotations

import os
import platform
import time

os.environ.setdefault("MUJOCO_GL", "egl")

from absl import app, flags  # noqa: E402

from experiments.common import usage_errors  # noqa: E402

BENCHES = ("sim", "data")
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


def main(argv):
  del argv
  with usage_errors():
    only = [b.strip() for b in _ONLY.value.split(",") if b.strip()]
    bad = [b for b in only if b not in BENCHES]
    if bad or not only:
      raise ValueError(f"unknown benchmark(s) {bad or _ONLY.value!r}; valid: {', '.join(BENCHES)}")
    for name in ("batch", "image_size", "steps", "reference_steps", "data_episodes", "data_batch", "window",
                 "data_steps"):
      if getattr(flags.FLAGS, name) <= 0:
        raise ValueError(f"--{name} must be positive, got {getattr(flags.FLAGS, name)}")
    from rsr.envs import TASK_NAMES
    if _TASK.value not in TASK_NAMES:
      raise ValueError(f"unknown task {_TASK.value!r}; valid tasks: {', '.join(TASK_NAMES)}")

  import jax
  results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                         "jax": jax.__version__, "backend": jax.default_backend()}}
  if "sim" in only:
    print(f"sim: batch {_BATCH.value}, {_SIZE.value}x{_SIZE.value}, task {_TASK.value} (compiling...)", flush=True)
    results["sim"] = bench_sim(_TASK.value, _BATCH.value, _SIZE.value, _STEPS.value, _REF_STEPS.value)
    s = results["sim"]
    print(f"sim: jax {s['jax_frames_per_s']:.0f} frames/s, reference {s['reference_frames_per_s']:.1f} "
          f"frames/s, ratio {s['ratio']:.1f}x (render only: {s['jax_render_only_frames_per_s']:.0f} frames/s)")
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
  if _OUT.value:
    from rsr.utils import media
    media.write_json(_OUT.value, results)
    print(f"wrote {os.path.abspath(_OUT.value)}")


if __name__ == "__main__":
  app.run(main)
