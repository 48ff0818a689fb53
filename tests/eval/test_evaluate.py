"""Evaluation statistics on known cases (no compilation): a cell's Wilson 95% interval and the pooled
summary against the closed form; a checkpoint path that cannot be evaluated gives an error naming it."""

import math

import numpy as np
import pytest

from rsr.eval import evaluate as ev
from rsr.stages import trained

Z = 1.959963984540054  # the two-sided 95% normal quantile


def _wilson(k, n):
  p = k / n
  centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
  half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
  return centre - half, centre + half


def test_cell_interval_is_wilson():
  success = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)  # 3 of 8
  cell = ev.cell_result("push_cube", "id", success, np.arange(8), np.ones(8))
  assert cell.successes == 3 and cell.episodes == 8 and cell.success_rate == 3 / 8
  assert cell.ci95 == pytest.approx(_wilson(3, 8), abs=1e-12)
  assert cell.ci95 == pytest.approx((0.1368, 0.6943), abs=1e-4)  # by hand from the formula
  assert cell.mean_length == 3.5 and cell.mean_return == 1.0


def test_interval_ends_are_exact_at_zero_and_all():
  lo, hi = ev.cell_result("t", "id", np.zeros(12, bool), np.ones(12), np.zeros(12)).ci95
  assert lo == 0.0 and hi == pytest.approx(Z * Z / (12 + Z * Z))  # closed form at k = 0
  lo, hi = ev.cell_result("t", "id", np.ones(12, bool), np.ones(12), np.zeros(12)).ci95
  assert hi == 1.0 and lo == pytest.approx(12 / (12 + Z * Z))


def test_summary_pools_cells():
  a = ev.cell_result("push_cube", "id", np.array([1, 1, 0, 0], bool), np.ones(4), np.zeros(4))
  b = ev.cell_result("push_cube", "ood_all", np.array([1, 0, 0, 0, 0, 0], bool), np.ones(6), np.zeros(6))
  s = ev.summary([a, b])
  assert s["episodes"] == 10 and s["success_rate"] == pytest.approx(0.3)
  assert s["ci95"] == pytest.approx(_wilson(3, 10))
  assert [r["split"] for r in s["results"]] == ["id", "ood_all"]
  assert "| push_cube | 50.0 [15, 85] | 16.7 [3, 56] |" in ev.table([a, b])


def test_unloadable_policies_name_the_path(tmp_path):
  with pytest.raises(ValueError, match=f"no policy at {tmp_path}/none: the path does not exist"):
    trained.load(str(tmp_path / "none"))
  with pytest.raises(ValueError, match=f"{tmp_path}/config.json is missing"):
    trained.load(str(tmp_path))
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match=f"cannot read {tmp_path}/config.json"):
    trained.load(str(tmp_path))
  from experiments.configs import policy as policy_configs
  (tmp_path / "config.json").write_text(policy_configs.get_config("tiny").to_json_best_effort())
  with pytest.raises(ValueError, match=f"no checkpoint in {tmp_path}/checkpoints"):
    trained.load(str(tmp_path))
