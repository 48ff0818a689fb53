"""Shared test fixtures.

JIT compilation of an env's reset and step dominates the tests' run time (tens of seconds per task on a
2-core CPU), so each task's batched env is compiled once per session and shared by every module that
asks for it: protocol, determinism, experts, the renderer oracle and the physics oracle. Likewise one
tiny dataset is collected per session (`tiny_dataset`) for the data-pipeline and binary tests.

The suite runs on pytest-xdist workers (pyproject's addopts: `-n auto`, one file per worker at a time):
the 2 cores of a CI machine sit half idle under one process, since compilation is single-threaded. The
on-disk fixtures (the tiny dataset and world model, minutes each) are built once and shared by the
workers; `-n 0` runs everything in one process.
"""

from __future__ import annotations

import os

# MuJoCo picks its OpenGL backend once, when `mujoco` is first imported (by any test module), so the
# headless EGL backend of the OpenGL oracle tests has to be chosen before anything imports it.
os.environ.setdefault("MUJOCO_GL", "egl")


def _compilation_cache() -> None:
  """JAX's persistent compilation cache, one directory per xdist worker, inherited by the binaries a test
  starts: resume tests compile the same programs two or three times and the binaries what the in-process
  tests compiled. Per worker, since JAX writes cache files without a lock when the cache has no size
  limit, and the binaries of a worker run while it waits. Set before JAX is imported, which reads it once."""
  import tempfile

  root = os.path.join(tempfile.gettempdir(), f"rsr-tests-{os.getuid()}", "jax_cache")
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR", root).startswith(root):
    return  # the user's own cache
  # xdist's workers inherit the controller's environment: each replaces the controller's directory by its own.
  path = os.path.join(root, os.environ.get("PYTEST_XDIST_WORKER", "main"))
  os.makedirs(path, exist_ok=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")  # JAX's default: 1


_compilation_cache()

import dataclasses  # noqa: E402
import fcntl  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
from typing import Any, Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rsr import envs  # noqa: E402
from rsr.envs import rollout  # noqa: E402
from rsr.envs.tabletop import scenes as scenes_lib  # noqa: E402

# One environment per split: every batch mixes all of them, which is itself part of what is tested.
BATCH_SPLITS = tuple(scenes_lib.SPLITS)


@dataclasses.dataclass(frozen=True)
class BatchedEnv:
  """One task's env (16x16 images from both cameras) with jitted, vmapped functions."""

  env: Any
  reset: Callable  # (keys[B], scenes[B]) -> State[B]
  step: Callable  # (State[B], actions[B, 5]) -> State[B]
  expert: Callable  # (carries[B], State[B], keys[B]) -> (carries[B], actions[B, 5]); no action noise

  def scenes(self, key: jax.Array):
    """One scene of every split: a SceneParams batch of len(BATCH_SPLITS)."""
    parts = [scenes_lib.sample(jax.random.fold_in(key, i), s) for i, s in enumerate(BATCH_SPLITS)]
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *parts)

  def start(self, key: jax.Array):
    """A fresh batch (one env per split) and the expert's initial carries."""
    n = len(BATCH_SPLITS)
    state = self.reset(jax.random.split(key, n), self.scenes(key))
    return state, jax.tree_util.tree_map(lambda x: jnp.stack([x] * n), self.env.task.expert_init())

  def expert_step(self, state, carry):
    """One control step of the expert in every env: (state, carry, action)."""
    keys = jax.random.split(jax.random.PRNGKey(0), len(BATCH_SPLITS))  # unused without noise
    carry, action = self.expert(carry, state, keys)
    return self.step(state, action), carry, action


def pytest_xdist_auto_num_workers(config) -> int:
  """`-n auto`: one worker per core, at most one per 8 GB of memory (a worker and the binaries it starts
  peak near 6 GB)."""
  memory_gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
  return max(1, min(os.cpu_count() or 1, int(memory_gb // 8)))


# The longest files (minutes each on 2 cores), first: pytest-xdist hands whole files to the workers in
# collection order, and a long one left to the end runs alone on one worker while the other idles.
LONG_FIRST = ("train/test_policy.py", "train/test_dyna.py", "envs/test_physics_parity.py",
              "experiments/test_reproduce.py", "envs/test_reset_layout.py", "experiments/test_binaries.py",
              "envs/test_render_oracle.py", "world_model/test_training.py", "envs/test_protocol.py",
              "train/test_learning.py", "world_model/test_parts.py", "train/test_multiprocess.py",
              "world_model/test_action_following.py", "experiments/test_faults.py")


# `pytest -m "not slow"`, the quick check while editing, leaves out what trains a world model or a policy,
# starts the binaries, or compiles the physics of every task: files and fixtures here, single tests by
# @pytest.mark.slow.
SLOW_FILES = ("envs/test_physics_parity.py", "envs/test_reset_layout.py", "envs/test_render_oracle.py",
              "experiments/test_binaries.py", "experiments/test_faults.py", "experiments/test_reproduce.py",
              "train/test_multiprocess.py")
SLOW_FIXTURES = ("tiny_world_model", "learned_world_model")


def pytest_configure(config) -> None:
  config.addinivalue_line("markers", "slow: minutes on 2 cores; left out by -m 'not slow'")


def _file(item) -> str:
  """folder/test_file.py, as LONG_FIRST and SLOW_FILES name it."""
  path = pathlib.Path(str(item.path))
  return f"{path.parent.name}/{path.name}"


def pytest_collection_modifyitems(config, items) -> None:
  for item in items:
    if _file(item) in SLOW_FILES or set(SLOW_FIXTURES) & set(item.fixturenames):
      item.add_marker(pytest.mark.slow)
  rank = {name: i for i, name in enumerate(LONG_FIRST)}
  # stable: tests keep their order within a file, the other files theirs
  items.sort(key=lambda item: rank.get(_file(item), len(LONG_FIRST)))


def built_once(tmp_path_factory, name: str, build: Callable[[str], None]) -> str:
  """A directory `build(path)` fills, made once per test run: under xdist the first worker to ask builds
  it under a lock and the others wait for it and read it. Returns the path."""
  if "PYTEST_XDIST_WORKER" not in os.environ:
    path = tmp_path_factory.mktemp(name)
    build(str(path))
    return str(path)
  root = pathlib.Path(tmp_path_factory.getbasetemp()).parent  # one per run, shared by its workers
  path, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)  # what a worker whose build failed left behind
      path.mkdir()
      build(str(path))
      done.touch()
  return str(path)


@pytest.fixture(scope="session")
def batched_env() -> Callable[[str], BatchedEnv]:
  """batched_env(task) -> BatchedEnv, compiled once per task per session."""
  cache: dict[str, BatchedEnv] = {}

  def get(task: str) -> BatchedEnv:
    if task not in cache:
      env = envs.make(task, height=16, width=16, cameras=("front", "wrist"))
      policy = rollout.expert_policy(env, noise=0.0)
      cache[task] = BatchedEnv(env=env, reset=jax.jit(jax.vmap(env.reset)), step=jax.jit(jax.vmap(env.step)),
                               expert=jax.jit(jax.vmap(policy.act)))
    return cache[task]

  return get


def take(tree, i: int):
  """Environment i of a batched pytree (as numpy)."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x[i]), tree)


def tiny_collect_config():
  """The tiny collection preset for push_cube: train 6, val 2 and a held-out ood_color split of 2."""
  from experiments.configs import collect as collect_configs

  c = collect_configs.get_config("tiny")
  c.tasks = "push_cube"
  c.ood_splits = ("ood_color",)
  c.ood_episodes = 2
  return c


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
  """A published tiny collection; returns its collect workdir. Tests must not modify it (copy it)."""
  from data_pipelines import collect

  return built_once(tmp_path_factory, "tiny_collect",
                    lambda workdir: collect.collect(tiny_collect_config(), workdir, progress=False))


@pytest.fixture(scope="session")
def tiny_world_model(tiny_dataset, tmp_path_factory) -> str:
  """A tiny world model (every stage of experiments.train_world_model, run as a user runs it) trained on
  `tiny_dataset`; returns its workdir. Tests must not modify it."""
  import subprocess
  import sys

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))

  def build(workdir: str) -> None:
    r = subprocess.run([sys.executable, "-m", "experiments.train_world_model",
                        "--config=experiments/configs/world_model.py:tiny", f"--config.data_dir={tiny_dataset}",
                        f"--workdir={workdir}"], cwd=root, env=env, capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]

  return built_once(tmp_path_factory, "tiny_world_model", build)
