r"""Trains a policy: behaviour cloning, then PPO inside the world model (or the simulator). Resumable.

    python -m experiments.train_policy --config=experiments/configs/policy.py:cpu --workdir=runs/policy \
        --config.data_dir=runs/data --config.world_model_dir=runs/world_model \
        --config.task=push_cube --config.env=world_model --config.reward=endogenous

`--config.stages=bc,dyna` trains with the Dyna loop instead of one PPO run (rsr/stages/dyna.py).
`--config.env=sim --config.reward=handcrafted` is the PPO-in-simulator baseline; `--config.reward=learned`
uses the world model's reward head (its 'reward' stage). Re-running the same command continues where it
stopped. Writes: config.json, checkpoints/{bc,ppo}/ (orbax), metrics.jsonl + tb/ (returns, success in
imagination, KL, entropy, value loss, env steps/s, simulator success per split), videos/sim_SPLIT.gif,
tables/ppo.json. Multi-host: --coordinator_address, --num_processes, --process_id (jax.distributed).
"""

from __future__ import annotations

import json
import os

from absl import flags

from experiments.common import define_config_file, initialize_distributed, run

_CONFIG = define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "policy.py") + ":cpu",
    "Policy config file and preset (tiny, cpu, paper).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/policy", "Where checkpoints, metrics and videos go.")


def main(argv):
  del argv
  from absl import logging

  initialize_distributed()
  from data_pipelines import open_dataset
  from rsr import stages as stages_lib
  from rsr.stages import bc as stage_bc
  from rsr.stages import dyna as stage_dyna
  from rsr.stages import policy_config
  from rsr.stages import ppo as stage_ppo
  from rsr.train import sharding
  from rsr.utils import media

  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  c = _CONFIG.value
  stages = stages_lib.parse(c.stages, stages_lib.POLICY)
  ds = open_dataset(c.data_dir)
  policy_config.check(c, stages, ds)  # every stage's settings and the world model PPO loads, before BC compiles
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  if sharding.lead():
    media.write_text(os.path.join(workdir, "config.json"), c.to_json_best_effort(indent=2) + "\n")
  if "bc" in stages:
    print("bc: " + json.dumps(stage_bc.run(c, workdir, ds)))
  if "ppo" in stages:
    print("ppo: " + json.dumps(stage_ppo.run(c, workdir, ds)))
  if "dyna" in stages:
    print("dyna: " + json.dumps(stage_dyna.run(c, workdir, ds)))
  print(f"workdir: {workdir}")


if __name__ == "__main__":
  run(main)
