"""Windowed batches: never across episodes, deterministic, exactly resumable, disjoint across processes."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data_pipelines import dataset, loader

CFG = loader.WindowConfig(batch_size=4, window=8, done_label="step", with_state=True)


@pytest.fixture(scope="module")
def ds(tiny_dataset):
  return dataset.open_dataset(tiny_dataset)


def test_windows_are_slices_of_one_episode(ds):
  ld = loader.WindowLoader(ds, "train", CFG, seed=0)
  lengths = ds.index("train")["length"]
  assert ld.num_windows == int(np.sum(np.maximum(lengths - 8, 0) + 1))
  episodes = {i: ds.read("train", i) for i in range(ds.num_episodes("train"))}
  seen = set()
  for step in range(2 * ld.num_windows // 4 + 1):  # two epochs
    b = ld.batch(step)
    assert b["rgb"].shape == (4, 8, 16, 16, 3) and b["action"].shape == (4, 8, 5)
    for j in range(4):
      i, s = int(b["episode"][j]), int(b["start"][j])
      e = episodes[i]
      n = int(b["mask"][j].sum())
      assert s + n <= len(e["action"]) and b["mask"][j].tolist() == [True] * n + [False] * (8 - n)
      np.testing.assert_array_equal(b["rgb"][j, :n], e["rgb"][s:s + n])
      np.testing.assert_array_equal(b["action"][j, :n], e["action"][s:s + n])
      np.testing.assert_array_equal(b["state"][j, :n], e["state"][s:s + n])
      np.testing.assert_array_equal(b["done"][j, :n], e["success"][s:s + n].astype(np.float32))
      assert b["task"][j] == e["task"][0]
      assert (b["rgb"][j, n:] == 0).all()
      seen.add((i, s))
  assert len(seen) == ld.num_windows  # every window visited within the first epoch


def test_short_episode_is_padded_and_masked(ds):
  lengths = ds.index("train")["length"]
  longer = int(lengths.max()) + 3
  ld = loader.WindowLoader(ds, "train", dataclasses.replace(CFG, window=longer), seed=0)
  assert ld.num_windows == len(lengths)  # one window per episode, all padded
  b = ld.batch(0)
  np.testing.assert_array_equal(b["mask"].sum(1), lengths[b["episode"]])
  assert b["start"].tolist() == [0, 0, 0, 0]


def test_deterministic_and_seeded(ds):
  a = [loader.WindowLoader(ds, "train", CFG, seed=0).windows(s) for s in range(20)]
  b = [loader.WindowLoader(ds, "train", CFG, seed=0).windows(s) for s in range(20)]
  c = [loader.WindowLoader(ds, "train", CFG, seed=1).windows(s) for s in range(20)]
  assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
  assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))


def test_resume_replays_exactly(ds, tmp_path):
  """A run that stops after 5 batches and resumes from its checkpointed state sees the uninterrupted
  sequence."""
  ld = loader.WindowLoader(ds, "train", CFG, seed=3)
  it = ld.iterate(ld.init_state())
  straight = [next(it)[0] for _ in range(9)]
  it.close()
  it = loader.WindowLoader(ds, "train", CFG, seed=3).iterate(ld.init_state())
  for _ in range(5):
    _, saved = next(it)
  it.close()
  assert int(saved.step) == 5
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / "loader", saved)
  ckpt.wait_until_finished()
  saved = ckpt.restore(tmp_path / "loader", ld.init_state())
  assert int(saved.step) == 5
  it = loader.WindowLoader(ds, "train", CFG, seed=3).iterate(saved)
  resumed = [next(it)[0] for _ in range(4)]
  it.close()
  for x, y in zip(straight[5:], resumed, strict=True):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_process_shards_are_disjoint(ds):
  n = ds.num_episodes("train")
  loaders = [loader.WindowLoader(ds, "train", CFG, seed=0, process_index=p, process_count=2) for p in range(2)]
  assert loaders[0].local_batch == 2
  parts = [set(ld.episodes.tolist()) for ld in loaders]
  assert not parts[0] & parts[1] and parts[0] | parts[1] == set(range(n))
  for p, ld in enumerate(loaders):
    for step in range(10):
      assert set(ld.batch(step)["episode"].tolist()) <= parts[p]
  with pytest.raises(ValueError, match="batch_size 4 is not divisible by the 3 processes"):
    loader.WindowLoader(ds, "train", CFG, process_index=0, process_count=3)


def test_select_reads_only_the_chosen_episodes(ds):
  index = ds.index("train")
  n = len(index["length"])
  select = np.arange(n) % 2 == 1  # every other episode
  ld = loader.WindowLoader(ds, "train", CFG, seed=0, select=select)
  assert ld.episodes.tolist() == np.flatnonzero(select).tolist()
  seen = set()
  for step in range(20):
    b = ld.batch(step)
    seen |= set(b["episode"].tolist())
  assert seen == set(np.flatnonzero(select).tolist())
  # Across processes: the selected episodes, split disjointly.
  parts = [set(loader.WindowLoader(ds, "train", CFG, seed=0, select=select, process_index=p,
                                   process_count=2).episodes.tolist()) for p in range(2)]
  assert not parts[0] & parts[1] and parts[0] | parts[1] == set(np.flatnonzero(select).tolist())
  with pytest.raises(ValueError, match=f"select has shape \\(3,\\); split 'train' has {n} episodes"):
    loader.WindowLoader(ds, "train", CFG, select=np.ones(3, bool))
  with pytest.raises(dataset.DatasetError, match="split 'train' has 0 selected episodes"):
    loader.WindowLoader(ds, "train", CFG, select=np.zeros(n, bool))


def test_iterate_places_batches_on_the_sharding(ds):
  ld = loader.WindowLoader(ds, "train", CFG, seed=0)
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
  it = ld.iterate(ld.init_state(), sharding=sharding)
  b, state = next(it)
  it.close()
  assert isinstance(b["rgb"], jax.Array) and b["rgb"].sharding == sharding and b["rgb"].shape == (4, 8, 16, 16, 3)
  np.testing.assert_array_equal(np.asarray(b["rgb"]), ld.batch(0)["rgb"])
  assert int(state.step) == 1


def test_done_labels():
  s = np.array([0, 0, 0, 0, 0, 1, 1, 0], bool)
  np.testing.assert_array_equal(loader.done_labels(s, "step"), s.astype(np.float32))
  np.testing.assert_allclose(loader.done_labels(s, "ramp", 4), [0, 0, 0.25, 0.5, 0.75, 1, 1, 0])
  np.testing.assert_array_equal(loader.done_labels(np.zeros(5, bool), "ramp", 4), np.zeros(5))
  with pytest.raises(ValueError, match="done_label must be one of"):
    loader.done_labels(s, "sigmoid")


def test_ramp_labels_in_batches(ds):
  ld = loader.WindowLoader(ds, "train", dataclasses.replace(CFG, done_label="ramp", ramp_steps=5), seed=0)
  for step in range(10):
    b = ld.batch(step)
    for j in range(4):
      e = ds.read("train", int(b["episode"][j]))
      want = loader.done_labels(e["success"], "ramp", 5)[b["start"][j]:b["start"][j] + 8]
      np.testing.assert_allclose(b["done"][j, :len(want)], want)


def test_bad_config(ds):
  with pytest.raises(ValueError, match="window must be a positive integer"):
    loader.WindowLoader(ds, "train", dataclasses.replace(CFG, window=0))
  with pytest.raises(dataset.DatasetError, match="has no split 'test'"):
    loader.WindowLoader(ds, "test", CFG)
