"""Policy presets: `--config=experiments/configs/policy.py:PRESET` with PRESET in tiny, cpu, paper.

tiny   tests: 16x16 frames, a handful of environments and updates.
cpu    the quickstart: 64x64 frames, 256 imagined environments, minutes on 2 cores.
paper  the paper's scale (an accelerator).
gpu    paper on one GPU: 1024 imagined environments.
tpu_pod  paper on a pod slice: 8192 environments split over every device (the world model replicated).

Stages, each resumable: `bc` (behaviour cloning on the dataset's train split, every task: one
initialisation shared by every method and task), then `ppo` (critic warm-up, then PPO in `env`).
`env=world_model` trains inside the world model of `world_model_dir` (a train_world_model workdir, whose
config.json is read); `env=sim` trains in the simulator (the PPO-in-simulator baseline).
`reward`: endogenous (the world model's own: goal alignment + done bonus), learned (the world model's
reward head, trained on the dataset's handcrafted rewards), handcrafted (the simulator's; env=sim only).
"""

import ml_collections

from experiments.configs.world_model import model_preset

PRESETS = ("tiny", "cpu", "paper", "gpu", "tpu_pod")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  accel, preset = preset, model_preset(preset)
  c.task = "push_cube"
  c.env = "world_model"  # or "sim"
  c.reward = "endogenous"  # or "learned" (world model) / "handcrafted" (sim)
  c.data_dir = "runs/data"  # the dataset (BC demonstrations; world-model starts come from its tokens)
  c.world_model_dir = "runs/world_model"  # a train_world_model workdir
  c.seed = 0
  c.stages = "bc,ppo"

  a = c.agent = ml_collections.ConfigDict()
  a.channels = {"tiny": (8, 16), "cpu": (16, 32, 32), "paper": (32, 64, 64, 128)}[preset]
  a.hidden = {"tiny": 32, "cpu": 256, "paper": 512}[preset]
  a.use_goal = False  # the policy also sees the goal image (world model only)
  a.init_log_std = -0.5

  b = c.bc = ml_collections.ConfigDict()
  # cpu: BC success keeps rising with steps up to this length (docs/decisions.md, "BC length").
  b.steps = {"tiny": 20, "cpu": 24_000, "paper": 20_000}[preset]
  b.batch_size = {"tiny": 16, "cpu": 64, "paper": 256}[preset]
  b.lr = 1e-3 if preset != "paper" else 3e-4
  # "demos": the successful episodes without exploratory segments (what a demonstration is; the dataset
  # also holds failed and exploratory episodes for the world model); "all": every train episode.
  b.episodes = "demos"
  # Random-shift augmentation (pixels, DrQ-style): 4 at 64x64; 0 turns it off.
  b.shift = {"tiny": 1, "cpu": 4, "paper": 8}[preset]
  b.checkpoint_every = {"tiny": 10, "cpu": 2000, "paper": 5000}[preset]

  p = c.ppo = ml_collections.ConfigDict()
  p.updates = {"tiny": 4, "cpu": 60, "paper": 2000}[preset]  # the budget of policy updates
  p.critic_warmup = {"tiny": 1, "cpu": 10, "paper": 100}[preset]  # first updates train the critic only
  p.num_envs = {"tiny": 8, "cpu": 256, "paper": 2048}[preset]
  p.rollout_len = {"tiny": 4, "cpu": 16, "paper": 32}[preset]
  p.updates_per_call = {"tiny": 1, "cpu": 2, "paper": 10}[preset]
  p.epochs = {"tiny": 2, "cpu": 4, "paper": 4}[preset]
  p.minibatches = {"tiny": 2, "cpu": 8, "paper": 32}[preset]
  # The most samples per gradient pass (0: the whole minibatch); the cpu preset's minibatches of 512 run as
  # 4 x 128, the same update 2.3x faster on a CPU (rsr/agents/ppo.py PPOConfig.microbatch).
  p.microbatch = {"tiny": 0, "cpu": 128, "paper": 0}[preset]
  p.lr = 3e-4
  # 0: lr. The paper's PPO fine-tunes at actor 3e-5, critic 1e-3 (rsr/agents/ppo.py PPOConfig).
  p.actor_lr = {"tiny": 0.0, "cpu": 0.0, "paper": 3e-5}[preset]
  p.critic_lr = {"tiny": 0.0, "cpu": 0.0, "paper": 1e-3}[preset]
  p.gamma = 0.99
  p.lam = 0.95
  p.clip_eps = 0.2
  p.vf_coef = 0.5
  p.ent_coef = 0.0
  p.max_grad_norm = 0.5
  p.normalize_advantages = True  # per minibatch, as PureJaxRL and Brax do
  p.clip_value = True  # the clipped value loss (Andrychowicz et al. 2021 find it rarely helps)
  p.reward_scaling = True
  p.checkpoint_every = {"tiny": 2, "cpu": 10, "paper": 50}[preset]  # in compiled calls
  p.eval_every = {"tiny": 2, "cpu": 10, "paper": 50}[preset]  # in compiled calls

  w = c.wm_env = ml_collections.ConfigDict()
  w.horizon = {"tiny": 6, "cpu": 40, "paper": 80}[preset]
  w.done_threshold = 0.9
  w.split = "val"  # starts come from these held-out episodes (ID scenes)
  w.context = {"tiny": 1, "cpu": 2, "paper": 4}[preset]
  w.goal = "model"  # WM_goal's imagined goal; "real": the episode's real frame of first success
  w.max_starts = 512
  # "first": starts are episodes' first frames; "any": context windows anywhere before an episode's first
  # success, so imagined episodes also begin mid-task (rsr/imagination/env.py start_bank).
  w.starts = "first"
  # "decoded": imagined frames as the tokenizer decodes them (the paper's); "anchored": drawn against the
  # start's real last frame, so the static scene keeps its real pixels (rsr/imagination/env.py).
  w.render = "decoded"
  # "first": each environment restarts from the start it first drew (Brax's auto-reset; a world-model
  # reset observes C frames and decodes the goal, as costly as several steps); "fresh": a new bank draw.
  w.reset = "first"
  # The exploit guard (rsr/imagination/env.py; 0: off): an imagined episode whose summed surprise (nats)
  # passes it earns no done bonus from there and ends.
  w.max_surprise = 0.0
  # Environments imagined at once on one device (0: the whole batch; -1, auto: 8 on a CPU, where chunks of 8
  # keep each chunk's activations in cache, and the whole batch on an accelerator, where they ran 2.4x
  # slower; docs/benchmarks.md): speed only. Ignored on a mesh of several devices (the batch is split).
  w.chunk = {"tiny": 0, "cpu": -1, "paper": 0}[preset]

  r = c.rewards = ml_collections.ConfigDict()
  r.distance = "features"  # features (tokenizer encoder) | pixels | tokens | lpips
  r.lpips_weights = ""  # an npz on disk (rsr/rewards/distance.py says how to make one)
  # "level": the paper's 1 - d at every step; "change": d_{t-1} - d_t (potential-based, rsr/rewards/endogenous.py).
  r.align = "level"
  # True: a success also pays w_align for every step left to the horizon (finishing never earns less than
  # lingering short of done; level only; rsr/rewards/endogenous.py). Off: the paper.
  r.success_fill = False
  r.w_align = 1.0
  r.w_done = 10.0
  r.tau = 0.9

  if accel == "gpu":
    p.num_envs = 1024
  elif accel == "tpu_pod":
    p.num_envs, p.minibatches = 8192, 64

  e = c.eval = ml_collections.ConfigDict()
  e.splits = "id,ood_all"
  e.episodes = {"tiny": 4, "cpu": 32, "paper": 100}[preset]
  e.videos = 2  # episodes per split written as GIFs at the end
  # Imagined vs real success of the BC start and the PPO result from the same id scenes (world model only;
  # rsr/eval/exploitation.py): how many paired starts (0: skip).
  e.gap_starts = {"tiny": 4, "cpu": 64, "paper": 128}[preset]
  e.gap_offset = 0  # expert steps before each start's context (0: first frames, where only false successes show)
  # The dyna stage (rsr/stages/dyna.py; `--config.stages=bc,dyna`): rounds of PPO in the world model (ppo.updates
  # split over them), `episodes` real episodes of the policy each, and `wm_steps` fine-tuning the dynamics and
  # done head on the demonstrations plus those episodes (`repeat` times each) at `wm_lr`.
  d = c.dyna = ml_collections.ConfigDict()
  d.rounds = {"tiny": 2, "cpu": 3, "paper": 5}[preset]
  d.episodes = {"tiny": 2, "cpu": 64, "paper": 256}[preset]
  d.wm_steps = {"tiny": 2, "cpu": 300, "paper": 2000}[preset]
  d.wm_lr = {"tiny": 1e-3, "cpu": 1e-4, "paper": 5e-5}[preset]
  d.repeat = {"tiny": 2, "cpu": 4, "paper": 4}[preset]
  return c
