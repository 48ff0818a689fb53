"""A dataset of synthetic episodes in the real schema, written through the real publish path.

For what needs a dataset but not the simulator's content: the loader benchmark at sizes the simulator
would take minutes to fill, and tests of the writer and loader. Frames are smooth random images (block
upsampled noise, so they compress like rendered scenes rather than like white noise); success turns on
for the last few steps of about two thirds of the episodes.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from data_pipelines import dataset, publish, rlds
from rsr.envs.tabletop.env import STATE_DIM
from rsr.envs.tabletop.tasks import TASKS


def episodes(spec: rlds.DatasetSpec, split: str, n: int, lengths: tuple[int, int], seed: int
             ) -> Iterator[tuple[str, dict]]:
  rng = np.random.default_rng([seed, len(split)])
  tasks = list(TASKS.values())
  for i in range(n):
    task = tasks[i % len(tasks)]
    length = int(rng.integers(lengths[0], lengths[1] + 1))
    obs = {}
    for c in spec.cameras:
      coarse = rng.integers(0, 256, (length, spec.height // 8 + 1, spec.width // 8 + 1, 3), dtype=np.uint8)
      obs[rlds.camera_key(c)] = coarse.repeat(8, 1).repeat(8, 2)[:, :spec.height, :spec.width]
    obs["state"] = rng.normal(size=(length, STATE_DIM)).astype(np.float32)
    obs["task"] = np.full(length, task.task_id, np.int32)
    action = rng.uniform(-1, 1, (length, spec.action_dim)).astype(np.float32)
    action[-1] = 0.0
    success = np.zeros(length, bool)
    ok = rng.random() < 2 / 3
    if ok:
      success[-min(length, 1 + int(rng.integers(0, 6))):] = True
    steps = {"obs": obs, "action": action, "reward": rng.random(length).astype(np.float32), "success": success}
    scene = {k: np.zeros(s, np.dtype(t)) for k, (s, t) in spec.scene_shapes.items()}
    meta = {"episode_id": f"{task.name}/{split}/{i:05d}", "task": task.name, "task_id": task.task_id,
            "split": "id", "policy": "expert", "noise": 0.0, "success": ok, "length": length, "scene": scene}
    yield meta["episode_id"], rlds.episode_example(steps, meta, task.instruction)


def write_synthetic(workdir: str, splits: dict[str, int], image_size: int = 64,
                    cameras: tuple[str, ...] = ("front",), lengths: tuple[int, int] = (20, 81), seed: int = 0,
                    progress: bool = True) -> str:
  """Publishes a synthetic dataset with `splits` {name: episodes} into `workdir`; returns its directory."""
  spec = rlds.DatasetSpec(height=image_size, width=image_size, cameras=tuple(cameras), state_dim=STATE_DIM,
                          action_dim=5, scene_shapes=rlds.scene_shapes())
  config = {"synthetic": True, "splits": dict(splits), "image_size": image_size, "cameras": list(cameras),
            "lengths": list(lengths), "seed": seed}
  publish.write_dataset(workdir, spec, {s: (lambda s=s, n=n: episodes(spec, s, n, lengths, seed))
                                        for s, n in splits.items()},
                        episodes=sum(splits.values()), config=config, progress=progress)
  return dataset.dataset_dir(workdir)
