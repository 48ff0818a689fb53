"""Quickstart presets: `--config=experiments/configs/quickstart.py:PRESET` with PRESET in tiny, cpu, paper.

The quickstart is the reproduce chain (experiments/configs/reproduce.py: collect -> world model -> BC ->
bc / ppo_sim / ppo_wm_learned / roboscape_r -> evaluation in the simulator -> tables) on one task and one
seed, with budgets sized for the machine:

tiny   tests: reproduce's tiny preset (16x16, a few steps per stage).
cpu    README command 1: pick_cube, seed 0, the cpu stages' models at 64x64 with every training budget cut
       so that the whole chain fits in about 30 minutes and 8 GB on a 2-core CPU (docs/results.md has the
       measured run). The numbers it prints are a smoke test of the method, not the paper's table: that is
       `experiments.reproduce` at its cpu preset (3 seeds, every task, full budgets).
paper  reproduce's paper preset with one task and one seed (an accelerator).

Every field is reproduce's and can be overridden the same way, e.g. --config.tasks=pick_cube or
--config.policy.ppo.updates=20.
"""

import ml_collections

from experiments.configs import reproduce as reproduce_configs

PRESETS = ("tiny", "cpu", "paper")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
  c = reproduce_configs.get_config(preset)
  c.tasks, c.seeds = "push_cube", "0"
  if preset != "cpu":
    return c

  # pick_cube: of the four tasks, the one behaviour cloning learns soonest from few demonstrations
  # (docs/decisions.md, BC length; push_cube stayed at 0% at this budget, so every cell of the table was 0).
  c.tasks = "pick_cube"
  # Data: one task, 160 + 16 ID episodes (reproduce cpu: 224 + 16 per task) and 16 ood_all episodes for the
  # world model's OOD report.
  d = c.collect
  d.train_episodes, d.val_episodes, d.ood_episodes = 160, 16, 16

  # World model: the cpu preset's networks, shorter training. No WM_goal: roboscape_r's goal image is the
  # real frame of first success of its start episode (wm_env.goal = "real", the paper's alternative).
  w = c.world_model
  w.stages = "tokenizer,tokenize,dynamics,reward"
  w.tokenizer_train.steps, w.tokenizer_train.eval_every, w.tokenizer_train.checkpoint_every = 500, 250, 250
  w.tokenizer_train.eval_frames = 128
  w.dynamics_train.steps, w.dynamics_train.eval_every, w.dynamics_train.checkpoint_every = 240, 120, 120
  w.dynamics_train.eval_windows = 32
  w.dynamics_train.probe_steps = 1000  # the state probe: a third of the cpu preset's training, for time
  w.reward_head.steps, w.reward_head.eval_every, w.reward_head.checkpoint_every = 300, 300, 300

  # Policies: the same BC initialisation, then 10 PPO updates of 32 environments x 16 steps per method
  # (~5k transitions; reproduce cpu: 60 x 256 x 16). The table's evaluation replaces PPO's own.
  p = c.policy
  p.wm_env.goal = "real"
  p.bc.steps, p.bc.checkpoint_every = 6000, 1000  # 1500 left pick_cube BC near 0% (6000: ~13% id)
  p.ppo.updates, p.ppo.critic_warmup, p.ppo.num_envs, p.ppo.updates_per_call = 10, 2, 32, 2
  p.ppo.minibatches = 4
  p.ppo.checkpoint_every, p.ppo.eval_every = 1, 5
  p.eval.splits = ""

  # Evaluation: id and the pooled OOD split, 32 episodes per cell.
  c.eval.splits, c.eval.episodes, c.eval.batch_size, c.eval.videos = "id,ood_all", 32, 32, 2
  return c
