"""Imagined against real success of trained policies in any world model, from the same starts.

    report = gap.report([trained.load(p) for p in workdirs], "runs/world_model", task="pick_cube",
                        starts=64, offset=10, horizon=16)

PPO inside a world model can only improve a policy in the world if the model ranks policies as the world
does: a policy that succeeds more in the simulator should succeed more (and earn more) in imagination. The
PPO stage reports this gap for its own start and result (`eval.gap_starts`); this report puts any number of
finished policies side by side in any world model (e.g. one a Dyna round fine-tuned), from starts of the
expert's id episodes after `offset` steps (rsr/eval/exploitation.py), and the rank correlation across
policies of imagined success and return with real success.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from scipy import stats

from data_pipelines import open_dataset
from rsr.stages import environments, policy_config
from rsr.stages import ppo as stage_ppo


def report(policies: Sequence, world_model_dir: str, task: str, starts: int, offset: int, horizon: int,
           seed: int = 0, progress: bool = True) -> dict:
  """policies: rsr.stages.trained.TrainedPolicy (any stage). -> {"policies": {workdir: exploitation.gap(...)},
  "spearman": {"imagined_success" / "imagined_return": rank correlation with real success across policies},
  and the settings}. The world model's own dataset supplies the frames' size and the tokens."""
  if not policies:
    raise ValueError("report needs at least one policy")
  names = [p.workdir for p in policies]
  if len(set(names)) < len(names):
    raise ValueError(f"report: a policy workdir is named twice in {names}")
  wdir = os.path.abspath(world_model_dir)
  wcfg = policy_config.world_model_config(wdir)
  config = policies[0].config.copy_and_resolve_references()
  config.unlock()
  config.update(env="world_model", reward="endogenous", world_model_dir=wdir, task=task, seed=seed,
                data_dir=wcfg.data_dir)
  config.wm_env.horizon, config.eval.gap_starts, config.eval.gap_offset = horizon, starts, offset
  config.wm_env.goal = "real"  # the paired starts' goals are the expert's success frames whatever the policy had
  ds = open_dataset(wcfg.data_dir, verify="size")
  policy_config.check(config, ("ppo",), ds)
  wm = environments.world_model_parts(config, ds, progress=progress)
  rows = stage_ppo.exploitation_report(config, ds, wm, {p.workdir: p.make_policy(p.params) for p in policies})
  out = {"world_model": wdir, "task": task, "starts": starts, "offset": offset, "horizon": horizon,
         "policies": rows, "spearman": {}}
  real = [r["real_success"] for r in rows.values()]
  for key in ("imagined_success", "imagined_return"):
    ranked = [r[key] for r in rows.values()]
    # Undefined for fewer than three policies or where either side does not vary.
    ok = len(rows) >= 3 and np.ptp(real) > 0 and np.ptp(ranked) > 0
    out["spearman"][key] = float(stats.spearmanr(ranked, real).statistic) if ok else None
  return out


def table(result: dict) -> str:
  """The report as a markdown table."""
  lines = [f"world model {result['world_model']}, {result['task']}: {result['starts']} id starts after "
           f"{result['offset']} expert steps, {result['horizon']} steps", "",
           "| policy | real success | imagined success | imagined return | agreement | imagined only | real only |",
           "|---|---|---|---|---|---|---|"]
  for name, r in result["policies"].items():
    lines.append(f"| {name} | {r['real_success']:.3f} | {r['imagined_success']:.3f} | {r['imagined_return']:.2f} "
                 f"| {r['agreement']:.3f} | {r['imagined_only']:.3f} | {r['real_only']:.3f} |")
  fmt = lambda v: "-" if v is None else f"{v:+.2f}"  # noqa: E731
  lines += ["", "Spearman with real success across policies: imagined success "
            f"{fmt(result['spearman']['imagined_success'])}, imagined return "
            f"{fmt(result['spearman']['imagined_return'])}"]
  return "\n".join(lines)
