"""experiments.reproduce as a user runs it: the tiny grid (every method, one task, one seed) on the session's
tiny dataset and world model produces every table file with every cell filled; a re-run skips everything;
experiments.evaluate reads the runs it left, and names a checkpoint it cannot read."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHODS = ("bc", "ppo_sim", "ppo_wm_learned", "roboscape_r")


def _run(*args, timeout=1800, cache=None):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if cache:
    env["RSR_CACHE"] = str(cache)  # this machine's measured speeds (rsr/eval/cost.py), kept per test
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _reproduce(workdir, tiny_dataset, tiny_world_model, *extra, timeout=2400):
  return _run("experiments.reproduce", "--config=experiments/configs/reproduce.py:tiny",
              f"--config.data_dir={tiny_dataset}", f"--config.world_model_dir={tiny_world_model}",
              f"--workdir={workdir}", *extra, timeout=timeout, cache=os.path.join(workdir, "speeds"))


@pytest.fixture(scope="module")
def reproduced(tiny_dataset, tiny_world_model, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reproduce")
  r = _reproduce(workdir, tiny_dataset, tiny_world_model)
  assert r.returncode == 0, r.stderr[-4000:]
  return workdir, r.stdout


def test_tables_have_every_cell(reproduced):
  workdir, stdout = reproduced
  tables = workdir / "tables"
  for f in ("results.md", "results.csv", "results.tex", "results.png", "improvement.csv", "runs.json"):
    assert os.path.getsize(tables / f) > 0, f
  rows = list(csv.DictReader(io.StringIO((tables / "results.csv").read_text())))
  assert [r["method"] for r in rows] == list(METHODS) and {r["task"] for r in rows} == {"push_cube"}
  assert set(rows[0]) == {"method", "task", "seeds", "id_mean", "id_std", "ood_color_mean", "ood_color_std",
                          "ood_avg_mean", "ood_avg_std"}
  for r in rows:
    assert all(v != "" for v in r.values()), r
    assert 0.0 <= float(r["id_mean"]) <= 1.0 and r["seeds"] == "1"
  imp = list(csv.DictReader(io.StringIO((tables / "improvement.csv").read_text())))
  assert [r["baseline"] for r in imp] == ["bc", "ppo_sim", "ppo_wm_learned", "baselines' mean"]
  assert all(r["relative_improvement"] for r in imp)  # a number, or n/a where the baseline's OOD success is 0
  md = (tables / "results.md").read_text()
  for m in METHODS:
    assert f"| {m} | push_cube |" in md
  assert "–" not in md.split("| method |", 1)[1]
  tex = (tables / "results.tex").read_text()
  assert "roboscape\\_r & push\\_cube" in tex and "\\bottomrule" in tex
  # Which stage limits it: the world model's held-out reports, every stage of the fixture's world model in.
  wm = (tables / "world_model.md").read_text()
  assert wm.startswith("| world model, held out | val | ood_color |"), wm
  for row in ("tokenizer PSNR (dB)", "open-loop gain over copy-last-frame (dB)", "done AUC"):
    assert f"| {row} | " in wm and f"| {row} | n/a" not in wm, wm
  # Printed at the end: the tables and where every file went.
  assert "| roboscape_r | push_cube |" in stdout and str(tables / "results.csv") in stdout
  assert wm in stdout
  assert str(workdir / "runs") in stdout


def test_methods_share_the_bc_initialisation_and_budget(reproduced):
  workdir, _ = reproduced
  bc = workdir / "bc" / "seed_0"
  assert (bc / "DONE.json").exists() and not (bc / "checkpoints" / "ppo").exists()
  updates = set()
  for m in ("ppo_sim", "ppo_wm_learned", "roboscape_r"):
    run = workdir / "runs" / m / "push_cube" / "seed_0"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["task"] == "push_cube"
    # The BC checkpoint is the shared run's, byte for byte.
    for name in os.listdir(bc / "checkpoints" / "bc"):
      assert (run / "checkpoints" / "bc" / name).exists(), name
    assert (bc / "checkpoints/bc/compat.json").read_bytes() == (run / "checkpoints/bc/compat.json").read_bytes()
    updates.add(json.loads((run / "tables" / "ppo.json").read_text())["updates"])
    results = json.loads((workdir / "eval" / m / "push_cube" / "seed_0" / "results.json").read_text())
    assert results["stage"] == "ppo" and results["finished"] and results["policy"] == str(run)
    assert [c["split"] for c in results["results"]] == ["id", "ood_color"]
    for c in results["results"]:
      assert c["ci95"][0] <= c["success_rate"] <= c["ci95"][1] and c["episodes"] == 4 and c["mean_length"] > 0
  assert len(updates) == 1  # the same budget of PPO updates
  bc_eval = json.loads((workdir / "eval" / "bc" / "push_cube" / "seed_0" / "results.json").read_text())
  assert bc_eval["stage"] == "bc" and bc_eval["policy"] == str(bc)
  assert (workdir / "eval" / "roboscape_r" / "push_cube" / "seed_0" / "videos" / "push_cube_ood_color.gif").exists()


def test_rerun_skips_what_is_done(reproduced, tiny_dataset, tiny_world_model):
  workdir, _ = reproduced
  before = {p: os.path.getmtime(p) for p in workdir.glob("eval/*/*/*/results.json")}
  csv_before = (workdir / "tables" / "results.csv").read_text()
  # ppo.microbatch and wm_env.chunk change how the work is computed, not what it is: the finished runs
  # stay done.
  r = _reproduce(workdir, tiny_dataset, tiny_world_model, "--config.policy.ppo.microbatch=4",
                 "--config.policy.wm_env.chunk=2", timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  started = [ln for ln in r.stdout.splitlines() if ln.startswith("reproduce: ") and " -> " in ln]
  assert all(ln.startswith("reproduce: data -> ") for ln in started), started  # no BC, PPO or world model run
  assert "reproduce: nothing left to run" in r.stdout
  assert {p: os.path.getmtime(p) for p in before} == before  # nothing evaluated again
  assert (workdir / "tables" / "results.csv").read_text() == csv_before


def test_grid_cost_is_estimated_from_this_machine(reproduced, tiny_dataset, tiny_world_model):
  """The first grid names the kinds it has not measured; each sub-run that ran from its start records its
  seconds per unit, so the same grid in a new directory is estimated whole before it starts."""
  from experiments.configs import reproduce as reproduce_configs
  from rsr.eval import cost
  from rsr.stages import reproduce as reproduce_lib

  workdir, stdout = reproduced
  first = [ln for ln in stdout.splitlines() if ln.startswith("reproduce: ") and "sub-runs to run" in ln]
  assert len(first) == 1 and "not yet measured here" in first[0], first
  for kind in ("bc", "ppo_sim", "ppo_wm", "evaluate"):
    assert kind + " x" in first[0], first[0]
  with open(os.path.join(workdir, "speeds", "speeds.json")) as f:
    speeds = json.load(f)
  # ppo_wm twice: the learned and the endogenous reward cost differently; the evaluations share one shape.
  assert sorted(k.split(":")[0] for k in speeds) == ["bc", "evaluate", "ppo_sim", "ppo_wm", "ppo_wm"], speeds
  assert all(e["seconds"] > 0 and e["units"] > 0 for e in speeds.values())
  assert sum(e["runs"] for k, e in speeds.items() if k.startswith("evaluate")) == len(METHODS)
  c = reproduce_configs.get_config("tiny")
  c.data_dir, c.world_model_dir = tiny_dataset, tiny_world_model
  pending = [j for j, todo in reproduce_lib.jobs(c, reproduce_lib.plan(c, str(workdir) + "_again")) if todo]
  line = cost.describe(pending, cost.Speeds(os.path.join(workdir, "speeds", "speeds.json")))
  assert "not yet measured" not in line and f"{len(pending)} sub-runs to run" in line, line
  assert not [j for j, todo in reproduce_lib.jobs(c, reproduce_lib.plan(c, str(workdir))) if todo]


def test_changed_config_is_refused(reproduced, tiny_dataset, tiny_world_model):
  workdir, _ = reproduced
  r = _reproduce(workdir, tiny_dataset, tiny_world_model, "--config.policy.ppo.updates=8", timeout=600)
  assert r.returncode != 0 and "finished with another config (ppo.updates: done with 4, config has 8)" in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr


def test_evaluate_reads_a_run_and_names_a_broken_one(reproduced, tmp_path):
  workdir, _ = reproduced
  run = workdir / "runs" / "roboscape_r" / "push_cube" / "seed_0"
  broken = tmp_path / "broken"
  shutil.copytree(run, broken)
  step = max(int(d) for d in os.listdir(broken / "checkpoints" / "ppo") if d.isdigit())
  shutil.rmtree(broken / "checkpoints" / "ppo" / str(step) / "state")
  r = _run("experiments.evaluate", f"--policy={broken}", "--episodes=2", timeout=600)
  assert r.returncode != 0 and "Traceback" not in r.stderr
  error = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
  assert len(error) == 1 and f"{broken}/checkpoints/ppo" in error[0], r.stderr[-2000:]
  r = _run("experiments.evaluate", f"--policy={tmp_path}/missing", "--episodes=2", timeout=600)
  assert r.returncode != 0 and f"no policy at {tmp_path}/missing: the path does not exist" in r.stderr


@pytest.mark.parametrize("args,message", [
    (("--config.methods=bc,dreamer",), "unknown method dreamer; valid: bc, ppo_sim, ppo_wm_learned, roboscape_r"),
    (("--config.seeds=0,x",), "seeds must be a comma list of integers, got '0,x'"),
    (("--config.eval.splits=ood_color",), "eval.splits must include 'id'"),
    (("--config.policy.agent.use_goal=True",), "agent.use_goal needs env=world_model"),
])
def test_bad_config_is_named(args, message, tmp_path):
  r = _run("experiments.reproduce", "--config=experiments/configs/reproduce.py:tiny", *args,
           f"--workdir={tmp_path}", timeout=600)
  assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr and not os.path.exists(tmp_path / "data")


@pytest.mark.parametrize("preset", ["tiny", "cpu", "paper", "gpu", "tpu_pod"])
def test_presets_are_valid(preset, tmp_path, monkeypatch):
  from experiments.configs import reproduce as configs
  from rsr.stages import reproduce
  from rsr.utils import checks

  config = configs.get_config(preset)
  if preset == "tpu_pod":  # a pod's mesh: refused on this machine's devices, valid on a slice's
    with pytest.raises(ValueError, match="devices present"):
      reproduce.plan(config, str(tmp_path))
    monkeypatch.setattr(checks, "device_count", lambda: 64)
  p = reproduce.plan(config, str(tmp_path))
  assert p.methods == list(METHODS) and "id" in p.splits and p.world_model_stages
  assert not os.listdir(tmp_path)  # validation writes nothing


@pytest.mark.parametrize("preset", ["tiny", "cpu", "paper"])
def test_quickstart_presets_are_valid(preset, tmp_path):
  from experiments.configs import quickstart as configs
  from rsr.stages import reproduce

  p = reproduce.plan(configs.get_config(preset), str(tmp_path))
  task = "pick_cube" if preset == "cpu" else "push_cube"  # README command 1 runs the task BC learns soonest
  assert p.methods == list(METHODS) and p.tasks == [task] and p.seeds == [0] and p.world_model_stages
  assert not os.listdir(tmp_path)


def test_quickstart_runs_the_chain_and_reports(tiny_dataset, tmp_path):
  """The quickstart binary is the reproduce chain: here its bc slice (no world model needed) on the session's
  data, down to the table, with the wall time, the peak memory and the files printed."""
  r = _run("experiments.quickstart", "--config=experiments/configs/quickstart.py:tiny", "--config.methods=bc",
           f"--config.data_dir={tiny_dataset}", f"--workdir={tmp_path}")
  assert r.returncode == 0, r.stderr[-3000:]
  rows = list(csv.DictReader(io.StringIO((tmp_path / "tables" / "results.csv").read_text())))
  assert [(x["method"], x["task"]) for x in rows] == [("bc", "push_cube")] and rows[0]["ood_color_mean"] != ""
  assert "| bc | push_cube |" in r.stdout and "peak memory" in r.stdout and "Finished in" in r.stdout
  assert str(tmp_path / "tables" / "results.csv") in r.stdout
  assert not (tmp_path / "world_model").exists()
