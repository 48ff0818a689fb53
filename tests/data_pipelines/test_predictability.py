"""The action-predictability diagnostic: 1 where the states fix the action, 0 where they say nothing."""

import numpy as np
import pytest

from data_pipelines import predictability


def _episodes(rng, action_of):
  out = []
  for _ in range(40):
    s = np.cumsum(rng.normal(size=(30, 4)), axis=0)
    out.append({"state": s, "action": action_of(s)})
  return out


def test_action_r2_tells_a_state_policy_from_noise():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(8, 3))
  policy = lambda s: np.c_[s, np.r_[np.zeros((1, 4)), np.diff(s, axis=0)]] @ w  # noqa: E731
  x, y = predictability.state_action_pairs(_episodes(rng, policy))
  assert x.shape == (40 * 28, 8) and y.shape == (40 * 28, 3)
  assert predictability.action_r2(x, y).min() > 0.99
  x, y = predictability.state_action_pairs(_episodes(rng, lambda s: rng.uniform(-1, 1, (len(s), 3))))
  assert np.abs(predictability.action_r2(x, y)).max() < 0.05
  x, y = predictability.state_action_pairs(_episodes(rng, policy))
  y = y + rng.normal(size=y.shape) * y.std(0)  # noise as large as the policy's own spread: R^2 1/2
  np.testing.assert_allclose(predictability.action_r2(x, y), 0.5, atol=0.1)


def test_action_r2_needs_rows():
  with pytest.raises(ValueError, match="at least 3 steps"):
    predictability.state_action_pairs([{"state": np.zeros((2, 3)), "action": np.zeros((2, 1))}])
