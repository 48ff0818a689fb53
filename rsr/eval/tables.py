"""The results table of the paper's comparison: success per method x task x scene split over seeds, and the
relative out-of-domain improvement of RoboScape-R over the baselines.

    rows = [RunResult(method, task, seed, split, success_rate, episodes), ...]   # one per evaluated cell
    table = build(rows)
    paths = write(table, "DIR/tables")   # results.md, results.csv, improvement.csv, results.tex, results.png,
                                         # runs.json (the rows themselves)

Definitions (every output states them):
- A cell is the mean +- std over seeds of the success rate; std is the population std (ddof=0), so a single
  seed shows +- 0.0.
- OOD avg of one run = the mean of its OOD-family splits (ood_color, ood_table, ood_distractor, ood_light,
  ood_camera) that were evaluated. ood_all shifts every family at once: it is a column of its own and makes
  the average only where no single family was evaluated.
- The "all tasks" row averages each seed's tasks first (seeds missing a task are left out), then takes the
  mean +- std over seeds.
- Relative OOD improvement of the reference method (roboscape_r) over baseline b:
      (OOD_ref - OOD_b) / OOD_b,  OOD_x = mean over seeds of method x's OOD avg
  (a ratio of means, not a mean of per-seed ratios, which a zero success rate would break). Over the
  baselines' mean, OOD_b is the mean of the baselines' OOD_x. Where OOD_b = 0 the ratio is undefined: 'n/a'.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from rsr.envs.tabletop.scenes import OOD_FAMILIES, SPLITS
from rsr.utils import media

METHODS = ("bc", "ppo_sim", "ppo_wm_learned", "roboscape_r", "roboscape_r_dyna")  # display order; others follow
REFERENCE = "roboscape_r"
# Variants of the reference method (beyond the paper): shown, never counted among its baselines.
VARIANTS = ("roboscape_r_dyna",)
ALL_TASKS = "all tasks"
OOD_AVG = "ood_avg"
BASELINES_MEAN = "baselines' mean"
NA = "n/a"


@dataclasses.dataclass(frozen=True)
class RunResult:
  """The success rate of one trained policy (method, task, seed) on one scene split."""

  method: str
  task: str
  seed: int
  split: str
  success_rate: float  # in [0, 1]
  episodes: int = 0  # behind success_rate (0: unknown)

  @classmethod
  def from_dict(cls, d: Mapping) -> "RunResult":
    return cls(method=str(d["method"]), task=str(d["task"]), seed=int(d["seed"]), split=str(d["split"]),
               success_rate=float(d["success_rate"]), episodes=int(d.get("episodes", 0)))


@dataclasses.dataclass(frozen=True)
class Stat:
  mean: float
  std: float  # population std over seeds (ddof=0)
  seeds: int


@dataclasses.dataclass
class Table:
  methods: list[str]
  tasks: list[str]
  splits: list[str]  # evaluated splits: id first, then the OOD ones in SPLITS order
  ood_avg_of: list[str]  # the splits OOD avg averages
  seeds: list[int]
  episodes: list[int]  # distinct episode counts per run and cell
  cells: dict[tuple[str, str, str], Stat]  # (method, task or ALL_TASKS, split or OOD_AVG) -> Stat
  reference: str | None  # the method compared with the others (None: not in the results)
  baselines: list[str]
  improvement: dict[tuple[str, str], float | None]  # (task or ALL_TASKS, baseline or BASELINES_MEAN)
  ood: dict[tuple[str, str], float]  # (method, row) -> OOD_x, the numbers the improvement is computed from
  rows: list[RunResult]
  # method -> the real interaction one of its runs used beyond the demonstrations (build's `budgets`)
  budgets: dict[str, str] = dataclasses.field(default_factory=dict)

  @property
  def row_tasks(self) -> list[str]:
    return self.tasks + ([ALL_TASKS] if len(self.tasks) > 1 else [])

  @property
  def columns(self) -> list[str]:
    return self.splits + ([OOD_AVG] if self.ood_avg_of else [])


def relative_improvement(ood_reference: float, ood_baseline: float) -> float | None:
  """(ood_reference - ood_baseline) / ood_baseline; None (shown 'n/a') where the baseline's OOD success is 0."""
  if ood_baseline == 0:
    return None
  return (ood_reference - ood_baseline) / ood_baseline


def _order(names: Iterable[str], preferred: Sequence[str]) -> list[str]:
  names = list(dict.fromkeys(names))
  return [n for n in preferred if n in names] + [n for n in names if n not in preferred]


def _stat(values: Sequence[float]) -> Stat:
  v = np.asarray(values, np.float64)
  return Stat(mean=float(v.mean()), std=float(v.std()), seeds=len(v))


def build(rows: Sequence[RunResult], reference: str = REFERENCE, budgets: Mapping[str, str] | None = None) -> Table:
  """The table of `rows` (see the module docstring for every definition).

  Raises:
    ValueError: on no rows, a success rate outside [0, 1], or two rows for the same method, task, seed
      and split (naming it).
  """
  if not rows:
    raise ValueError("no results to tabulate")
  runs: dict[tuple[str, str, int], dict[str, float]] = {}
  for r in rows:
    if not 0.0 <= r.success_rate <= 1.0:  # NaN fails it too
      raise ValueError(f"success_rate {r.success_rate} of {r.method}/{r.task}/seed {r.seed}/{r.split} is "
                       "outside [0, 1]")
    run = runs.setdefault((r.method, r.task, r.seed), {})
    if r.split in run:
      raise ValueError(f"two results for {r.method}/{r.task}/seed {r.seed}/{r.split}")
    run[r.split] = r.success_rate
  methods = _order((r.method for r in rows), METHODS)
  tasks = list(dict.fromkeys(r.task for r in rows))
  splits = _order((r.split for r in rows), SPLITS)
  seeds = sorted({r.seed for r in rows})
  families = [s for s in splits if s in OOD_FAMILIES]
  ood_avg_of = families or [s for s in splits if s != "id"]
  for run in runs.values():
    present = [run[s] for s in ood_avg_of if s in run]
    if present:
      run[OOD_AVG] = float(np.mean(present))
  columns = splits + ([OOD_AVG] if ood_avg_of else [])

  cells: dict[tuple[str, str, str], Stat] = {}
  for m in methods:
    for col in columns:
      per_seed_tasks: dict[int, list[float]] = {}
      for t in tasks:
        values = {s: runs[(m, t, s)][col] for s in seeds if col in runs.get((m, t, s), {})}
        if values:
          cells[(m, t, col)] = _stat(list(values.values()))
        for s, v in values.items():
          per_seed_tasks.setdefault(s, []).append(v)
      complete = [float(np.mean(v)) for v in per_seed_tasks.values() if len(v) == len(tasks)]
      if len(tasks) > 1 and complete:
        cells[(m, ALL_TASKS, col)] = _stat(complete)

  row_tasks = tasks + ([ALL_TASKS] if len(tasks) > 1 else [])
  ood = {(m, t): cells[(m, t, OOD_AVG)].mean for m in methods for t in row_tasks if (m, t, OOD_AVG) in cells}
  ref = reference if reference in methods else None
  baselines = [m for m in methods if m != ref and m not in VARIANTS] if ref else []
  improvement: dict[tuple[str, str], float | None] = {}
  if ref and baselines and ood_avg_of:
    for t in row_tasks:
      if (ref, t) not in ood:
        continue
      bases = {b: ood[(b, t)] for b in baselines if (b, t) in ood}
      for b, v in bases.items():
        improvement[(t, b)] = relative_improvement(ood[(ref, t)], v)
      if len(bases) == len(baselines):
        improvement[(t, BASELINES_MEAN)] = relative_improvement(ood[(ref, t)], float(np.mean(list(bases.values()))))
  return Table(methods=methods, tasks=tasks, splits=splits, ood_avg_of=ood_avg_of, seeds=seeds,
               episodes=sorted({r.episodes for r in rows}), cells=cells, reference=ref, baselines=baselines,
               improvement=improvement, ood=ood, rows=list(rows),
               budgets={m: b for m, b in (budgets or {}).items() if m in methods})


# ---- text -------------------------------------------------------------------------------------------

def _name(col: str) -> str:
  return "OOD avg" if col == OOD_AVG else col


def _pct(stat: Stat | None, pm: str = " ± ") -> str:
  return "–" if stat is None else f"{100 * stat.mean:.1f}{pm}{100 * stat.std:.1f}"


def _rel(value: float | None) -> str:
  return NA if value is None else f"{100 * value:+.1f}%"


def _improvement_columns(table: Table) -> list[str]:
  return table.baselines + ([BASELINES_MEAN] if len(table.baselines) > 1 else [])


def notes(table: Table) -> list[str]:
  """How the numbers were computed, one sentence per line (every output format repeats them)."""
  n = len(table.seeds)
  episodes = "/".join(str(e) for e in table.episodes if e) or "?"
  out = [f"Success rate (%) in the real simulator with the policy's mean action: mean ± std over {n} "
         f"seed{'s' if n != 1 else ''} ({', '.join(map(str, table.seeds))}), population std (ddof=0); "
         f"{episodes} episodes per run and split."]
  if table.ood_avg_of:
    out.append(f"OOD avg = mean of {', '.join(table.ood_avg_of)} per run"
               + ("; ood_all (every family shifted at once) is its own column." if "ood_all" in table.splits
                  and "ood_all" not in table.ood_avg_of else "."))
  if len(table.tasks) > 1:
    out.append(f"'{ALL_TASKS}': each seed's mean over the tasks, then mean ± std over seeds.")
  if table.improvement:
    out.append(f"Relative OOD improvement of {table.reference} over baseline b = (OOD_{table.reference} - OOD_b) / "
               "OOD_b, where OOD_x is the mean over seeds of method x's OOD avg (a ratio of means); over the "
               f"{BASELINES_MEAN}, OOD_b is the mean of the baselines' OOD_x; {NA} where OOD_b = 0.")
  if table.budgets:
    out.append("Real interaction per run beyond the demonstrations: "
               + "; ".join(f"{m}: {b}" for m, b in table.budgets.items()) + ".")
  return out


def markdown(table: Table) -> str:
  cols = table.columns
  lines = ["# Results: in-domain vs out-of-domain success", ""] + [f"- {n}" for n in notes(table)] + [""]
  lines += ["| method | task | " + " | ".join(_name(c) for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
  for m in table.methods:
    for t in table.row_tasks:
      lines.append(f"| {m} | {t} | " + " | ".join(_pct(table.cells.get((m, t, c))) for c in cols) + " |")
  if table.improvement:
    imp = _improvement_columns(table)
    lines += ["", f"## Relative OOD improvement of {table.reference}", "",
              "| task | OOD " + table.reference + " (%) | " + " | ".join(f"vs {b}" for b in imp) + " |",
              "|---|---|" + "---|" * len(imp)]
    for t in table.row_tasks:
      if (table.reference, t) in table.ood:
        lines.append(f"| {t} | {100 * table.ood[(table.reference, t)]:.1f} | "
                     + " | ".join(_rel(table.improvement.get((t, b))) if (t, b) in table.improvement else "–"
                                  for b in imp) + " |")
  return "\n".join(lines) + "\n"


def csv_text(table: Table) -> str:
  """One row per method x task; success rates as fractions in [0, 1]; an empty field where nothing ran."""
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  cols = table.columns
  w.writerow(["method", "task", "seeds"] + [f"{c}_{k}" for c in cols for k in ("mean", "std")])
  for m in table.methods:
    for t in table.row_tasks:
      stats = [table.cells.get((m, t, c)) for c in cols]
      seeds = max((s.seeds for s in stats if s is not None), default=0)
      values = [("", "") if s is None else (f"{s.mean:.6f}", f"{s.std:.6f}") for s in stats]
      w.writerow([m, t, seeds] + [v for pair in values for v in pair])
  return buf.getvalue()


def improvement_csv_text(table: Table) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(["task", "reference", "baseline", "ood_reference", "ood_baseline", "relative_improvement"])
  for (t, b), v in table.improvement.items():
    base = (float(np.mean([table.ood[(x, t)] for x in table.baselines])) if b == BASELINES_MEAN
            else table.ood[(b, t)])
    w.writerow([t, table.reference, b, f"{table.ood[(table.reference, t)]:.6f}", f"{base:.6f}",
                NA if v is None else f"{v:.6f}"])
  return buf.getvalue()


def _tex(s: str) -> str:
  s = s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")
  return s.replace("±", "$\\pm$")


PM_TEX = " \\pm "


def latex(table: Table) -> str:
  """Two booktabs tables (\\usepackage{booktabs})."""
  cols = table.columns
  head = " & ".join(["Method", "Task"] + [_tex(_name(c)) for c in cols])
  out = ["% Generated by rsr.eval.tables. " + _tex(" ".join(notes(table))),
         "\\begin{table}[t]", "\\centering", "\\small",
         f"\\caption{{{_tex(notes(table)[0])}}}", "\\label{tab:results}",
         "\\begin{tabular}{ll" + "c" * len(cols) + "}", "\\toprule", head + " \\\\", "\\midrule"]
  for i, m in enumerate(table.methods):
    if i:
      out.append("\\midrule")
    for t in table.row_tasks:
      vals = ["--" if table.cells.get((m, t, c)) is None else "$" + _pct(table.cells[(m, t, c)], PM_TEX) + "$"
              for c in cols]
      out.append(" & ".join([_tex(m), _tex(t)] + vals) + " \\\\")
  out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
  if table.improvement:
    imp = _improvement_columns(table)
    out += ["", "\\begin{table}[t]", "\\centering", "\\small",
            f"\\caption{{{_tex(notes(table)[-1])}}}", "\\label{tab:ood_improvement}",
            "\\begin{tabular}{l" + "c" * len(imp) + "}", "\\toprule",
            " & ".join(["Task"] + [f"vs {_tex(b)}" for b in imp]) + " \\\\", "\\midrule"]
    for t in table.row_tasks:
      if (table.reference, t) in table.ood:
        vals = [_tex(_rel(table.improvement[(t, b)])) if (t, b) in table.improvement else "--" for b in imp]
        out.append(" & ".join([_tex(t)] + vals) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
  return "\n".join(out) + "\n"


# ---- figure -----------------------------------------------------------------------------------------

def bar_chart(table: Table, path: str) -> str:
  """ID vs OOD avg success per method (the all-tasks row, or the only task), std over seeds as error bars."""
  from matplotlib.figure import Figure  # no pyplot: no global figure state, no display backend

  row = ALL_TASKS if len(table.tasks) > 1 else table.tasks[0]
  cols = ["id"] + ([OOD_AVG] if table.ood_avg_of else [])
  cols = [c for c in cols if any((m, row, c) in table.cells for m in table.methods)]
  x = np.arange(len(table.methods))
  width = 0.8 / max(1, len(cols))
  fig = Figure(figsize=(1.6 + 1.5 * len(table.methods), 3.6), dpi=120)
  ax = fig.subplots()
  for i, (c, colour) in enumerate(zip(cols, ("#4C72B0", "#DD8452"), strict=False)):
    stats = [table.cells.get((m, row, c)) for m in table.methods]
    means = [100 * s.mean if s else 0.0 for s in stats]
    stds = [100 * s.std if s else 0.0 for s in stats]
    pos = x + (i - (len(cols) - 1) / 2) * width
    ax.bar(pos, means, width, yerr=stds, capsize=3, color=colour, label="ID" if c == "id" else "OOD avg")
    for p, m, sd in zip(pos, means, stds, strict=True):
      ax.text(p, m + sd + 1, f"{m:.0f}", ha="center", va="bottom", fontsize=7)
  ax.set_xticks(x, table.methods, fontsize=8)
  ax.set_ylim(0, 110)
  ax.set_ylabel("success in the simulator (%)")
  n = len(table.seeds)
  ax.set_title(f"{row}: mean ± std over {n} seed{'s' if n != 1 else ''}", fontsize=9)
  ax.legend(fontsize=8, loc="upper left")
  fig.tight_layout()
  return media.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def write(table: Table, directory: str) -> dict[str, str]:
  """Writes every output of the table into `directory` (atomically); returns {kind: path}."""
  j = lambda name: os.path.join(directory, name)  # noqa: E731
  return {
      "markdown": media.write_text(j("results.md"), markdown(table)),
      "csv": media.write_text(j("results.csv"), csv_text(table)),
      "improvement_csv": media.write_text(j("improvement.csv"), improvement_csv_text(table)),
      "latex": media.write_text(j("results.tex"), latex(table)),
      "bar_chart": bar_chart(table, j("results.png")),
      "runs": media.write_json(j("runs.json"), [dataclasses.asdict(r) for r in table.rows]),
  }
