"""The actor-critic: shapes, pixel/goal inputs, separate towers, a near-zero initial policy, size errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsr.agents.networks import ActorCritic, AgentConfig, init_params, param_count

CFG = AgentConfig(channels=(4, 8), hidden=32, num_tasks=3, action_dim=5)


def _obs(key, batch=3, size=16, goal=False):
  k1, k2, k3 = jax.random.split(key, 3)
  obs = {"rgb": jax.random.randint(k1, (batch, size, size, 3), 0, 256).astype(jnp.uint8),
         "task": jax.random.randint(k2, (batch,), 0, CFG.num_tasks)}
  if goal:
    obs["goal"] = jax.random.randint(k3, (batch, size, size, 3), 0, 256).astype(jnp.uint8)
  return obs


def test_shapes_and_initial_policy():
  params = init_params(CFG, jax.random.PRNGKey(0), (16, 16))
  mean, log_std, value = ActorCritic(CFG).apply(params, _obs(jax.random.PRNGKey(1)))
  assert mean.shape == (3, 5) and log_std.shape == (3, 5) and value.shape == (3,)
  assert mean.dtype == log_std.dtype == value.dtype == jnp.float32
  # The small output init keeps the first policy's means near 0 and its std at init_log_std.
  assert float(jnp.abs(mean).max()) < 0.1
  np.testing.assert_allclose(log_std, CFG.init_log_std)
  # The critic's output init is scale 1: its values are not squashed like the actor's means.
  assert float(jnp.abs(value).max()) > float(jnp.abs(mean).max())


def test_actor_and_critic_have_separate_parameters():
  params = init_params(CFG, jax.random.PRNGKey(0), (16, 16))["params"]
  assert set(params) == {"actor_torso", "actor_mean", "actor_log_std", "critic_torso", "critic_value"}
  assert params["actor_log_std"].shape == (CFG.action_dim,)
  actor = param_count({k: v for k, v in params.items() if k.startswith("actor")})
  critic = param_count({k: v for k, v in params.items() if k.startswith("critic")})
  assert actor + critic == param_count(params) and actor > 0 and critic > 0


def test_task_and_goal_change_the_output():
  cfg = AgentConfig(channels=(4, 8), hidden=32, num_tasks=3, use_goal=True)
  net = ActorCritic(cfg)
  params = init_params(cfg, jax.random.PRNGKey(0), (32, 16))
  obs = _obs(jax.random.PRNGKey(1), size=16, goal=True)
  obs = {k: (jnp.concatenate([v, v], axis=1) if v.ndim == 4 else v) for k, v in obs.items()}  # 32x16
  _, _, v0 = net.apply(params, obs)
  _, _, v_task = net.apply(params, {**obs, "task": (obs["task"] + 1) % 3})
  _, _, v_goal = net.apply(params, {**obs, "goal": 255 - obs["goal"]})
  assert not np.allclose(v0, v_task) and not np.allclose(v0, v_goal)
  with pytest.raises(ValueError, match="goal"):
    net.apply(params, {k: v for k, v in obs.items() if k != "goal"})


def test_bad_image_size_is_named():
  with pytest.raises(ValueError, match="18x16"):
    init_params(CFG, jax.random.PRNGKey(0), (18, 16))
  with pytest.raises(ValueError, match="8x8"):
    init_params(AgentConfig(channels=(4,)), jax.random.PRNGKey(0), (8, 8))
