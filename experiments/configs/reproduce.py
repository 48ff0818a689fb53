"""Reproduce presets: `--config=experiments/configs/reproduce.py:PRESET` with PRESET in tiny, cpu, paper.

The paper's comparison end to end (rsr/stages/reproduce.py): collect -> world model -> one behaviour-cloning
initialisation per seed -> PPO per method x task x seed, all with the same budget of updates -> evaluation
in the simulator on `id` and the OOD splits -> DIR/tables/.

tiny   tests: push_cube, one seed, every method; tiny stages (16x16 frames); minutes on 2 cores.
cpu    every task, 3 seeds, the cpu presets of every stage (64x64); hours on 2 cores, mostly the world
       model and PPO inside it (the quickstart runs a one-seed slice of it).
paper  the paper's scale: every task, 5 seeds, 128x128 front + wrist data, every OOD family evaluated with
       100 episodes per cell; an accelerator (docs/decisions.md gives the expected cost).
gpu, tpu_pod  paper, with the world-model and policy presets of that name (bf16, remat, FSDP, env counts
       sized for one GPU or a pod slice); the data is paper's.

The stages' own presets are sub-configs, overridable from the command line: --config.collect.*,
--config.world_model.*, --config.policy.* (e.g. --config.policy.ppo.updates=100). Per sub-run, reproduce
sets the fields that chain the stages: collect.tasks, world_model.data_dir, and the policy's data_dir,
world_model_dir, task, env, reward, seed and stages.
"""

import ml_collections

from experiments.configs import collect as collect_configs
from experiments.configs import policy as policy_configs
from experiments.configs import world_model as world_model_configs

PRESETS = ("tiny", "cpu", "paper", "gpu", "tpu_pod")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  stages_preset, preset = preset, world_model_configs.model_preset(preset)
  # A comma list (rsr/stages/reproduce.py METHODS): the paper's four; add roboscape_r_dyna for the Dyna loop
  # (the policy's dyna.* fields; its real episodes are stated in the table).
  c.methods = "bc,ppo_sim,ppo_wm_learned,roboscape_r"
  c.tasks = {"tiny": "push_cube", "cpu": "all", "paper": "all"}[preset]  # 'all' or a comma list
  c.seeds = {"tiny": "0", "cpu": "0,1,2", "paper": "0,1,2,3,4"}[preset]  # a comma list of integers
  # Existing finished runs to use instead of WORKDIR/data and WORKDIR/world_model (not modified):
  c.data_dir = ""  # a collect workdir
  c.world_model_dir = ""  # a train_world_model workdir (with the reward stage if ppo_wm_learned runs)
  # The persistent XLA compilation cache: every sub-run compiles the same simulator, world model and
  # network programs; "" = WORKDIR/.jax_cache, "none" = off, else a directory.
  c.compilation_cache_dir = ""

  c.collect = collect_configs.get_config(preset)
  if preset == "tiny":  # a held-out OOD split, as the tests' tiny dataset has
    c.collect.ood_splits = ("ood_color",)
    c.collect.ood_episodes = 2
  c.world_model = world_model_configs.get_config(stages_preset)
  c.policy = policy_configs.get_config(stages_preset)
  # PPO's own evaluation during training: a cheap learning curve (the table's evaluation is `eval` below);
  # tiny skips it ("" = none), which saves each run a compilation of the simulator rollout.
  c.policy.eval.splits = "" if preset == "tiny" else "id"
  c.policy.eval.episodes = {"tiny": 2, "cpu": 16, "paper": 64}[preset]
  c.policy.eval.videos = 0

  e = c.eval = ml_collections.ConfigDict()
  e.splits = {"tiny": "id,ood_color",
              "cpu": "id,ood_color,ood_table,ood_distractor,ood_light,ood_camera",
              "paper": "all"}[preset]  # id and the OOD splits of the table ('all': every split)
  e.episodes = {"tiny": 4, "cpu": 32, "paper": 100}[preset]  # per method x task x seed x split
  e.batch_size = {"tiny": 4, "cpu": 32, "paper": 100}[preset]  # episodes simulated in parallel
  e.videos = {"tiny": 1, "cpu": 2, "paper": 4}[preset]  # episodes per split as a GIF (first seed only)
  e.seed = 0  # evaluation scenes: seed e.seed + the run's seed (every method meets the same scenes)
  return c
