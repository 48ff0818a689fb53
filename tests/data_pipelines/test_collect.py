"""Collection: the RLDS schema round-trips, the data mix is what the config asks, and no kill or crash
ever leaves something that loads as a dataset, while re-running finishes the same dataset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import collect, dataset, synthetic
from rsr.envs.tabletop.tasks import TASKS
from tests.conftest import tiny_collect_config as tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _episodes(ds: dataset.Dataset) -> dict[str, dict]:
  return {ds.read(s, i)["meta"]["episode_id"]: ds.read(s, i) for s in ds.splits for i in range(ds.num_episodes(s))}


def _assert_same_episodes(a: dataset.Dataset, b: dataset.Dataset):
  ea, eb = _episodes(a), _episodes(b)
  assert sorted(ea) == sorted(eb)
  for k in ea:
    for field in ("rgb", "state", "action", "reward", "success", "is_terminal"):
      np.testing.assert_array_equal(ea[k][field], eb[k][field], err_msg=f"{k} {field}")


def test_rlds_schema_round_trip(tiny_dataset):
  ds = dataset.open_dataset(tiny_dataset, expect={"height": 16, "width": 16, "cameras": ["front"],
                                                  "action_dim": 5})
  assert ds.splits == ["train", "val", "ood_color"]
  assert [ds.num_episodes(s) for s in ds.splits] == [6, 2, 2]
  task = TASKS["push_cube"]
  for split in ds.splits:
    index = ds.index(split)
    for i in range(ds.num_episodes(split)):
      e = ds.read(split, i)
      n = len(e["action"])
      m = e["meta"]
      assert n == index["length"][i] == m["length"] and m["episode_id"] == index["episode_id"][i]
      assert m["task"] == "push_cube" and m["task_id"] == task.task_id
      assert m["split"] == ("ood_color" if split == "ood_color" else "id")
      assert e["rgb"].shape == (n, 16, 16, 3) and e["rgb"].dtype == np.uint8
      assert e["state"].shape == (n, 23) and (e["task"] == task.task_id).all()
      # RLDS flags: first/last exactly once; terminal iff the episode ends in success.
      assert e["is_first"].tolist() == [True] + [False] * (n - 1)
      assert e["is_last"].tolist() == [False] * (n - 1) + [True]
      assert e["is_terminal"].tolist() == [False] * (n - 1) + [bool(e["success"][-1])]
      assert e["discount"][-1] == (0.0 if e["success"][-1] else 1.0) and (e["discount"][:-1] == 1).all()
      assert (e["action"][-1] == 0).all() and e["reward"][-1] == 0
      assert np.abs(e["action"]).max() <= 1.0
      assert m["success"] == bool(e["success"].any())
      # Truncation: a successful episode ends 5 steps after its first success (or at the horizon).
      if m["success"]:
        assert n - 1 == min(int(e["success"].argmax()) + 5, task.horizon)
      else:
        assert n == task.horizon + 1
      # Frames change over an episode (the renderer ran) and differ between episodes' scenes.
      assert np.abs(e["rgb"][0].astype(int) - e["rgb"][-1]).max() > 30
  # Plain TFDS reads it without TensorFlow and agrees with our reader.
  tf_ds = tfds.builder_from_directory(ds.path).as_data_source()["train"]
  ours = {ds.read("train", i)["meta"]["episode_id"]: ds.read("train", i) for i in range(6)}
  ex = tf_ds[0]
  e = ours[ex["episode_metadata"]["episode_id"].decode() if isinstance(ex["episode_metadata"]["episode_id"], bytes)
           else ex["episode_metadata"]["episode_id"]]
  steps = ex["steps"]
  assert len(steps) == len(e["action"])
  np.testing.assert_array_equal(steps[3]["observation"]["rgb"], e["rgb"][3])
  np.testing.assert_array_equal(steps[3]["action"], e["action"][3])
  assert steps[0]["language_instruction"] in (task.instruction, task.instruction.encode())


def test_card_counts_and_mix(tiny_dataset):
  ds = dataset.open_dataset(tiny_dataset)
  import json
  card = json.load(open(os.path.join(ds.path, "card.json")))
  rows = {r["split"]: r for r in card["rows"]}
  assert {s: r["episodes"] for s, r in rows.items()} == {"train": 6, "val": 2, "ood_color": 2}
  assert card["episodes"] == 10 and card["bytes"] > 0
  assert card["steps"] == sum(int(ds.index(s)["length"].sum()) for s in ds.splits)
  # train: 6 episodes; explore 15% -> 1, then noise weights .5/.3/.2 of 5 -> 3/1/1 (largest remainder).
  assert rows["train"]["explore_episodes"] == 1
  assert rows["train"]["noise_levels"] == {"0": 3, "0.1": 1, "0.3": 1}
  idx = ds.index("train")
  assert rows["train"]["success_rate"] == pytest.approx(idx["success"].mean())
  assert "| push_cube | train | 6 |" in open(os.path.join(ds.path, "card.md")).read()


def test_behaviour_mix_is_exact_and_seeded():
  cfg = collect.CollectConfig.from_config(tiny_config())
  noise, explore = collect.behaviour_mix(cfg, "push_cube", "train", 200)
  assert explore.sum() == 30
  assert [(noise[~explore] == lv).sum() for lv in (0.0, 0.1, 0.3)] == [85, 51, 34]
  n2, e2 = collect.behaviour_mix(cfg, "push_cube", "train", 200)
  np.testing.assert_array_equal(noise, n2)
  n3, _ = collect.behaviour_mix(cfg, "pick_cube", "train", 200)
  assert not np.array_equal(noise, n3)  # each task x split has its own order


def test_train_explore_fraction_leaves_held_out_splits_alone():
  base = collect.CollectConfig.from_config(tiny_config())
  c = tiny_config()
  c.train_explore_fraction = 0.5
  c.train_noise_levels = (0.2, 0.6)
  c.train_noise_weights = (1.0, 1.0)
  cfg = collect.CollectConfig.from_config(c)
  noise, explore = collect.behaviour_mix(cfg, "push_cube", "train", 200)
  assert explore.sum() == 100
  assert [(noise[~explore] == lv).sum() for lv in (0.2, 0.6)] == [50, 50]
  for split in ("val", "ood_all"):
    for a, b in zip(collect.behaviour_mix(cfg, "push_cube", split, 200),
                    collect.behaviour_mix(base, "push_cube", split, 200), strict=True):
      np.testing.assert_array_equal(a, b)
  c.train_explore_fraction = 1.5
  with pytest.raises(ValueError, match="train_explore_fraction"):
    collect.CollectConfig.from_config(c)


def test_episode_ends():
  s = np.zeros((11, 3), bool)
  s[4:, 0] = True  # succeeds at 4 -> ends at 4 + 2
  s[9:, 1] = True  # succeeds at 9 -> capped at the horizon 10
  np.testing.assert_array_equal(collect.episode_ends(s, 2), [6, 10, 10])


@pytest.mark.slow
def test_kill_during_simulation_then_resume(tiny_dataset, tmp_path):
  """kill -9 after the first chunk: nothing loads; the same command then finishes the same dataset."""
  workdir = tmp_path / "killed"
  env = dict(os.environ, PYTHONPATH=ROOT)
  cmd = [sys.executable, "-m", "experiments.collect", "--config=experiments/configs/collect.py:tiny",
         "--config.tasks=push_cube", "--config.ood_splits=('ood_color',)", "--config.ood_episodes=2",
         f"--workdir={workdir}"]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  chunks = workdir / ".collect" / "chunks"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not list(chunks.glob("*.npz")):
    time.sleep(0.01)
  assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
  os.kill(proc.pid, signal.SIGSTOP)  # freeze it at once (the next chunk takes a good part of a second)
  proc.kill()
  proc.wait()
  assert list(chunks.glob("*.npz")) and not os.path.exists(dataset.dataset_dir(str(workdir)))
  with pytest.raises(dataset.DatasetError, match="unfinished collection"):
    dataset.open_dataset(str(workdir))
  # Re-running (here in-process, sharing the compiled rollout) finishes only what is missing.
  path = collect.collect(tiny_config(), str(workdir), progress=False)
  assert not (workdir / ".collect").exists()
  _assert_same_episodes(dataset.open_dataset(path), dataset.open_dataset(tiny_dataset))


def test_crash_during_write_then_resume(tiny_dataset, tmp_path, monkeypatch):
  """A death while TFDS writes (simulated by an exception after 3 episodes) publishes nothing."""
  workdir = str(tmp_path / "crashed")
  real = collect._chunk_episodes
  written = []

  def dying(*args):
    for item in real(*args):
      if len(written) == 3:
        raise KeyboardInterrupt("killed mid-write")
      written.append(item[0])
      yield item

  monkeypatch.setattr(collect, "_chunk_episodes", dying)
  with pytest.raises(KeyboardInterrupt):
    collect.collect(tiny_config(), workdir, progress=False)
  assert os.path.isdir(os.path.join(workdir, ".staging"))
  with pytest.raises(dataset.DatasetError, match="unfinished collection"):
    dataset.open_dataset(workdir)
  monkeypatch.setattr(collect, "_chunk_episodes", real)
  path = collect.collect(tiny_config(), workdir, progress=False)
  assert not os.path.exists(os.path.join(workdir, ".staging"))
  _assert_same_episodes(dataset.open_dataset(path), dataset.open_dataset(tiny_dataset))
  # Once published, the same command only confirms; a different config is refused, naming the field.
  assert collect.collect(tiny_config(), workdir, progress=False) == path
  other = tiny_config()
  other.seed = 1
  with pytest.raises(ValueError, match="seed: 0 there, 1 now"):
    collect.collect(other, workdir, progress=False)


def test_config_errors():
  bad = tiny_config()
  bad.ood_splits = ("id",)
  with pytest.raises(ValueError, match="ood_splits: unknown OOD split"):
    collect.CollectConfig.from_config(bad)
  bad = tiny_config()
  bad.noise_weights = (1.0,)
  with pytest.raises(ValueError, match="equal length"):
    collect.CollectConfig.from_config(bad)
  bad = tiny_config()
  bad.tasks = "push"
  with pytest.raises(ValueError, match="unknown task push"):
    collect.CollectConfig.from_config(bad)


def test_publishing_leaves_no_temporary_directories(tmp_path, monkeypatch):
  """TFDS looks every new builder up on its public bucket through a temporary directory that it never
  removes (one /tmp/tmp*tfds per collection); a dataset made here skips the lookup."""
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(tmp))
  synthetic.write_synthetic(str(tmp_path / "ds"), {"train": 2}, image_size=16, lengths=(4, 6), progress=False)
  assert sorted(os.listdir(tmp)) == []
