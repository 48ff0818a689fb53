"""Every task resets and steps under jit and vmap, on a batch mixing every split; runs are deterministic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsr.envs import TASK_NAMES
from tests.conftest import BATCH_SPLITS


@pytest.mark.slow
@pytest.mark.parametrize("task", TASK_NAMES)
def test_reset_and_step_under_jit_and_vmap(batched_env, task):
  be = batched_env(task)
  n = len(BATCH_SPLITS)
  key = jax.random.PRNGKey(0)
  scenes = be.scenes(key)
  state = be.reset(jax.random.split(key, n), scenes)
  spec = be.env.observation_spec()
  assert set(state.obs) == set(spec), (set(state.obs), set(spec))
  for name, s in spec.items():
    assert state.obs[name].shape == (n,) + s.shape and state.obs[name].dtype == s.dtype, name
  assert state.obs["task"].tolist() == [be.env.task.task_id] * n
  # Rendered views are not blank: the table, objects and gripper make them vary.
  for cam in ("rgb", "rgb_wrist"):
    assert np.all(np.asarray(state.obs[cam]).reshape(n, -1).std(-1) > 1.0), cam
  actions = jax.random.uniform(jax.random.PRNGKey(1), (n, 5), minval=-1.5, maxval=1.5)  # out of range: clipped
  for t in range(3):
    state = be.step(state, actions)
    assert np.all(np.isfinite(np.asarray(state.reward))), task
    assert state.info["step"].tolist() == [t + 1] * n
    assert state.done.dtype == jnp.bool_ and state.info["success"].dtype == jnp.bool_
    assert np.all(np.isfinite(np.asarray(state.obs["state"])))
  # The gripper moved as commanded (up to the clip at +-1 action units and the workspace bounds).
  assert np.all(np.abs(np.asarray(state.obs["state"][:, 0:3])) < 0.5)


@pytest.mark.parametrize("task", ["pick_cube", "place_cube"])
def test_same_key_and_scene_give_bit_identical_frames(batched_env, task):
  be = batched_env(task)
  n = len(BATCH_SPLITS)
  key = jax.random.PRNGKey(42)
  actions = jax.random.uniform(jax.random.PRNGKey(5), (n, 5), minval=-1.0, maxval=1.0)

  def run():
    s = be.reset(jax.random.split(key, n), be.scenes(key))
    frames = [s.obs["rgb"], s.obs["rgb_wrist"]]
    for _ in range(2):
      s = be.step(s, actions)
      frames += [s.obs["rgb"], s.obs["rgb_wrist"]]
    return [np.asarray(f) for f in frames], np.asarray(s.inner.data.qpos)

  frames_a, qpos_a = run()
  frames_b, qpos_b = run()
  for a, b in zip(frames_a, frames_b, strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(qpos_a, qpos_b)
  # A different key gives a different episode (the check above is not vacuous).
  s = be.reset(jax.random.split(jax.random.PRNGKey(43), n), be.scenes(jax.random.PRNGKey(43)))
  assert not np.array_equal(np.asarray(s.obs["rgb"]), frames_a[0])
