"""The scripted experts solve every task on every split (one episode per split, no action noise).

The full figure (>= 95% on id, >= 90% on each OOD family at 200 episodes) comes from
`python -m experiments.evaluate --task=all --split=all --episodes=200`; this test guards it cheaply.
"""

import jax
import numpy as np
import pytest

from rsr.envs import TASK_NAMES
from tests.conftest import BATCH_SPLITS


@pytest.mark.parametrize("task", TASK_NAMES)
def test_expert_succeeds_on_every_split(batched_env, task):
  be = batched_env(task)
  n = len(BATCH_SPLITS)
  key = jax.random.PRNGKey(11)
  state, carry = be.start(key)
  succeeded = np.zeros(n, bool)
  for _ in range(be.env.horizon):
    state, carry, _ = be.expert_step(state, carry)
    succeeded |= np.asarray(state.info["success"])
    if succeeded.all():
      break
  failed = [s for s, ok in zip(BATCH_SPLITS, succeeded, strict=True) if not ok]
  assert not failed, f"{task}: the expert failed on {failed} within {be.env.horizon} steps"
  # Success is not free: the first observation of a fresh episode is never a success.
  assert not np.asarray(be.reset(jax.random.split(key, n), be.scenes(key)).info["success"]).any()
