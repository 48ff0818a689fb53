"""Resets are collision-free, checked with MuJoCo's own collision detection on C twins of the MJX states.

For every task and split, RESETS environments are reset (one vmapped call) and each state is rebuilt in C
MuJoCo (`oracle.to_mujoco`); `mujoco.mj_geomDistance` then measures the signed distance between every
pair of objects that must not touch at the start: cube-cube, cube-container, cube-distractor,
distractor-container and distractor-distractor must be apart (distance > 0), and every distractor must
keep GOAL_GAP away from the goal marker (push_cube's disc, pick_cube's sphere). Contype bits play no part:
the distance is geometric, so static scenery is checked as strictly as the cubes.
"""

from __future__ import annotations

import jax
import mujoco
import numpy as np
import pytest

from rsr.envs import SPLITS, TASK_NAMES, make
from rsr.envs.tabletop import oracle
from rsr.envs.tabletop import scenes as scenes_lib

RESETS = 256
GOAL_GAP = 0.005  # m
_FAR = 0.5  # mj_geomDistance's search radius: beyond it a pair is reported as this far


@pytest.fixture(scope="module")
def reset_fn():
  cache = {}

  def get(task):
    if task not in cache:
      env = make(task, cameras=())
      cache[task] = (env, jax.jit(jax.vmap(env.reset)))
    return cache[task]

  return get


def _groups(m: mujoco.MjModel, d: mujoco.MjData) -> dict[str, list[int]]:
  """Geom ids of the objects that must not touch, by kind (absent distractors left out)."""
  names = [m.geom(i).name for i in range(m.ngeom)]
  ids = lambda prefix: [i for i, n in enumerate(names) if n.startswith(prefix)]
  distractors = [g for g in ids("distractor") if np.linalg.norm(d.geom_xpos[g][:2]) < 1.0]
  return {"cube": ids("cube"), "container": ids("container"), "distractor": distractors,
          "marker": ids("marker")}


def _min_distance(m, d, a: list[int], b: list[int]) -> tuple[float, str]:
  best, pair = _FAR, ""
  for i in a:
    for j in b:
      if i != j:
        dist = mujoco.mj_geomDistance(m, d, i, j, _FAR, None)
        if dist < best:
          best, pair = dist, f"{m.geom(i).name}-{m.geom(j).name}"
  return best, pair


@pytest.mark.parametrize("task", TASK_NAMES)
def test_resets_are_collision_free(task, reset_fn):
  env, reset = reset_fn(task)
  failures = []
  for k, split in enumerate(SPLITS):
    key = jax.random.PRNGKey(100 + k)
    scenes = scenes_lib.sample_batch(key, split, RESETS)
    inner = jax.device_get(reset(jax.random.split(key, RESETS), scenes).inner)
    for e in range(RESETS):
      m, d = oracle.to_mujoco(env, jax.tree_util.tree_map(lambda x, e=e: x[e], inner))
      g = _groups(m, d)
      checks = [(g["cube"], g["cube"] + g["container"] + g["distractor"], 0.0),
                (g["distractor"], g["container"] + g["distractor"], 0.0),
                (g["distractor"], g["marker"], GOAL_GAP)]
      for a, b, gap in checks:
        dist, pair = _min_distance(m, d, a, b)
        if dist <= gap:
          failures.append(f"{split} reset {e}: {pair} {dist * 1e3:.1f} mm")
  assert not failures, f"{task}: {len(failures)} overlapping pairs, e.g. {failures[:5]}"
