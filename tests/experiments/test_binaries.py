"""The binaries as a user runs them: outputs exist and hold real results; bad flags give clear errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args, timeout=1200):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_tour_tiny(tmp_path):
  r = _run("experiments.tour", "--config=experiments/configs/tour.py:tiny",
           "--config.tasks=pick_cube", f"--workdir={tmp_path}")
  assert r.returncode == 0, r.stderr[-3000:]
  for f in ("videos/pick_cube.gif", "contact_sheet.png", "tables/sim_success.md", "tables/sim_success.json",
            "config.json"):
    assert os.path.getsize(tmp_path / f) > 0, f
  cells = json.loads((tmp_path / "tables/sim_success.json").read_text())
  assert {c["split"] for c in cells} == {"id", "ood_color", "ood_table", "ood_distractor", "ood_light",
                                         "ood_camera", "ood_all"}
  assert all(c["task"] == "pick_cube" and c["episodes"] == 2 for c in cells)
  assert "| pick_cube |" in r.stdout and "contact_sheet.png" in r.stdout


@pytest.mark.parametrize("flag,message", [
    ("--task=stack", "unknown task stack; valid: push_cube, pick_cube, stack_cube, place_cube"),
    ("--split=ood_sky", "unknown split ood_sky; valid: id, ood_color"),
    ("--policy=ckpt/", "/ckpt: the path does not exist (expected a train_policy workdir)"),
    ("--episodes=0", "--episodes must be positive, got 0"),
])
def test_evaluate_bad_flags(flag, message):
  r = _run("experiments.evaluate", flag, timeout=600)
  assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr


def test_tour_bad_image_size(tmp_path):
  r = _run("experiments.tour", "--config=experiments/configs/tour.py:tiny",
           "--config.image_size=0", f"--workdir={tmp_path}", timeout=600)
  assert r.returncode != 0 and "height must be a positive integer, got 0" in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr


def test_inspect_dataset(tiny_dataset, tmp_path):
  out = tmp_path / "sheet.png"
  r = _run("experiments.inspect_dataset", f"--data_dir={tiny_dataset}", "--episodes=2", f"--out={out}",
           timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "| push_cube | train | 6 |" in r.stdout and "contact sheet:" in r.stdout
  assert "Actions predictable from the states" in r.stdout and "| ood_color |" in r.stdout
  from PIL import Image
  sheet = np.asarray(Image.open(out))
  # 3 splits x 2 rows, each row three 96x96 frames (16x16 upscaled) plus a label strip.
  assert sheet.shape[1] >= 3 * 96 and sheet.shape[0] >= 6 * 96
  assert sheet.std() > 10  # real frames, not a blank page


@pytest.mark.parametrize("args,message", [
    (("--config.tasks=lift",), "unknown task lift; valid: push_cube"),
    (("--config.ood_splits=('ood_sky',)",), "ood_splits: unknown OOD split(s) ood_sky"),
    (("--config.image_size=0",), "image_size must be a positive integer, got 0"),
])
def test_collect_bad_config(args, message, tmp_path):
  r = _run("experiments.collect", "--config=experiments/configs/collect.py:tiny", *args,
           f"--workdir={tmp_path}", timeout=600)
  assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr and not os.path.exists(tmp_path / "data")


def test_inspect_missing_dataset(tmp_path):
  r = _run("experiments.inspect_dataset", f"--data_dir={tmp_path}/none", timeout=600)
  assert r.returncode != 0 and f"no dataset at {tmp_path}/none: the path does not exist" in r.stderr
  assert "Traceback" not in r.stderr


def test_train_world_model_tiny(tiny_dataset, tiny_world_model, tmp_path):
  # conftest ran the binary as a user does; the re-run below writes its reports again, so it runs on a copy
  # (other tests, on other workers, read the shared one meanwhile).
  shutil.copytree(tiny_world_model, tmp_path / "wm", symlinks=True)
  tmp_path = tmp_path / "wm"
  workdir = str(tmp_path)
  for f in ("config.json", "metrics.jsonl", "tokens/tokens.npz", "tables/tokenizer.json", "tables/dynamics.json",
            "images/tokenizer_recon.png", "videos/imagined_val_push_cube.gif", "videos/imagined_ood_color_push_cube.gif",
            "tables/goal.json", "images/goals_val.png", "tables/reward.json"):
    assert os.path.getsize(tmp_path / f) > 0, f
  dyn = json.loads((tmp_path / "tables/dynamics.json").read_text())
  assert {"val/psnr", "val/psnr_copy", "val/psnr_shuffled", "ood_color/psnr", "val/done_f1"} <= set(dyn)
  # The held-out training objective: a cross-entropy and accuracies, per held-out split.
  for split in ("val", "ood_color"):
    assert dyn[f"{split}/ce"] > 0 and 0 <= dyn[f"{split}/token_acc"] <= 1 and 0 <= dyn[f"{split}/changed_acc"] <= 1
  # The probe's paired gains are the per-window differences of the errors it reports, with an interval.
  for ref in ("shuffled", "copy"):
    gain = np.array(dyn[f"val/probe_gripper_gain_over_{ref}"])
    diff = np.array(dyn[f"val/probe_gripper_{ref}"]) - np.array(dyn["val/probe_gripper_imagined"])
    np.testing.assert_allclose(gain, diff, atol=2e-3)  # both rounded to 1e-3 cm in the report
    assert np.all(np.array(dyn[f"val/probe_gripper_gain_over_{ref}_ci95"]) >= 0)
  for stage in ("tokenizer", "dynamics", "goal", "reward"):
    assert list((tmp_path / "tb" / stage).glob("events.out.tfevents.*")), stage
  stages = {json.loads(ln)["stage"] for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()}
  assert stages == {"tokenizer", "dynamics", "goal", "reward"}
  goal = json.loads((tmp_path / "tables/goal.json").read_text())
  assert {"val/goal_reached", "val/goal_psnr", "val/goal_psnr_first_frame", "val/done_f1"} <= set(goal)
  reward = json.loads((tmp_path / "tables/reward.json").read_text())
  assert {"val/reward_mse", "ood_color/reward_mse"} <= set(reward)
  # Re-running a finished workdir resumes nothing, changes no result and succeeds.
  before = (tmp_path / "metrics.jsonl").read_text()
  r = _run("experiments.train_world_model", "--config=experiments/configs/world_model.py:tiny",
           f"--config.data_dir={tiny_dataset}", f"--workdir={workdir}", timeout=1800)
  assert r.returncode == 0, r.stderr[-3000:]
  assert (tmp_path / "metrics.jsonl").read_text() == before


def test_train_world_model_bad_stage(tiny_dataset, tmp_path):
  r = _run("experiments.train_world_model", "--config=experiments/configs/world_model.py:tiny",
           f"--config.data_dir={tiny_dataset}", "--config.stages=tokenizer,policy", f"--workdir={tmp_path}",
           timeout=600)
  assert r.returncode != 0 and "unknown stage(s) policy; valid: tokenizer, tokenize, dynamics, goal" in r.stderr
  assert "Traceback" not in r.stderr
