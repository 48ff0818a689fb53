"""Auto-reset, episode statistics and vectorisation compose over the tabletop env."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsr import envs
from rsr.envs import wrappers
from rsr.envs.tabletop import scenes

HORIZON = 3


@pytest.mark.slow
@pytest.mark.parametrize("reuse_first", [False, True], ids=["fresh", "reuse_first"])
def test_autoreset_and_episode_stats(reuse_first):
  env = wrappers.AutoReset(wrappers.Vmap(wrappers.EpisodeStats(
      envs.make("push_cube", height=8, width=8, horizon=HORIZON))), reuse_first=reuse_first)
  n = 2
  key = jax.random.PRNGKey(0)
  reset, step = jax.jit(env.reset), jax.jit(env.step)
  state = reset(jax.random.split(key, n), scenes.sample_batch(key, "id", n))
  first_obs = np.asarray(state.obs["state"])
  action = jnp.tile(jnp.array([[0.5, -0.5, -1.0, 0.0, 1.0]]), (n, 1))
  rewards = []
  for t in range(1, 2 * HORIZON + 1):
    state = step(state, action)
    rewards.append(np.asarray(state.reward))
    if t % HORIZON:
      assert not np.asarray(state.done).any() and state.info["step"].tolist() == [t % HORIZON] * n
      np.testing.assert_allclose(state.info["episode_return"], np.sum(rewards[-(t % HORIZON):], axis=0),
                                 rtol=1e-5)
    else:
      # Truncated at the horizon: done, then reset in place to a fresh episode of the same scene.
      assert np.asarray(state.done).all() and np.asarray(state.info["truncated"]).all()
      assert state.info["step"].tolist() == [0] * n
      assert state.info["last_length"].tolist() == [HORIZON] * n
      np.testing.assert_allclose(state.info["last_return"], np.sum(rewards[-HORIZON:], axis=0), rtol=1e-5)
      np.testing.assert_array_equal(state.info["episode_return"], np.zeros(n))
      obs = np.asarray(state.obs["state"])
      if reuse_first:  # Brax-style: the environment's first state again
        np.testing.assert_array_equal(obs, first_obs)
      else:  # a fresh key: the new episode starts elsewhere than the first one did
        assert not np.allclose(obs, first_obs)
        first_obs = obs


def test_vmap_matches_single_env():
  env = envs.make("push_cube", height=8, width=8, horizon=HORIZON)
  batched = wrappers.Vmap(env)
  key = jax.random.PRNGKey(3)
  sc = scenes.sample_batch(key, "ood_all", 2)
  keys = jax.random.split(key, 2)
  states = jax.jit(batched.reset)(keys, sc)
  single = jax.jit(env.reset)(keys[1], jax.tree_util.tree_map(lambda x: x[1], sc))
  np.testing.assert_array_equal(states.obs["rgb"][1], single.obs["rgb"])
  np.testing.assert_allclose(states.obs["state"][1], single.obs["state"], atol=1e-6)
