"""The tokenized dataset: every frame of a dataset as token ids, computed once with a frozen tokenizer.

World-model training reads windows of tokens thousands of times; encoding each frame once (a derived
dataset) removes the encoder from every training step. One file, `tokens.npz`, written by atomic rename,
holds per split the tokens i16/i32[S, N] of all S steps (N = views x h x w), the actions, rewards, success
signals, privileged simulator states (for state probes) and task ids, and the episode lengths.
`fingerprint` names what it was derived from (the source dataset's manifest hash and the tokenizer's
identity); opening it with another fingerprint is an error naming the file, so a retrained tokenizer never
meets stale tokens.

`TokenDataset` offers what `WindowLoader` needs (`splits`, `index`, `read`, `frame_keys`, `path`), so the
same deterministic, resumable windows serve tokens as they serve pixels.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from data_pipelines.dataset import MANIFEST, Dataset, DatasetError, sha256
from rsr.utils import media

FILE = "tokens.npz"


def source_fingerprint(ds: Dataset, tokenizer_id: str) -> str:
  return f"{sha256(os.path.join(ds.path, MANIFEST))[:16]}/{tokenizer_id}"


class TokenDataset:
  def __init__(self, path: str, arrays: dict[str, np.ndarray], meta: dict):
    self.path = path
    self._a = arrays
    self.meta = meta
    self._offsets = {s: np.concatenate([[0], np.cumsum(arrays[f"{s}/lengths"])]) for s in meta["splits"]}

  frame_keys = ("tokens",)

  @property
  def splits(self) -> list[str]:
    return list(self.meta["splits"])

  @property
  def tokens_per_frame(self) -> int:
    return int(self.meta["tokens_per_frame"])

  def index(self, split: str) -> dict[str, np.ndarray]:
    if split not in self.meta["splits"]:
      raise DatasetError(f"{self.path} has no split {split!r}; it has: {', '.join(self.splits)}")
    return {"length": self._a[f"{split}/lengths"], "task_id": self._a[f"{split}/task_ids"]}

  def num_episodes(self, split: str) -> int:
    return len(self.index(split)["length"])

  def read(self, split: str, i: int) -> dict[str, Any]:
    o = self._offsets[split]
    s = slice(o[i], o[i + 1])
    n = o[i + 1] - o[i]
    out = {"tokens": self._a[f"{split}/tokens"][s].astype(np.int32), "action": self._a[f"{split}/action"][s],
           "reward": self._a[f"{split}/reward"][s], "success": self._a[f"{split}/success"][s],
           "task": np.full(n, self._a[f"{split}/task_ids"][i], np.int32)}
    if f"{split}/state" in self._a:  # token datasets made before states were kept have none
      out["state"] = self._a[f"{split}/state"][s]
    return out


def with_episodes(tok_ds: TokenDataset, split: str, episodes: list[dict[str, np.ndarray]], tag: str
                  ) -> TokenDataset:
  """`tok_ds` with `episodes` appended to `split`, in memory (the source file is untouched): the Dyna
  loop's union of the demonstrations and the policy's own episodes.

  episodes: dicts as `read` returns them (tokens [L, N], action [L, A], reward, success, state [L, S],
  task [L]); tag names them in the fingerprint (a different union never passes for this one)."""
  if split not in tok_ds.splits:
    raise DatasetError(f"{tok_ds.path} has no split {split!r}; it has: {', '.join(tok_ds.splits)}")
  arrays = dict(tok_ds._a)
  for e in episodes:
    if e["tokens"].shape[1] != tok_ds.tokens_per_frame:
      raise DatasetError(f"an appended episode has {e['tokens'].shape[1]} tokens per frame; {tok_ds.path} has "
                         f"{tok_ds.tokens_per_frame}")
  keys = ["tokens", "action", "reward", "success"] + ["state"] * (f"{split}/state" in arrays)
  for k in keys:
    old = arrays[f"{split}/{k}"]
    arrays[f"{split}/{k}"] = np.concatenate([old] + [np.asarray(e[k]).astype(old.dtype) for e in episodes])
  arrays[f"{split}/lengths"] = np.concatenate([arrays[f"{split}/lengths"],
                                               np.asarray([len(e["action"]) for e in episodes], np.int32)])
  arrays[f"{split}/task_ids"] = np.concatenate([arrays[f"{split}/task_ids"],
                                                np.asarray([int(e["task"][0]) for e in episodes], np.int32)])
  meta = dict(tok_ds.meta, fingerprint=f"{tok_ds.meta['fingerprint']}+{tag}")
  return TokenDataset(tok_ds.path, arrays, meta)


def tokenize(ds: Dataset, encode: Callable[[np.ndarray], np.ndarray], out_dir: str, fingerprint: str,
             batch_frames: int = 256, progress: bool = True,
             per_episode: Callable[[np.ndarray], np.ndarray] | None = None) -> str:
  """Encodes every frame of every split of `ds` and publishes OUT_DIR/tokens.npz atomically.

  encode: uint8[n, H, W, 3] -> token ids [n, h, w], or with `per_episode`, per-frame latents [n, ...] that
  per_episode turns into one view's token ids [L, h, w] an episode at a time (quantization that depends
  on the previous frame); views of a multi-camera step are concatenated.
  """
  arrays: dict[str, np.ndarray] = {}
  total = sum(ds.num_episodes(s) for s in ds.splits)
  n_tokens = None
  with tqdm(total=total, desc="tokenize", unit="ep", disable=not progress, dynamic_ncols=True) as bar:
    for split in ds.splits:
      keys = ("action", "reward", "success", "state")
      parts: dict[str, list] = {k: [] for k in ("tokens",) + keys}
      lengths, task_ids = [], []
      pending, pending_eps = [], []
      for i in range(ds.num_episodes(split)):
        e = ds.read(split, i)
        n = len(e["action"])
        pending.append(np.concatenate([e[k] for k in ds.frame_keys]))
        pending_eps.append(n)
        for k in keys:
          parts[k].append(e[k])
        lengths.append(n)
        task_ids.append(int(e["task"][0]))
        if sum(pending_eps) * len(ds.frame_keys) >= 4 * batch_frames:
          parts["tokens"] += _encode(pending, pending_eps, len(ds.frame_keys), encode, batch_frames, per_episode)
          pending, pending_eps = [], []
        bar.update(1)
      parts["tokens"] += _encode(pending, pending_eps, len(ds.frame_keys), encode, batch_frames, per_episode)
      tokens = np.concatenate(parts["tokens"])
      n_tokens = tokens.shape[1]
      dtype = np.int16 if tokens.max() < 2**15 else np.int32
      arrays[f"{split}/tokens"] = tokens.astype(dtype)
      for k in keys:
        arrays[f"{split}/{k}"] = np.concatenate(parts[k])
      arrays[f"{split}/lengths"] = np.asarray(lengths, np.int32)
      arrays[f"{split}/task_ids"] = np.asarray(task_ids, np.int32)
  meta = {"fingerprint": fingerprint, "splits": ds.splits, "tokens_per_frame": int(n_tokens),
          "source": ds.path}
  arrays["meta"] = np.asarray(json.dumps(meta))

  path = os.path.join(out_dir, FILE)
  media.write_npz(path, arrays)
  return path


def _encode(frames: list[np.ndarray], lengths: list[int], views: int, encode, batch_frames: int,
            per_episode=None) -> list[np.ndarray]:
  """Episodes' frames (each [views * L, H, W, 3], view-major) -> their tokens, each [L, views * h * w]."""
  if not frames:
    return []
  flat = np.concatenate(frames)
  codes = np.concatenate([np.asarray(encode(flat[j:j + batch_frames])) for j in range(0, len(flat), batch_frames)])
  out, off = [], 0
  for length in lengths:
    c = codes[off:off + length * views]
    c = c.reshape((views, length) + c.shape[1:])
    if per_episode is not None:
      c = np.stack([np.asarray(per_episode(v)) for v in c])
    out.append(c.reshape(views, length, -1).transpose(1, 0, 2).reshape(length, -1))
    off += length * views
  return out


def open_tokens(out_dir: str, fingerprint: str | None = None) -> TokenDataset:
  path = os.path.join(out_dir, FILE)
  if not os.path.exists(path):
    raise DatasetError(f"no tokenized dataset at {path}")
  try:
    with np.load(path) as z:
      arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
  except (OSError, ValueError, KeyError, EOFError) as e:
    raise DatasetError(f"{path} is unreadable ({type(e).__name__}: {e}); delete it to re-tokenize") from None
  if fingerprint is not None and meta.get("fingerprint") != fingerprint:
    raise DatasetError(f"{path} was made from {meta.get('fingerprint')!r}, not {fingerprint!r} (another "
                       "dataset or tokenizer); delete it to re-tokenize")
  return TokenDataset(path, arrays, meta)
