r"""Success rates in the real simulator, per task and split, with 95% confidence intervals.

    python -m experiments.evaluate --policy=expert --task=place_cube --split=ood_all --episodes=200 \
        --out=/tmp/eval.json

--task and --split take one name, a comma-separated list, or `all`. Writes JSON
{"success_rate", "ci95", "episodes", "episodes_per_cell", "results": [per task x split]} and prints a table.
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments.common import usage_errors

_POLICY = flags.DEFINE_string("policy", "expert", "Policy to evaluate: 'expert' (scripted, privileged).")
_TASK = flags.DEFINE_string("task", "all", "Task name, comma list, or 'all'.")
_SPLIT = flags.DEFINE_string("split", "id", "Scene split, comma list, or 'all'.")
_EPISODES = flags.DEFINE_integer("episodes", 200, "Episodes per task and split.")
_OUT = flags.DEFINE_string("out", None, "Where to write the JSON results (optional).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of scenes and episode randomness.")
_NOISE = flags.DEFINE_float("noise", 0.0, "Std of Gaussian noise added to the expert's actions.")
_BATCH = flags.DEFINE_integer("batch_size", 100, "Episodes simulated in parallel.")


def main(argv):
  del argv
  # Validate everything before anything compiles.
  from rsr.envs import SPLITS, TASK_NAMES
  from rsr.eval import evaluate as ev

  with usage_errors():
    ev.check_policy(_POLICY.value)
    tasks = ev.expand(_TASK.value, TASK_NAMES, "task")
    splits = ev.expand(_SPLIT.value, SPLITS, "split")
  if _EPISODES.value <= 0:
    raise app.UsageError(f"--episodes must be positive, got {_EPISODES.value}")
  if _BATCH.value <= 0:
    raise app.UsageError(f"--batch_size must be positive, got {_BATCH.value}")
  if _NOISE.value < 0:
    raise app.UsageError(f"--noise must be >= 0, got {_NOISE.value}")

  results = ev.evaluate(tasks, splits, _EPISODES.value, seed=_SEED.value, noise=_NOISE.value,
                        batch_size=_BATCH.value)
  summary = ev.summary(results)
  summary.update(policy=_POLICY.value, noise=_NOISE.value, seed=_SEED.value)
  print(ev.table(results))
  print(f"pooled success rate {summary['success_rate']:.3f} over {summary['episodes']} episodes")
  if _OUT.value:
    from rsr.utils import media
    media.write_json(_OUT.value, summary)
    print(f"wrote {os.path.abspath(_OUT.value)}")


if __name__ == "__main__":
  app.run(main)
