r"""Prints a dataset's card and how predictable its actions are from its states (per split: the held-out
R^2 of a linear map from state and state change to the action, data_pipelines/predictability.py; near 1, a
world model can predict the next frame without reading the action), and writes a contact sheet of sampled
episodes (first, middle, last frame per row).

    python -m experiments.inspect_dataset --data_dir=runs/data [--split=train --episodes=8 --out=sheet.png
        --r2_episodes=256]

--data_dir is a collect workdir, a TFDS data_dir, or the dataset directory itself. The dataset is verified
(shard sizes and checksums) before anything is read; problems are reported naming the file.
"""

from __future__ import annotations

import os

from absl import flags

from experiments.common import run

_DATA_DIR = flags.DEFINE_string("data_dir", None, "The dataset (collect workdir or dataset directory).",
                                required=True)
_SPLIT = flags.DEFINE_string("split", "all", "Split(s) to sample rows from: a name, comma list, or 'all'.")
_EPISODES = flags.DEFINE_integer("episodes", 8, "Episodes (rows) sampled per split.")
_OUT = flags.DEFINE_string("out", None, "Contact sheet PNG (default: contact_sheet.png in the collect workdir).")
_SEED = flags.DEFINE_integer("seed", 0, "Which episodes are sampled.")
_R2_EPISODES = flags.DEFINE_integer("r2_episodes", 256, "Episodes per split read for the action R^2 (a seeded "
                                    "sample where a split holds more): reading every episode of a large split "
                                    "takes minutes.")


def contact_sheet(ds, splits: list[str], per_split: int, seed: int):
  """One row per sampled episode: first | middle | last frame (all cameras), labelled."""
  import numpy as np

  from data_pipelines import rlds
  from rsr.utils import media

  zoom = max(1, -(-96 // ds.spec.height))  # frames at least 96 px, so the labels fit
  rows = []
  for split in splits:
    n = ds.num_episodes(split)
    pick = np.sort(np.random.default_rng([seed, len(split)]).choice(n, min(per_split, n), replace=False))
    for i in pick:
      e = ds.read(split, int(i))
      m = e["meta"]
      length = len(e["action"])
      frames = []
      for t in (0, length // 2, length - 1):
        views = [e[rlds.camera_key(c)][t] for c in ds.spec.cameras]
        frames.append(media.upscale(np.concatenate(views, axis=1), zoom))
      row = media.grid([frames])
      text = (f"{split} {m['task']} {m['policy']} noise={m['noise']:.2f} "
              f"{'success' if m['success'] else 'failure'} len={length}")
      rows.append([media.label(row, text)])
  return media.grid(rows, pad=4)


def action_predictability(ds, splits: list[str], episodes: int, seed: int) -> str:
  """A markdown table: per split (at most `episodes` of it, a seeded sample), the held-out R^2 of each action
  dimension from the states, and their mean."""
  import numpy as np

  from data_pipelines import predictability

  lines = ["| split | steps | action R^2 from state (per dimension) | mean |", "|---|---|---|---|"]
  for split in splits:
    n = ds.num_episodes(split)
    pick = np.sort(np.random.default_rng([seed, len(split)]).permutation(n)[:episodes]) if n > episodes else range(n)
    x, y = predictability.state_action_pairs(ds.read(split, int(i)) for i in pick)
    r2 = predictability.action_r2(x, y)
    lines.append(f"| {split} | {len(x)} | {', '.join(f'{v:.2f}' for v in r2)} | {np.mean(r2):.2f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  from data_pipelines import dataset as dataset_lib
  from rsr.utils import checks, media

  if _EPISODES.value <= 0:
    raise ValueError(f"--episodes must be positive, got {_EPISODES.value}")
  if _R2_EPISODES.value <= 0:
    raise ValueError(f"--r2_episodes must be positive, got {_R2_EPISODES.value}")
  ds = dataset_lib.open_dataset(_DATA_DIR.value)
  splits = checks.expand(_SPLIT.value, ds.splits, "split")
  with open(os.path.join(ds.path, "card.md")) as f:
    print(f.read())
  print("Actions predictable from the states (held-out linear R^2):\n")
  print(action_predictability(ds, splits, _R2_EPISODES.value, _SEED.value) + "\n")
  sheet = contact_sheet(ds, splits, _EPISODES.value, _SEED.value)
  out = _OUT.value
  if out is None:
    # DATA/rsr_tabletop/1.0.0 inside a collect workdir: write beside the data, not into the dataset.
    parts = ds.path.rstrip(os.sep).split(os.sep)
    root = os.sep.join(parts[:-3]) if len(parts) > 3 and parts[-3] == "data" else os.getcwd()
    out = os.path.join(root, "contact_sheet.png")
  media.write_png(out, sheet)
  print(f"dataset: {ds.path}\ncontact sheet: {os.path.abspath(out)} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
  run(main)
