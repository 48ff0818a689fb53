"""The results table against numpy on a hand-made grid, the relative-improvement formula on hand cases,
and the files it writes (every cell filled, 'n/a' where the ratio is undefined)."""

import csv
import io
import itertools

import numpy as np
import pytest
from PIL import Image

from rsr.eval import tables as T

METHODS = ("bc", "ppo_sim", "ppo_wm_learned", "roboscape_r")
TASKS = ("push_cube", "pick_cube")
SEEDS = (0, 1, 2)
SPLITS = ("id", "ood_color", "ood_light", "ood_all")


def _grid(seed=0):
  """Random success rates (multiples of 1/16, as 16 episodes give) for every method x task x seed x split."""
  rng = np.random.default_rng(seed)
  return {k: rng.integers(0, 17) / 16 for k in itertools.product(METHODS, TASKS, SEEDS, SPLITS)}


def _rows(grid):
  return [T.RunResult(m, t, s, sp, v, 16) for (m, t, s, sp), v in grid.items()]


def test_cells_are_mean_and_std_over_seeds():
  g = _grid()
  table = T.build(_rows(g))
  assert table.methods == list(METHODS) and table.splits == list(SPLITS) and table.seeds == list(SEEDS)
  # OOD avg averages the single families; ood_all (every family at once) stays a column of its own.
  assert table.ood_avg_of == ["ood_color", "ood_light"]
  for m, t, sp in itertools.product(METHODS, TASKS, SPLITS):
    v = np.array([g[(m, t, s, sp)] for s in SEEDS])
    cell = table.cells[(m, t, sp)]
    assert cell.mean == pytest.approx(np.mean(v)) and cell.std == pytest.approx(np.std(v)) and cell.seeds == 3
  for m, t in itertools.product(METHODS, TASKS):
    ood = np.array([(g[(m, t, s, "ood_color")] + g[(m, t, s, "ood_light")]) / 2 for s in SEEDS])
    assert table.cells[(m, t, T.OOD_AVG)].mean == pytest.approx(ood.mean())
    assert table.cells[(m, t, T.OOD_AVG)].std == pytest.approx(ood.std())
  # 'all tasks': each seed's mean over tasks, then mean and std over seeds.
  for m, sp in itertools.product(METHODS, SPLITS):
    per_seed = np.array([np.mean([g[(m, t, s, sp)] for t in TASKS]) for s in SEEDS])
    cell = table.cells[(m, T.ALL_TASKS, sp)]
    assert cell.mean == pytest.approx(per_seed.mean()) and cell.std == pytest.approx(per_seed.std())


def test_relative_improvement_by_hand():
  assert T.relative_improvement(0.5, 0.4) == pytest.approx(0.25)
  assert T.relative_improvement(0.3, 0.6) == pytest.approx(-0.5)
  assert T.relative_improvement(0.5, 0.0) is None  # undefined: shown as n/a
  assert T.relative_improvement(0.0, 0.0) is None
  # One task, one seed, one OOD split: OOD_x is the method's ood_color success.
  ood = {"bc": 0.2, "ppo_sim": 0.4, "ppo_wm_learned": 0.0, "roboscape_r": 0.5}
  rows = [T.RunResult(m, "push_cube", 0, sp, v, 10) for m, v in ood.items() for sp in ("id", "ood_color")]
  table = T.build(rows)
  imp = table.improvement
  assert imp[("push_cube", "bc")] == pytest.approx((0.5 - 0.2) / 0.2)
  assert imp[("push_cube", "ppo_sim")] == pytest.approx((0.5 - 0.4) / 0.4)
  assert imp[("push_cube", "ppo_wm_learned")] is None
  assert imp[("push_cube", T.BASELINES_MEAN)] == pytest.approx((0.5 - 0.2) / 0.2)  # mean(0.2, 0.4, 0) = 0.2
  md = T.markdown(table)
  assert "| push_cube | 50.0 | +150.0% | +25.0% | n/a | +150.0% |" in md
  assert "(OOD_roboscape_r - OOD_b) / OOD_b" in md and "n/a where OOD_b = 0" in md


def test_ratio_of_means_over_seeds():
  """The improvement compares seed-averaged OOD success (a seed at 0 does not make it undefined)."""
  rows = []
  for s, (rr, b) in enumerate([(0.4, 0.0), (0.6, 0.2)]):
    rows += [T.RunResult("roboscape_r", "push_cube", s, "ood_all", rr), T.RunResult("bc", "push_cube", s, "ood_all", b)]
    rows += [T.RunResult(m, "push_cube", s, "id", 0.5) for m in ("roboscape_r", "bc")]
  table = T.build(rows)
  assert table.ood_avg_of == ["ood_all"]  # no single family evaluated: ood_all is the average
  assert table.improvement[("push_cube", "bc")] == pytest.approx((0.5 - 0.1) / 0.1)


def test_files_have_every_cell(tmp_path):
  table = T.build(_rows(_grid(1)))
  files = T.write(table, str(tmp_path / "tables"))
  assert set(files) == {"markdown", "csv", "improvement_csv", "latex", "bar_chart", "runs"}
  rows = list(csv.DictReader(io.StringIO((tmp_path / "tables/results.csv").read_text())))
  assert len(rows) == len(METHODS) * (len(TASKS) + 1)  # + the all-tasks row
  assert all(v != "" for r in rows for v in r.values())
  assert {r["method"] for r in rows} == set(METHODS) and all(r["seeds"] == "3" for r in rows)
  imp = list(csv.DictReader(io.StringIO((tmp_path / "tables/improvement.csv").read_text())))
  assert len(imp) == (len(TASKS) + 1) * 4 and all(r["relative_improvement"] for r in imp)
  md = (tmp_path / "tables/results.md").read_text()
  assert "–" not in md.split("| method |", 1)[1]  # no empty cell
  tex = (tmp_path / "tables/results.tex").read_text()
  assert "\\toprule" in tex and "ppo\\_wm\\_learned" in tex and "$\\pm$" in tex
  image = np.asarray(Image.open(tmp_path / "tables/results.png"))
  assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 10


def test_bad_rows_are_named():
  with pytest.raises(ValueError, match="two results for bc/push_cube/seed 0/id"):
    T.build([T.RunResult("bc", "push_cube", 0, "id", 0.5)] * 2)
  with pytest.raises(ValueError, match="outside"):
    T.build([T.RunResult("bc", "push_cube", 0, "id", 1.5)])
  with pytest.raises(ValueError, match="no results"):
    T.build([])


def test_dyna_is_shown_but_not_a_baseline_and_budgets_are_stated():
  g = _grid(2)
  g.update({("roboscape_r_dyna", t, s, sp): 0.5 for t, s, sp in itertools.product(TASKS, SEEDS, SPLITS)})
  table = T.build(_rows(g), budgets={"roboscape_r_dyna": "128 real episodes, no reward", "ppo_sim": "x steps",
                                     "absent": "never shown"})
  assert table.methods[-1] == "roboscape_r_dyna" and table.baselines == ["bc", "ppo_sim", "ppo_wm_learned"]
  base = np.mean([table.ood[(b, T.ALL_TASKS)] for b in table.baselines])
  assert table.improvement[(T.ALL_TASKS, T.BASELINES_MEAN)] == pytest.approx(
      T.relative_improvement(table.ood[("roboscape_r", T.ALL_TASKS)], base))
  md = T.markdown(table)
  assert "roboscape_r_dyna: 128 real episodes, no reward" in md and "never shown" not in md
