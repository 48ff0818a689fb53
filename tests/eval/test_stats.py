"""Wilson score intervals against hand-computed values."""

import math

import pytest

from rsr.eval.stats import wilson_interval


def test_known_cases():
  # 5 of 10: p = 0.5, z = 1.96 -> centre 0.5, half width 1.96 * sqrt(0.025 + 0.009604) / 1.38415
  lo, hi = wilson_interval(5, 10)
  assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
  # 0 of 10 -> [0, z^2 / (n + z^2)]
  lo, hi = wilson_interval(0, 10)
  assert lo == 0.0 and hi == pytest.approx(3.8415 / 13.8415, abs=1e-4)
  # 10 of 10 mirrors it
  lo, hi = wilson_interval(10, 10)
  assert hi == pytest.approx(1.0) and lo == pytest.approx(1 - 3.8415 / 13.8415, abs=1e-4)
  # 190 of 200 (a typical expert result)
  lo, hi = wilson_interval(190, 200)
  assert lo == pytest.approx(0.9103, abs=1e-3) and hi == pytest.approx(0.9728, abs=1e-3)


def test_interval_shrinks_with_n_and_contains_p():
  prev = 1.0
  for n in (10, 100, 1000):
    lo, hi = wilson_interval(int(0.7 * n), n)
    assert lo < 0.7 < hi and hi - lo < prev
    prev = hi - lo
  # Symmetry: k successes of n mirror k failures.
  lo3, hi3 = wilson_interval(3, 9)
  lo6, hi6 = wilson_interval(6, 9)
  assert math.isclose(lo3, 1 - hi6) and math.isclose(hi3, 1 - lo6)


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="n=0"):
    wilson_interval(0, 0)
  with pytest.raises(ValueError, match="successes=11"):
    wilson_interval(11, 10)
