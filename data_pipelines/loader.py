"""Training batches of windows: (B, T) frames, actions, done labels and masks from a dataset split.

    loader = WindowLoader(open_dataset(path, expect=...), "train", WindowConfig(batch_size=32, window=16), seed=0)
    state = loader.init_state()                       # a tiny pytree: checkpoint it with the model
    for batch, state in loader.iterate(state, sharding=batch_sharding):
      ...                                            # resuming from a saved `state` replays exactly

Sampling. The windows of a split are every (episode, start) with start in 0, stride, ... up to
len - window (one window at start 0 for an episode shorter than the window: its tail is padded and masked),
so a window never crosses an episode boundary. Each epoch visits every window once in a seeded random
order; batch `step` holds samples step*B .. (step+1)*B - 1 of that endless sequence. A batch is therefore a
pure function of (dataset, config, seed, process, step): resuming needs only `LoaderState.step`.

Processes. Process p of P reads only the episodes i with i % P == p (disjoint data), builds the local
batch of B / P windows, and `iterate` assembles the global batch with `jax.make_array_from_process_local_data`
on the sharding the trainer asks for (a background thread prepares the next batches meanwhile).

Done labels (the world model's done head) come from the simulator's per-step success signal:
  "step": done_t = success_t;
  "ramp": done_t rises linearly over the `ramp_steps` frames before the first success
          (done = 1 - (t_success - t) / ramp_steps, clipped at 0), then follows success_t;
  failed episodes are 0 throughout either way.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
from typing import Any, Iterator

import jax
import numpy as np
from flax import struct

from data_pipelines import dataset as dataset_lib

DONE_LABELS = ("step", "ramp")


@dataclasses.dataclass(frozen=True)
class WindowConfig:
  batch_size: int  # global: windows per step across all processes
  window: int  # T frames per window
  stride: int = 1  # distance between window starts within an episode
  done_label: str = "step"  # or "ramp"
  ramp_steps: int = 10
  with_state: bool = False  # add the privileged state f32[B, T, D] (analysis, probes)
  cache_gb: float = 4.0  # decoded episodes kept in memory per process (least recently used evicted)

  def validate(self, process_count: int) -> "WindowConfig":
    for name in ("batch_size", "window", "stride", "ramp_steps"):
      v = getattr(self, name)
      if not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if self.batch_size % process_count:
      raise ValueError(f"batch_size {self.batch_size} is not divisible by the {process_count} processes")
    if self.done_label not in DONE_LABELS:
      raise ValueError(f"done_label must be one of {DONE_LABELS}, got {self.done_label!r}")
    return self


@struct.dataclass
class LoaderState:
  """Everything needed to resume the batch sequence (saved in checkpoints beside the model)."""

  step: np.ndarray  # i64[] index of the next batch


def done_labels(success: np.ndarray, mode: str = "step", ramp_steps: int = 10) -> np.ndarray:
  """bool[L] per-step success -> f32[L] done labels (see the module docstring)."""
  success = np.asarray(success, bool)
  done = success.astype(np.float32)
  if mode == "ramp" and success.any():
    first = int(success.argmax())
    t = np.arange(first)
    done[:first] = np.clip(1.0 - (first - t) / ramp_steps, 0.0, 1.0)
  elif mode not in DONE_LABELS:
    raise ValueError(f"done_label must be one of {DONE_LABELS}, got {mode!r}")
  return done


class WindowLoader:
  """Deterministic, resumable, per-process windowed batches of one split (see the module docstring)."""

  def __init__(self, ds: dataset_lib.Dataset, split: str, config: WindowConfig, seed: int = 0,
               process_index: int | None = None, process_count: int | None = None,
               select: np.ndarray | None = None):
    """select: bool[E] over the split's episodes (ds.index order), the episodes to read; None = all."""
    self.ds = ds
    self.split = split
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= self.process_index < self.process_count:
      raise ValueError(f"process_index {self.process_index} is not in [0, {self.process_count})")
    self.config = config.validate(self.process_count)
    self.seed = seed
    self.local_batch = config.batch_size // self.process_count
    lengths = ds.index(split)["length"]
    if select is None:
      select = np.ones(len(lengths), bool)
    select = np.asarray(select, bool)
    if select.shape != lengths.shape:
      raise ValueError(f"select has shape {select.shape}; split {split!r} has {len(lengths)} episodes")
    # Global indices of the selected episodes; process p reads every P-th of them.
    self.episodes = np.flatnonzero(select)[self.process_index::self.process_count]
    if not len(self.episodes):
      raise dataset_lib.DatasetError(f"{ds.path}: split {split!r} has {int(select.sum())} selected episodes "
                                     f"(of {len(lengths)}), fewer than the {self.process_count} processes "
                                     "that share it")
    local = lengths[self.episodes]
    n_starts = np.maximum(local - config.window, 0) // config.stride + 1
    self._win_episode = np.repeat(np.arange(len(local)), n_starts)  # local episode of each window
    self._win_start = (np.arange(len(self._win_episode)) - np.repeat(np.cumsum(n_starts) - n_starts, n_starts)
                       ) * config.stride
    self._lengths = local
    self._perm_cache: dict[int, np.ndarray] = {}
    self._cache: collections.OrderedDict[int, dict] = collections.OrderedDict()
    self._cache_bytes = 0
    self._lock = threading.Lock()
    self.frame_keys = tuple(ds.frame_keys)  # rgb per camera, or tokens for a tokenized dataset

  @property
  def num_windows(self) -> int:
    """Windows in this process's share of the split (one epoch)."""
    return len(self._win_episode)

  def init_state(self) -> LoaderState:
    return LoaderState(step=np.zeros((), np.int64))

  # ---- sampling -------------------------------------------------------------------------------------
  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perm_cache:
      if len(self._perm_cache) > 2:
        self._perm_cache.pop(min(self._perm_cache))
      rng = np.random.default_rng([self.seed, self.process_index, self.process_count, epoch])
      self._perm_cache[epoch] = rng.permutation(self.num_windows)
    return self._perm_cache[epoch]

  def windows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(global episode index i32[B_local], start i32[B_local]) of batch `step`."""
    idx = step * self.local_batch + np.arange(self.local_batch, dtype=np.int64)
    epoch, pos = np.divmod(idx, self.num_windows)
    w = np.array([self._perm(int(e))[p] for e, p in zip(epoch, pos, strict=True)], np.int64)
    return self.episodes[self._win_episode[w]].astype(np.int32), self._win_start[w].astype(np.int32)

  # ---- episodes -------------------------------------------------------------------------------------
  def _episode(self, i: int) -> dict[str, np.ndarray]:
    with self._lock:
      if i in self._cache:
        self._cache.move_to_end(i)
        return self._cache[i]
    e = self.ds.read(self.split, int(i))
    keep = {k: e[k] for k in self.frame_keys}
    keep["action"] = e["action"]
    keep["reward"] = e["reward"]
    keep["done"] = done_labels(e["success"], self.config.done_label, self.config.ramp_steps)
    keep["task"] = np.asarray(e["task"][0], np.int32)
    if self.config.with_state:
      keep["state"] = e["state"]
    size = sum(v.nbytes for v in keep.values())
    with self._lock:
      self._cache[i] = keep
      self._cache_bytes += size
      while self._cache_bytes > self.config.cache_gb * 2**30 and len(self._cache) > 1:
        _, old = self._cache.popitem(last=False)
        self._cache_bytes -= sum(v.nbytes for v in old.values())
    return keep

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's part of batch `step` (numpy):
      rgb[_wrist] uint8[B, T, H, W, 3] (tokens i32[B, T, N] from a tokenized dataset), action f32[B, T, A], reward f32[B, T], done f32[B, T],
      mask bool[B, T] (False on padding past an episode's end), task i32[B], episode i32[B],
      start i32[B], and state f32[B, T, D] with `with_state`. Padded steps repeat nothing: they are zero.
    """
    episodes, starts = self.windows(step)
    t = self.config.window
    out: dict[str, list] = collections.defaultdict(list)
    for i, s in zip(episodes, starts, strict=True):
      e = self._episode(int(i))
      n = min(t, len(e["action"]) - s)
      for k, v in e.items():
        if k == "task":
          out[k].append(v)
          continue
        w = v[s:s + n]
        if n < t:
          w = np.concatenate([w, np.zeros((t - n,) + w.shape[1:], w.dtype)])
        out[k].append(w)
      out["mask"].append(np.arange(t) < n)
    batch = {k: np.stack(v) for k, v in out.items()}
    batch["episode"], batch["start"] = episodes, starts
    return batch

  # ---- iteration ------------------------------------------------------------------------------------
  def iterate(self, state: LoaderState, sharding: Any = None, prefetch: int = 2
              ) -> Iterator[tuple[dict[str, Any], LoaderState]]:
    """Yields (batch, state after it) from `state` on; with `sharding` (a jax.sharding.Sharding of the
    batch axis) the batch is global jax Arrays assembled from every process's part, else numpy."""
    step0 = int(state.step)
    q: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
    stop = threading.Event()

    def work():
      s = step0
      while not stop.is_set():
        try:
          item = (s, self.batch(s))
        except Exception as e:  # surfaced in the consumer's thread, with its traceback
          item = (s, e)
        while not stop.is_set():
          try:
            q.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if isinstance(item[1], Exception):
          return
        s += 1

    thread = threading.Thread(target=work, name="window-loader", daemon=True)
    thread.start()
    try:
      while True:
        s, b = q.get()
        if isinstance(b, Exception):
          raise b
        if sharding is not None:
          b = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in b.items()}
        yield b, LoaderState(step=np.asarray(s + 1, np.int64))
    finally:
      stop.set()
      thread.join(timeout=5)
