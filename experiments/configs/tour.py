"""Tour presets (experiments.tour): `--config=experiments/configs/tour.py:PRESET` with PRESET in tiny, cpu, paper.

tiny   tests: one small compile per task, 32x32, 2 episodes per split.
cpu    64x64, 8 episodes per split, on a 2-core CPU in minutes.
paper  the paper's two views (front + wrist) at 128x128 and 32 episodes per split (an accelerator).
"""

import ml_collections

PRESETS = ("tiny", "cpu", "paper")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.tasks = "all"  # or a comma list of task names
  c.seed = 0
  c.image_size = {"tiny": 32, "cpu": 64, "paper": 128}[preset]
  c.cameras = ("front", "wrist") if preset == "paper" else ("front",)
  c.episodes_per_split = {"tiny": 2, "cpu": 8, "paper": 32}[preset]
  c.video_episodes = {"tiny": 1, "cpu": 2, "paper": 4}[preset]  # per split, in each GIF
  c.noise = 0.0  # expert action noise
  return c
