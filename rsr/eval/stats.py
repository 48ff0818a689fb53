"""Success-rate statistics: Wilson score intervals (well-behaved at rates near 0 and 1)."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
  """Two-sided Wilson score interval for a binomial proportion; z = 1.96 gives 95%.

  Raises:
    ValueError: if n <= 0 or successes is outside [0, n].
  """
  if n <= 0:
    raise ValueError(f"need at least one episode, got n={n}")
  if not 0 <= successes <= n:
    raise ValueError(f"successes={successes} is outside [0, {n}]")
  p = successes / n
  denom = 1.0 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  # At k = 0 (k = n) the bound is exactly 0 (1); rounding would leave ~1e-17 there.
  lo = 0.0 if successes == 0 else max(0.0, centre - half)
  hi = 1.0 if successes == n else min(1.0, centre + half)
  return lo, hi
