r"""Trains the world model in stages, each resumable: re-running the same command continues where it stopped.

    python -m experiments.train_world_model --config=experiments/configs/world_model.py:cpu \
        --config.data_dir=runs/data --workdir=runs/world_model

Stages (config.stages, in order): tokenizer, tokenize (the derived token dataset), dynamics (WM_act),
goal (WM_goal), reward (the learned reward head of the exogenous-reward baseline). Writes into the workdir: config.json, checkpoints/STAGE/
(orbax), metrics.jsonl, images/, tables/. A checkpoint from an incompatible config is refused, naming the
mismatched fields; a dataset that does not match is refused, naming the file or field.
"""

from __future__ import annotations

import json
import os

from absl import flags

from experiments.common import define_config_file, initialize_distributed, run

_CONFIG = define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "world_model.py") + ":cpu",
    "World-model config file and preset (tiny, cpu, paper).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/world_model", "Where checkpoints, metrics and images go.")


def main(argv):
  del argv
  initialize_distributed()
  from absl import logging

  from data_pipelines import open_dataset
  from rsr import stages as stages_lib
  from rsr.stages import reward as stage_reward
  from rsr.stages import tokenizer as stage_tokenizer
  from rsr.stages import world_model as wm_stages
  from rsr.train import sharding
  from rsr.utils import media
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  c = _CONFIG.value
  stages = stages_lib.parse(c.stages, stages_lib.WORLD_MODEL)
  ds = open_dataset(c.data_dir)
  wm_stages.check(c, stages, ds.spec)  # every stage's settings, before the first one compiles anything
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  if sharding.lead():
    media.write_text(os.path.join(workdir, "config.json"), c.to_json_best_effort(indent=2) + "\n")

  if "tokenizer" in stages:
    print("tokenizer: " + json.dumps(stage_tokenizer.run(c, workdir, ds)))
  tok_ds = None
  if {"tokenize", "dynamics", "goal", "reward"} & set(stages):
    tok_ds = wm_stages.tokenize_stage(c, workdir, ds)
    print(f"tokens: {tok_ds.path} ({tok_ds.tokens_per_frame} tokens per frame)")
  for stage in ("dynamics", "goal"):
    if stage in stages:
      print(f"{stage}: " + json.dumps(wm_stages.dynamics_stage(c, workdir, ds, tok_ds, stage=stage)))
  if "reward" in stages:
    align, imagine = stage_reward.for_world_model(c, workdir, ds, tok_ds)
    print("reward: " + json.dumps(stage_reward.run(c, workdir, tok_ds, align=align, imagine=imagine)))
  print(f"workdir: {workdir}")


if __name__ == "__main__":
  run(main)
