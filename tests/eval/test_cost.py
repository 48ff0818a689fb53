"""The grid's cost model: jobs and their units from the config, speeds measured and kept, the weighted bar."""

import json
import os

from experiments.configs import reproduce as reproduce_configs
from rsr.eval import cost
from rsr.stages import reproduce as reproduce_lib


def test_jobs_cover_the_grid_in_its_units(tmp_path):
  c = reproduce_configs.get_config("tiny")
  p = reproduce_lib.plan(c, str(tmp_path / "grid"))
  jobs = reproduce_lib.jobs(c, p)
  assert all(todo for _, todo in jobs)  # a new directory: everything is to run
  by = {j.name: j for j, _ in jobs}
  horizon = cost.horizon("push_cube")
  col = c.collect
  assert by["collect"].units == (col.train_episodes + col.val_episodes
                                 + col.ood_episodes * len(col.ood_splits)) * horizon
  assert [n for n in by if n.startswith("world model")] == [f"world model: {s}" for s in p.world_model_stages
                                                            if s != "tokenize"]
  assert by["world model: dynamics"].units == c.world_model.dynamics_train.steps
  assert by["bc seed 0"].units == c.policy.bc.steps and by["bc seed 0"].kind == "bc"
  assert by["roboscape_r push_cube seed 0"].kind == "ppo_wm" and by["ppo_sim push_cube seed 0"].kind == "ppo_sim"
  assert by["roboscape_r push_cube seed 0"].units == c.policy.ppo.updates
  # The learned reward head and the endogenous reward are two costs; one budget change is not another cost.
  assert by["roboscape_r push_cube seed 0"].key != by["ppo_wm_learned push_cube seed 0"].key
  more = reproduce_configs.get_config("tiny")
  more.policy.ppo.updates *= 10
  again = {j.name: j for j, _ in reproduce_lib.jobs(more, reproduce_lib.plan(more, str(tmp_path / "g2")))}
  assert again["roboscape_r push_cube seed 0"].key == by["roboscape_r push_cube seed 0"].key
  wider = reproduce_configs.get_config("tiny")
  wider.policy.ppo.num_envs *= 2
  again = {j.name: j for j, _ in reproduce_lib.jobs(wider, reproduce_lib.plan(wider, str(tmp_path / "g3")))}
  assert again["roboscape_r push_cube seed 0"].key != by["roboscape_r push_cube seed 0"].key
  ev = by["evaluate bc push_cube seed 0"]
  assert ev.units == c.eval.episodes * len(p.splits) * horizon


def test_speeds_persist_and_estimate(tmp_path):
  path = str(tmp_path / "speeds.json")
  s = cost.Speeds(path)
  a, b = cost.Job("a", "bc", "bc:1", 100), cost.Job("b", "ppo_wm", "ppo_wm:2", 10)
  assert s.estimate(a) is None and "not yet measured here" in cost.describe([a, b], s)
  s.record("bc:1", 50, 20.0)
  s.record("bc:1", 150, 60.0)  # total seconds over total units: 0.4 s per step
  again = cost.Speeds(path)
  assert abs(again.estimate(a) - 40.0) < 1e-9
  assert cost.total([a, b], again) == (40.0, [b])
  line = cost.describe([a, b], again)
  assert "estimated 40 s for 1 of them" in line and "ppo_wm x1" in line
  assert cost.describe([], again).startswith("nothing left to run")
  with open(path, "w") as f:
    f.write("{not json")
  assert cost.Speeds(path).estimate(a) is None  # a damaged cache only loses the estimate
  assert cost.duration(7500) == "2 h 05 min" and cost.duration(840) == "14 min" and cost.duration(40) == "40 s"


def test_grid_bar_weighs_jobs_by_their_estimate(tmp_path):
  s = cost.Speeds(str(tmp_path / "speeds.json"))
  s.record("ppo_wm:x", 1, 90.0)
  s.record("evaluate:y", 1, 10.0)
  jobs = [cost.Job("ppo", "ppo_wm", "ppo_wm:x", 1), cost.Job("ev", "evaluate", "evaluate:y", 1),
          cost.Job("new", "bc", "bc:z", 5)]
  bar = cost.GridBar(jobs, s, progress=False)
  assert abs(bar.bar.total - 150.0) < 1e-9  # the unmeasured job counts as the mean measured one (50)
  bar.finish(jobs[1], None)  # resumed: done, but not a measure
  assert abs(bar.bar.n - 10.0) < 1e-9
  bar.finish(jobs[2], 25.0)  # measured: 5 s per step from now on
  assert abs(bar.bar.total - 125.0) < 1e-9 and abs(bar.bar.n - 35.0) < 1e-9
  with open(s.path) as f:
    assert json.load(f)["bc:z"] == {"units": 5.0, "seconds": 25.0, "runs": 1}
  bar.close()
  assert os.path.isfile(s.path)


def test_dyna_method_is_its_own_stage_cost_and_budget(tmp_path):
  c = reproduce_configs.get_config("tiny")
  c.methods = "roboscape_r,roboscape_r_dyna"
  p = reproduce_lib.plan(c, str(tmp_path / "grid"))
  by = {j.name: j for j, _ in reproduce_lib.jobs(c, p)}
  dyna, plain = by["roboscape_r_dyna push_cube seed 0"], by["roboscape_r push_cube seed 0"]
  assert dyna.kind == "dyna" and dyna.units == c.policy.ppo.updates and dyna.key != plain.key
  rc = reproduce_lib.run_config(c, p, "roboscape_r_dyna", "push_cube", 0)
  assert rc.stages == "bc,dyna" and (rc.env, rc.reward) == ("world_model", "endogenous")
  assert reproduce_lib.run_config(c, p, "roboscape_r", "push_cube", 0).stages == "bc,ppo"
  d = c.policy.dyna
  assert reproduce_lib.budgets(c)["roboscape_r_dyna"].startswith(f"{d.episodes * (d.rounds - 1)} real episodes")
