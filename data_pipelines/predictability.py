"""How much of a dataset's actions its states already tell: a data-mix diagnostic for the world model.

An action-conditioned world model learns to read its action only as far as the action says something the
context frames do not. On expert-heavy data the action is largely a function of the scene and of the motion
already under way, so a model can predict the next frame from the past alone and leave the action unused.
`action_r2` measures that share as the held-out R^2 of a linear map from (state_t, state_t - state_{t-1})
to action_t: 1 when the states fix the action, 0 when they say nothing about it. Linear, so it is a lower
bound on what a network reading frames could predict.
"""

from __future__ import annotations

import numpy as np


def state_action_pairs(episodes) -> tuple[np.ndarray, np.ndarray]:
  """Episodes (mappings with "state" f32[T, S] and "action" f32[T, A]) -> (x f32[N, 2S], y f32[N, A]) for every
  step with a previous one, leaving out each episode's last step (its action is padding)."""
  xs, ys = [], []
  for e in episodes:
    s, a = np.asarray(e["state"], np.float64), np.asarray(e["action"], np.float64)
    if len(a) < 3:
      continue
    xs.append(np.concatenate([s[1:-1], s[1:-1] - s[:-2]], axis=1))
    ys.append(a[1:-1])
  if not xs:
    raise ValueError("action_r2 needs episodes of at least 3 steps")
  return np.concatenate(xs), np.concatenate(ys)


def action_r2(x: np.ndarray, y: np.ndarray, holdout: float = 0.2, seed: int = 0, ridge: float = 1e-3
              ) -> np.ndarray:
  """Held-out R^2 per action dimension (f64[A]) of a ridge fit of y [N, A] on x [N, D] (plus a bias), fitted on
  a random (1 - holdout) of the rows and scored on the rest."""
  n = len(x)
  order = np.random.default_rng(seed).permutation(n)
  cut = int(round(n * (1.0 - holdout)))
  if cut < 2 or n - cut < 2:
    raise ValueError(f"action_r2 needs more rows than {n} for a {holdout:.0%} hold-out")
  fit, test = order[:cut], order[cut:]
  mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-8
  z = np.c_[(x - mu) / sd, np.ones(n)]
  gram = z[fit].T @ z[fit] + ridge * len(fit) * np.eye(z.shape[1])
  w = np.linalg.solve(gram, z[fit].T @ y[fit])
  resid = ((z[test] @ w - y[test]) ** 2).sum(0)
  total = ((y[test] - y[test].mean(0)) ** 2).sum(0)
  return 1.0 - resid / np.maximum(total, 1e-12)
