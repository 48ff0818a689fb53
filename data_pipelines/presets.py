"""Data collection presets (`--config=experiments/configs/collect.py:PRESET`): tiny, cpu, paper.

tiny   tests: one task-sized compile, 16x16 frames, a handful of episodes.
cpu    the quickstart's data: all four tasks at 64x64 (front camera), 240 ID episodes per task
       (224 train + 16 val) and 16 held-out ood_all episodes per task for evaluation; minutes on 2 cores.
paper  the paper's scale: about 500 demonstrations per task plus noisy and exploratory episodes,
       front + wrist cameras at 128x128, every OOD family held out for evaluation (an accelerator).

Every episode is the scripted expert with per-episode behaviour: expert episodes at each noise level in
`noise_levels` (shares `noise_weights`), and a share `explore_fraction` of exploratory episodes in which
segments of random actions interrupt the expert (data_pipelines/behaviour.py); the `train_` fields give
the train split a mix of its own. Failed episodes are kept.
OOD scenes are collected only into their own splits (named after the family) and never into train/val.
"""

import ml_collections
from ml_collections import config_dict

PRESETS = ("tiny", "cpu", "paper")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.tasks = "all"  # or a comma list of task names
  c.seed = 0
  c.image_size = {"tiny": 16, "cpu": 64, "paper": 128}[preset]
  c.cameras = ("front", "wrist") if preset == "paper" else ("front",)
  c.shadows = True
  # Episodes per task in each TFDS split: train and val hold in-domain scenes; each name in ood_splits
  # becomes a split of its own with ood_episodes episodes.
  c.train_episodes = {"tiny": 6, "cpu": 224, "paper": 768}[preset]
  c.val_episodes = {"tiny": 2, "cpu": 16, "paper": 64}[preset]
  c.ood_splits = {"tiny": (), "cpu": ("ood_all",),
                  "paper": ("ood_color", "ood_table", "ood_distractor", "ood_light", "ood_camera",
                            "ood_all")}[preset]
  c.ood_episodes = {"tiny": 0, "cpu": 16, "paper": 64}[preset]
  c.batch_size = {"tiny": 4, "cpu": 64, "paper": 256}[preset]  # episodes simulated in parallel
  # The behaviour mix (see the module docstring).
  c.noise_levels = (0.0, 0.1, 0.3)
  c.noise_weights = (0.5, 0.3, 0.2)
  c.explore_fraction = 0.15
  # The train split's own mix (None: the fields above). Held-out splits keep the fields above, so world
  # models trained on different mixes are scored on the same held-out episodes.
  c.train_noise_levels = config_dict.placeholder(tuple)
  c.train_noise_weights = config_dict.placeholder(tuple)
  c.train_explore_fraction = config_dict.placeholder(float)
  c.explore_segment_prob = 0.15
  c.explore_segment_len = (2, 8)
  # Steps kept after the first success, so that the done head sees completed states more than once.
  c.steps_after_success = 5
  return c
