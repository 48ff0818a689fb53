"""The scripted experts solve every task on every split (one episode per split, no action noise).

The full figure (>= 95% on id, >= 90% on each OOD family at 200 episodes) comes from
`python -m experiments.evaluate --task=all --split=all --episodes=200`; this test guards it cheaply.
"""

import jax
import numpy as np
import pytest

from rsr.envs import TASK_NAMES
from rsr.eval import rollout
from tests.envs.conftest import BATCH_SPLITS


@pytest.mark.parametrize("task", TASK_NAMES)
def test_expert_succeeds_on_every_split(batched_env, task):
  be = batched_env(task)
  n = len(BATCH_SPLITS)
  policy = rollout.expert_policy(be.env, noise=0.0)
  act = jax.jit(jax.vmap(policy.act))
  key = jax.random.PRNGKey(11)
  state = be.reset(jax.random.split(key, n), be.scenes(key))
  carry = jax.vmap(lambda _: policy.init())(np.arange(n))
  succeeded = np.zeros(n, bool)
  for t in range(be.env.horizon):
    carry, action = act(carry, state, jax.random.split(jax.random.fold_in(key, t), n))
    state = be.step(state, action)
    succeeded |= np.asarray(state.info["success"])
    if succeeded.all():
      break
  failed = [s for s, ok in zip(BATCH_SPLITS, succeeded) if not ok]
  assert not failed, f"{task}: the expert failed on {failed} within {be.env.horizon} steps"
  # Success is not free: the first observation of a fresh episode is never a success.
  assert not np.asarray(be.reset(jax.random.split(key, n), be.scenes(key)).info["success"]).any()
