r"""Success rates in the real simulator, per task and split, with 95% confidence intervals.

    python -m experiments.evaluate --policy=expert --task=place_cube --split=ood_all --episodes=200 \
        --out=/tmp/eval.json
    python -m experiments.evaluate --policy=runs/policy --split=all --episodes=100 --out=runs/eval/eval.json

--policy is `expert` (the scripted expert) or a train_policy workdir: its latest stage is evaluated (PPO if
it has a checkpoint, else behaviour cloning), with the actor-critic's deterministic mean action. --task and
--split take one name, a comma-separated list, or `all`; a checkpoint's default task is the one PPO trained
on (every task for behaviour cloning). Writes JSON {"success_rate", "ci95", "episodes", "episodes_per_cell",
"policy", "stage", "step", "seed", "results": [per task x split: success_rate, ci95, mean_length, ...],
"videos": [...]} and GIFs of the first --videos episodes of every cell (beside --out, or in --video_dir),
and prints a table.

With --world_model, the policies (a comma list of train_policy workdirs) run instead from the same id starts
in that world model and in the simulator (imagined against real success: does the model rank them as the
world does? rsr/stages/gap.py):

    python -m experiments.evaluate --policy=runs/bc,runs/ppo --world_model=runs/world_model \
        --task=pick_cube --gap_starts=64 --gap_offset=10 --horizon=16 --out=runs/gap.json
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments.common import run

_POLICY = flags.DEFINE_string("policy", "expert", "'expert' (scripted, privileged) or a train_policy workdir.")
_TASK = flags.DEFINE_string("task", "", "Task name, comma list, or 'all' (default: all; a PPO checkpoint's own "
                            "task).")
_SPLIT = flags.DEFINE_string("split", "id", "Scene split, comma list, or 'all'.")
_EPISODES = flags.DEFINE_integer("episodes", 200, "Episodes per task and split.")
_OUT = flags.DEFINE_string("out", None, "Where to write the JSON results (optional).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of scenes and episode randomness.")
_NOISE = flags.DEFINE_float("noise", 0.0, "Std of Gaussian noise added to the expert's actions.")
_BATCH = flags.DEFINE_integer("batch_size", 100, "Episodes simulated in parallel.")
_VIDEOS = flags.DEFINE_integer("videos", None, "Episodes per task and split written as a GIF (default: 2 for a "
                               "checkpoint; 0 for the expert, whose evaluation otherwise renders no pixels).")
_WORLD_MODEL = flags.DEFINE_string("world_model", None, "A train_world_model workdir: report imagined against real "
                                   "success of the --policy list from the same starts instead.")
_GAP_STARTS = flags.DEFINE_integer("gap_starts", 64, "With --world_model: expert id episodes to start from.")
_GAP_OFFSET = flags.DEFINE_integer("gap_offset", 0, "With --world_model: expert steps before each start's context "
                                   "(0: first frames, where only false successes show).")
_HORIZON = flags.DEFINE_integer("horizon", 16, "With --world_model: steps from each start.")
_VIDEO_DIR = flags.DEFINE_string("video_dir", None, "Where the GIFs go (default: videos/ beside --out; without "
                                 "either, no videos).")


def main(argv):
  del argv
  from absl import logging

  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  # Validate everything before anything compiles.
  from rsr.envs import SPLITS, TASK_NAMES
  from rsr.eval import evaluate as ev
  from rsr.utils import checks

  if _EPISODES.value <= 0:
    raise app.UsageError(f"--episodes must be positive, got {_EPISODES.value}")
  if _BATCH.value <= 0:
    raise app.UsageError(f"--batch_size must be positive, got {_BATCH.value}")
  if _NOISE.value < 0:
    raise app.UsageError(f"--noise must be >= 0, got {_NOISE.value}")
  if _VIDEOS.value is not None and not 0 <= _VIDEOS.value <= _EPISODES.value:
    raise app.UsageError(f"--videos must be in [0, --episodes={_EPISODES.value}], got {_VIDEOS.value}")
  if _WORLD_MODEL.value:
    return _gap()
  splits = checks.expand(_SPLIT.value, SPLITS, "split")
  if _TASK.value:
    tasks = checks.expand(_TASK.value, TASK_NAMES, "task")
  if _POLICY.value == ev.EXPERT:
    spec, about = ev.expert_spec(_NOISE.value), {"policy": ev.EXPERT, "noise": _NOISE.value}
    default_tasks = list(TASK_NAMES)
  else:
    if _NOISE.value:
      raise ValueError("--noise applies to the expert only (a checkpoint is evaluated with its mean action)")
    from rsr.stages import trained as trained_lib
    trained = trained_lib.load(_POLICY.value)
    spec, about = ev.trained_spec(trained), trained.describe()
    default_tasks = [trained.task] if trained.task else list(TASK_NAMES)
    if not trained.finished:
      print(f"note: the {trained.stage} stage in {trained.workdir} is unfinished (step {trained.step}); "
            "evaluating its latest checkpoint")
  tasks = tasks if _TASK.value else default_tasks
  videos = _VIDEOS.value if _VIDEOS.value is not None else (0 if spec.name == ev.EXPERT else 2)
  video_dir = _VIDEO_DIR.value or (os.path.join(os.path.dirname(os.path.abspath(_OUT.value)), "videos")
                                   if _OUT.value else None)
  videos = videos if video_dir else 0

  from rsr.utils import media

  written = []

  def on_video(cell, frames):
    path = os.path.join(video_dir, f"{cell.task}_{cell.split}.gif")
    written.append(media.write_gif(path, ev.episode_video(frames, cell), fps=8))

  results = ev.evaluate(tasks, splits, _EPISODES.value, spec, seed=_SEED.value, batch_size=_BATCH.value,
                        videos=videos, on_video=on_video)
  summary = ev.summary(results)
  summary.update(about, seed=_SEED.value, videos=list(written))
  print(ev.table(results))
  print(f"pooled success rate {summary['success_rate']:.3f} over {summary['episodes']} episodes "
        f"({about['policy']}{', ' + about['stage'] + ' step ' + str(about['step']) if 'stage' in about else ''})")
  if _OUT.value:
    written.append(media.write_json(_OUT.value, summary))
  for w in written:
    print(f"wrote {os.path.abspath(w)}")


def _gap():
  from rsr.envs import TASK_NAMES
  from rsr.stages import gap
  from rsr.stages import trained as trained_lib
  from rsr.utils import media

  for flag in (_GAP_STARTS, _HORIZON):
    if flag.value <= 0:
      raise app.UsageError(f"--{flag.name} must be positive, got {flag.value}")
  if _GAP_OFFSET.value < 0:
    raise app.UsageError(f"--gap_offset must be >= 0, got {_GAP_OFFSET.value}")
  policies = [trained_lib.load(p) for p in _POLICY.value.split(",") if p]
  tasks = {p.task for p in policies if p.task}
  task = _TASK.value or (tasks.pop() if len(tasks) == 1 else "")
  if task not in TASK_NAMES:
    raise app.UsageError(f"--task: name one of {', '.join(TASK_NAMES)} (the policies do not agree on one)")
  result = gap.report(policies, _WORLD_MODEL.value, task, _GAP_STARTS.value, _GAP_OFFSET.value, _HORIZON.value,
                      seed=_SEED.value)
  print(gap.table(result))
  if _OUT.value:
    print(f"wrote {os.path.abspath(media.write_json(_OUT.value, result))}")


if __name__ == "__main__":
  run(main)
