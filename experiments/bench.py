r"""Throughput benchmarks; each entry writes its figures into one JSON object.

    python -m experiments.bench --only=sim --out=/tmp/bench.json

Entries:
  sim   physics + 64x64 front-camera render for a batch of environments: the jitted, vmapped MJX + JAX
        renderer path against the conventional loop (C MuJoCo stepping each environment, then its OpenGL
        renderer), same task, same actions, measured in the same run. Also reports the JAX path's
        physics-only and render-only rates to show where the time goes.
Speed is compared as a ratio within one run; the machine is shared and absolute numbers are noisy.
"""

from __future__ import annotations

import os
import platform
import time

os.environ.setdefault("MUJOCO_GL", "egl")

from absl import app, flags  # noqa: E402

from experiments.common import usage_errors  # noqa: E402

BENCHES = ("sim",)
_ONLY = flags.DEFINE_string("only", ",".join(BENCHES), f"Comma list of entries to run: {', '.join(BENCHES)}.")
_OUT = flags.DEFINE_string("out", None, "Where to write the JSON figures.")
_BATCH = flags.DEFINE_integer("batch", 64, "Environments stepped in parallel.")
_SIZE = flags.DEFINE_integer("image_size", 64, "Rendered image height and width.")
_STEPS = flags.DEFINE_integer("steps", 20, "Control steps timed on the JAX path.")
_REF_STEPS = flags.DEFINE_integer("reference_steps", 3, "Control steps timed per env on the reference loop.")
_TASK = flags.DEFINE_string("task", "pick_cube", "Task whose scene is simulated.")


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


def main(argv):
  del argv
  with usage_errors():
    only = [b.strip() for b in _ONLY.value.split(",") if b.strip()]
    bad = [b for b in only if b not in BENCHES]
    if bad or not only:
      raise ValueError(f"unknown benchmark(s) {bad or _ONLY.value!r}; valid: {', '.join(BENCHES)}")
    for name in ("batch", "image_size", "steps", "reference_steps"):
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
  if _OUT.value:
    from rsr.utils import media
    media.write_json(_OUT.value, results)
    print(f"wrote {os.path.abspath(_OUT.value)}")


if __name__ == "__main__":
  app.run(main)
