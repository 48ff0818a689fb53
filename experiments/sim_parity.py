"""MJX against C MuJoCo under the scripted expert, clean and noisy: how many episodes part, and how many part
from chaos alone (C MuJoCo against itself with the cube nudged).

    python -m experiments.sim_parity --task=all --noise=0,0.1,0.3 --episodes=32 [--steps=50 --tol=0.01
        --nudge=1e-4 --seed=0 --out=FILE.json]

Per task and noise level it prints the episodes whose cubes part by more than `tol` within `steps` control
steps, MJX vs C MuJoCo and C MuJoCo vs its nudged twin (rsr/envs/tabletop/parity.py); docs/decisions.md
quotes these tables.
"""

from __future__ import annotations

import os
import time

from absl import app, flags

_TASK = flags.DEFINE_string("task", "all", "A task name, a comma list or 'all'.")
_NOISE = flags.DEFINE_string("noise", "0,0.1,0.3", "Comma list of action-noise stds.")
_EPISODES = flags.DEFINE_integer("episodes", 32, "Episodes per task and noise level.")
_STEPS = flags.DEFINE_integer("steps", 50, "Control steps per episode.")
_TOL = flags.DEFINE_float("tol", 0.01, "Metres apart that count as parted.")
_NUDGE = flags.DEFINE_float("nudge", 1e-4, "Metres the chaos twin's cube starts off (0: no chaos twin).")
_SEED = flags.DEFINE_integer("seed", 0, "Scenes and noise.")
_OUT = flags.DEFINE_string("out", "", "Write the table as JSON here.")


def main(argv):
  del argv
  os.environ.setdefault("MUJOCO_GL", "egl")
  import jax
  import numpy as np

  from experiments.common import usage_errors
  from rsr import envs
  from rsr.envs import rollout
  from rsr.envs.tabletop import parity
  from rsr.envs.tabletop import scenes as scenes_lib
  from rsr.utils import media

  with usage_errors():
    tasks = list(envs.TASK_NAMES) if _TASK.value == "all" else [t.strip() for t in _TASK.value.split(",")]
    unknown = [t for t in tasks if t not in envs.TASK_NAMES]
    if unknown:
      raise ValueError(f"unknown task(s) {', '.join(unknown)}; valid tasks: {', '.join(envs.TASK_NAMES)}")
    levels = [float(x) for x in _NOISE.value.split(",")]
    if _EPISODES.value < 1 or _STEPS.value < 1:
      raise ValueError("--episodes and --steps must be positive")
  rows = []
  print(f"{'task':<11} {'noise':>5}  {'MJX vs C parted':>15}  {'C vs nudged C parted':>20}  (of {_EPISODES.value}, "
        f"> {_TOL.value * 100:g} cm within {_STEPS.value} steps)")
  for task in tasks:
    env = envs.make(task, cameras=())
    reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
    expert = jax.jit(jax.vmap(rollout.expert_policy(env, noise=0.0).act))
    for level in levels:
      t0 = time.time()
      drift = parity.compare(env, reset, step, expert, [level] * _EPISODES.value, scenes_lib.SPLITS,
                             jax.random.PRNGKey(_SEED.value), steps=_STEPS.value,
                             nudge=_NUDGE.value or None, seed=_SEED.value)
      parted = int(drift.parted(_TOL.value).sum())
      chaos = (int((drift.c_vs_nudged.max(axis=0) > _TOL.value).sum())
               if drift.c_vs_nudged is not None else None)
      rows.append({"task": task, "noise": level, "episodes": _EPISODES.value, "mjx_vs_c_parted": parted,
                   "c_vs_nudged_parted": chaos, "steps": _STEPS.value, "tol": _TOL.value,
                   "max_apart_m": float(np.max(drift.mjx_vs_c)), "seconds": round(time.time() - t0, 1)})
      print(f"{task:<11} {level:>5g}  {parted:>15}  {'-' if chaos is None else chaos:>20}", flush=True)
  if _OUT.value:
    media.write_json(_OUT.value, {"rows": rows, "nudge": _NUDGE.value, "seed": _SEED.value})


if __name__ == "__main__":
  app.run(main)
