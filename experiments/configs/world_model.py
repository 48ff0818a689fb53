"""World-model presets: `--config=experiments/configs/world_model.py:PRESET` with PRESET in tiny, cpu, paper.

tiny   tests: a tokenizer of a few thousand parameters on 16x16 frames, tens of steps.
cpu    64x64 frames -> 16x16 tokens over FSQ levels (8, 5, 5, 5) = 1000 codes, the action-following recipe;
       the budgets of docs/decisions.md (tokenizer ~21 min, dynamics ~1 h on 2 cores); the quickstart cuts
       them (experiments/configs/quickstart.py).
paper  128x128 frames (front + wrist) -> 16x16 tokens per view, levels (8, 8, 8, 6, 5) = 15360 codes.
gpu    paper's model on one GPU: bf16 matmuls, remat, a batch that fits 80 GB.
tpu_pod  paper's model on a pod slice: bf16, remat, FSDP over a `model` axis of 8, a global batch of 512.

Stages run in order, each resumable: `tokenizer` (train it; WORKDIR/checkpoints/tokenizer), `tokenize`
(the derived dataset WORKDIR/tokens/tokens.npz), `dynamics` (WM_act; WORKDIR/checkpoints/dynamics),
`goal` (WM_goal, the same network conditioned on the task only; WORKDIR/checkpoints/goal), `reward` (the
learned reward head of the exogenous-reward baseline, on the dataset's handcrafted rewards;
WORKDIR/checkpoints/reward). The goal model trains with the dynamics settings (dynamics, dynamics_train).
"""

import ml_collections

from rsr import stages

PRESETS = ("tiny", "cpu", "paper", "gpu", "tpu_pod")
ACCELERATOR = ("gpu", "tpu_pod")  # the paper preset's model and data, scaled for accelerators


def model_preset(preset: str) -> str:
  """The preset whose model and data sizes `preset` uses: an accelerator preset runs the paper's."""
  return "paper" if preset in ACCELERATOR else preset


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  accel, preset = preset, model_preset(preset)
  c.data_dir = "runs/data"  # a collect workdir (experiments.collect) or a dataset directory
  c.seed = 0
  c.stages = ",".join(stages.WORLD_MODEL)

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.channels = {"tiny": (8, 16), "cpu": (32, 64), "paper": (64, 128, 256)}[preset]
  c.tokenizer.res_blocks = {"tiny": 1, "cpu": 1, "paper": 2}[preset]
  c.tokenizer.levels = {"tiny": (5, 5, 5), "cpu": (8, 5, 5, 5), "paper": (8, 8, 8, 6, 5)}[preset]
  # "pixel" (each position's channels on their own: a local change moves only nearby tokens) or "group"
  # (GroupNorm's whole-image statistics, the paper's MAGVIT-style tokenizer); docs/decisions.md.
  c.tokenizer.norm = "pixel"
  # Hysteresis when tokenizing video (rsr/world_model/fsq.py): a token keeps its code while its latent
  # stays within the code's cell widened by this many levels (0: plain rounding, the paper's).
  c.tokenizer.sticky_margin = 0.25

  t = c.tokenizer_train = ml_collections.ConfigDict()
  t.batch_size = {"tiny": 8, "cpu": 32, "paper": 128}[preset]  # frames per step (per camera view)
  t.steps = {"tiny": 12, "cpu": 4000, "paper": 100_000}[preset]
  t.lr = 2e-3 if preset != "paper" else 1e-3
  t.warmup = {"tiny": 2, "cpu": 100, "paper": 2000}[preset]
  t.weight_decay = 1e-4
  t.grad_clip = 1.0
  t.eval_every = {"tiny": 6, "cpu": 500, "paper": 5000}[preset]
  t.checkpoint_every = {"tiny": 4, "cpu": 500, "paper": 5000}[preset]
  t.eval_frames = {"tiny": 16, "cpu": 256, "paper": 1024}[preset]

  # Dynamics (WM_act); `paper` is the reference code's size (about 200M parameters).
  d = c.dynamics = ml_collections.ConfigDict()
  d.d_model = {"tiny": 32, "cpu": 96, "paper": 512}[preset]
  d.layers = {"tiny": 2, "cpu": 3, "paper": 32}[preset]
  d.heads = {"tiny": 4, "cpu": 4, "paper": 8}[preset]
  d.mlp_ratio = 4
  d.window = {"tiny": 4, "cpu": 6, "paper": 16}[preset]
  d.action_conditioning = "cross"  # the paper's per-dimension action tokens; "additive" is cheaper
  # cpu runs the recipe measured at its budget (docs/decisions.md, "The action-following recipe"): FiLM, the
  # digit head, uniform mask ratios and changed-token weight 5. paper keeps the paper's choices; tiny keeps
  # the ones its learning tests were calibrated on.
  recipe = preset == "cpu"
  d.action_film = recipe  # the action also modulates every block's norms (rsr/world_model/dynamics.py)
  d.output = "digits" if recipe else "codes"  # digits: one softmax per FSQ digit (rsr/world_model/token_head.py)
  # The previous frame's tokens as a direct input (a copy path; not in the paper, see dynamics.py).
  d.prev_frame_input = preset != "paper"

  dt = c.dynamics_train = ml_collections.ConfigDict()
  dt.batch_size = {"tiny": 4, "cpu": 8, "paper": 64}[preset]
  dt.steps = {"tiny": 8, "cpu": 3000, "paper": 180_000}[preset]
  dt.lr = {"tiny": 1e-3, "cpu": 1e-3, "paper": 1e-4}[preset]
  dt.warmup = {"tiny": 2, "cpu": 100, "paper": 2000}[preset]
  dt.weight_decay = 1e-4
  dt.grad_clip = 1.0
  dt.done_weight = 5.0  # the paper's weight of the done loss
  dt.done_label = "step"  # or "ramp"
  # Masking, context noise and action dropout (rsr/world_model/dynamics_train.py's docstring).
  dt.mask_schedule = "uniform" if recipe else "cosine"  # cosine: MaskGIT's; uniform: r ~ U(mask_min, 1), Genie's
  dt.mask_min = 0.5
  dt.context_noise = 0.0  # tried at cpu: no gain, a weaker guard (docs/decisions.md)
  dt.self_context = 0.0  # share of windows read through the model's own guess (dynamics_train.py)
  dt.action_dropout = 0.0
  dt.changed_weight = 5.0 if recipe else 1.0  # cross-entropy weight of tokens that change from the previous frame
  dt.done_input = "masked"  # what the done head trains on: masked | visible | predicted frames
  dt.ramp_steps = 10
  dt.eval_every = {"tiny": 4, "cpu": 500, "paper": 5000}[preset]
  dt.checkpoint_every = {"tiny": 3, "cpu": 250, "paper": 5000}[preset]
  dt.eval_windows = {"tiny": 8, "cpu": 64, "paper": 256}[preset]
  dt.eval_context = {"tiny": 2, "cpu": 2, "paper": 8}[preset]
  dt.eval_horizon = {"tiny": 4, "cpu": 8, "paper": 8}[preset]
  # The state probe's open loops (rsr/world_model/probe.py): imagined steps from eval_context real frames.
  dt.probe_horizon = {"tiny": 3, "cpu": 20, "paper": 20}[preset]
  dt.probe_steps = {"tiny": 50, "cpu": 3000, "paper": 3000}[preset]  # the probe's training steps
  dt.goal_episodes = {"tiny": 4, "cpu": 32, "paper": 128}[preset]  # WM_goal evaluation
  dt.goal_max_steps = {"tiny": 6, "cpu": 40, "paper": 80}[preset]

  r = c.reward_head = ml_collections.ConfigDict()  # rsr/rewards/learned.py
  r.d_model = {"tiny": 16, "cpu": 64, "paper": 128}[preset]
  r.hidden = {"tiny": 32, "cpu": 128, "paper": 256}[preset]
  r.batch_size = {"tiny": 16, "cpu": 64, "paper": 256}[preset]
  r.steps = {"tiny": 20, "cpu": 1000, "paper": 20_000}[preset]
  r.lr = 1e-3
  r.warmup = {"tiny": 2, "cpu": 50, "paper": 500}[preset]
  r.eval_every = {"tiny": 10, "cpu": 500, "paper": 5000}[preset]
  r.checkpoint_every = {"tiny": 10, "cpu": 500, "paper": 5000}[preset]
  r.weight_decay = 1e-4
  r.grad_clip = 1.0
  r.eval_windows = 512  # held-out windows of the R^2 report
  r.quality_episodes = 32  # held-out episodes of the reward-quality (Spearman) report

  d.dtype = "float32"  # or "bfloat16" (matmuls; softmax, logits, losses and done head stay f32)
  d.remat = False  # activation checkpointing of the transformer blocks

  # Devices (rsr/train/sharding.py): batches split over every device; `model` > 1 with fsdp splits
  # parameters and optimizer state over that axis.
  m = c.mesh = ml_collections.ConfigDict()
  m.model = 1
  m.fsdp = False

  if accel == "gpu":
    d.dtype, d.remat = "bfloat16", True
    dt.batch_size = 32
  elif accel == "tpu_pod":
    d.dtype, d.remat = "bfloat16", True
    m.model, m.fsdp = 8, True
    dt.batch_size = t.batch_size = 512
    r.batch_size = 1024

  g = c.generate = ml_collections.ConfigDict()
  g.steps = 2  # MaskGIT refinement steps per imagined frame (the paper: 2)
  g.temperature = 0.0  # 0: greedy (the paper does not say; greedy maximizes expected PSNR)
  g.order = "confidence"  # or "random"
  # Logit bonus of the previous frame's token at every position (rsr/world_model/generate.py; 0: off).
  g.copy_bias = 0.0
  # Classifier-free guidance on the action (rsr/world_model/generate.py; 1: off); for a model trained with
  # dynamics_train.action_dropout > 0. Off: at the cpu budget it only cost (docs/decisions.md).
  g.action_guidance = 1.0
  return c
