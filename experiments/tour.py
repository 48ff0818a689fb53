r"""A tour of the tabletop simulator: the scripted expert on every task and scene split.

    python -m experiments.tour [--config=experiments/configs/tour.py:cpu] [--workdir=runs/tour]

For every task, the scripted expert runs episodes on every scene split in ONE compiled, vmapped rollout
(scenes are data, so one batch mixes all splits). Writes into the workdir:
  videos/TASK.gif         expert episodes on `id` (left) next to `ood_all` (right)
  contact_sheet.png       first frames: one row per split, columns = tasks
  tables/sim_success.md   success rate per task x split (Wilson 95% interval), also .json
  config.json             the resolved config
and prints the table and where every file went.
"""

from __future__ import annotations

import os
import time

from absl import flags

from experiments.common import define_config_file, run

_CONFIG = define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "tour.py") + ":cpu",
    "Tour config file and preset (tiny, cpu, paper).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/tour", "Where every output goes.")


def _validate(c):
  from rsr.envs import TASK_NAMES
  from rsr.envs.tabletop.env import TabletopConfig
  from rsr.utils import checks

  tasks = checks.expand(c.tasks, TASK_NAMES, "task")
  TabletopConfig(height=c.image_size, width=c.image_size, cameras=tuple(c.cameras)).validate()
  for name in ("episodes_per_split", "video_episodes"):
    if c[name] <= 0:
      raise ValueError(f"config.{name} must be positive, got {c[name]}")
  if c.video_episodes > c.episodes_per_split:
    raise ValueError(f"config.video_episodes ({c.video_episodes}) exceeds config.episodes_per_split "
                     f"({c.episodes_per_split})")
  if c.noise < 0:
    raise ValueError(f"config.noise must be >= 0, got {c.noise}")
  return tasks


def run_task(task: str, c, splits) -> dict:
  """Expert episodes of one task on every split: frames and per-split outcomes (numpy)."""
  import jax
  import jax.numpy as jnp

  from rsr import envs
  from rsr.envs import rollout as rollout_lib
  from rsr.envs.tabletop import scenes as scenes_lib

  env = envs.make(task, height=c.image_size, width=c.image_size, cameras=tuple(c.cameras))
  per = c.episodes_per_split
  key = jax.random.PRNGKey(c.seed)
  batches = [scenes_lib.sample_batch(jax.random.fold_in(key, i), s, per) for i, s in enumerate(splits)]
  scenes = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *batches)
  policy = rollout_lib.expert_policy(env, c.noise)
  run = jax.jit(lambda k, s: rollout_lib.rollout(env, policy, k, s, env.horizon, record=True))
  ep = jax.device_get(run(jax.random.fold_in(key, 1000), scenes))
  return {"frames": ep.frames, "success": ep.success.reshape(len(splits), per),
          "length": ep.length.reshape(len(splits), per), "return": ep.ret.reshape(len(splits), per)}


def main(argv):
  del argv
  c = _CONFIG.value
  tasks = _validate(c)

  import numpy as np
  from tqdm.auto import tqdm

  from rsr.envs import SPLITS
  from rsr.eval import evaluate as ev
  from rsr.utils import media

  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  media.write_text(os.path.join(workdir, "config.json"), c.to_json_best_effort(indent=2) + "\n")
  splits = list(SPLITS)
  zoom = max(1, 128 // c.image_size)
  results, firsts, written = [], {}, []
  t0 = time.time()
  bar = tqdm(tasks, desc="tour", unit="task", dynamic_ncols=True)
  for task in bar:
    bar.set_postfix_str(f"{task}: compile + {len(splits) * c.episodes_per_split} episodes")
    out = run_task(task, c, splits)
    frames = out["frames"]["rgb"]  # [T + 1, N, H, W, 3]
    if "rgb_wrist" in out["frames"]:
      frames = np.concatenate([frames, out["frames"]["rgb_wrist"]], axis=-2)
    per = c.episodes_per_split
    for i, split in enumerate(splits):
      results.append(ev.cell_result(task, split, out["success"][i], out["length"][i], out["return"][i]))
      firsts[(task, split)] = media.upscale(frames[0, i * per], zoom)
    # Video: `id` episodes on the left, `ood_all` on the right.
    cols = [(s, j) for s in ("id", "ood_all") for j in range(c.video_episodes)]
    idx = [splits.index(s) * per + j for s, j in cols]
    video = [media.grid([[media.label(media.upscale(frames[t, n], zoom), f"{s} #{j}") for (s, j), n in
                          zip(cols, idx, strict=True)]]) for t in range(frames.shape[0])]
    written.append(media.write_gif(os.path.join(workdir, "videos", f"{task}.gif"), np.stack(video)))

  sheet = media.grid([[media.label(firsts[(t, s)], f"{s} {t}") for t in tasks] for s in splits])
  written.append(media.write_png(os.path.join(workdir, "contact_sheet.png"), sheet))
  md = ev.table(results)
  written.append(media.write_text(
      os.path.join(workdir, "tables", "sim_success.md"),
      f"Expert success % [95% interval], {c.episodes_per_split} episodes per cell, preset {c.preset}\n\n{md}\n"))
  written.append(media.write_json(os.path.join(workdir, "tables", "sim_success.json"),
                                  [r.as_dict() for r in results]))
  print(f"\nScripted-expert success (%), {c.episodes_per_split} episodes per task and split "
        f"[Wilson 95% interval]:\n{md}\n")
  print(f"Finished in {time.time() - t0:.0f} s. Files in {workdir}:")
  for w in written + [os.path.join(workdir, "config.json")]:
    print(f"  {os.path.relpath(w, workdir)}")
  print("More episodes: python -m experiments.evaluate --policy=expert --task=all --split=all --episodes=200")


if __name__ == "__main__":
  run(main)
