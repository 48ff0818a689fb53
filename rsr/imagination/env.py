"""WorldModelEnv: the trained world model as an environment, behind the simulator's Env protocol.

    env = WorldModelEnv(parts, params, bank, WMEnvConfig(...))
    state = env.reset(key, scene)       # scene: i32[] a bank entry, or -1: the start is drawn by key
    state = env.step(state, action)     # one imagined frame (cached context), its reward and done

A start is real: C context frames (tokens) of a held-out episode, the actions between them, its task, and
a goal frame (WM_goal's imagined goal, or the real frame where that episode first succeeded). The policy
acts on the last context frame; each step imagines the next frame with K-step MaskGIT against the temporal
cache (one frame of work per refinement), decodes it for the policy, and pays the reward of
`rsr/rewards` (endogenous by default: goal alignment + done bonus, both from the world model itself).
Done: the done head's probability passes `done_threshold` (success in imagination), or the horizon
(truncation).

Batched natively: `batch_reset` / `batch_step` run the network once on the whole batch (wrap with
`rsr.envs.wrappers.Vmap`, which calls them), and `reset` / `step` are a batch of one, so the Env protocol
holds. A vmapped batch-of-one network ran about 3x slower on CPU than the batched one (XLA lays the vmapped
attention's batch dimensions out badly), hence the native form. The world model's parameters are an argument of the
constructor and may be traced values, so a jitted training step can take them as an input instead of
baking hundreds of megabytes into the compiled program.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rsr.envs import core
from rsr.rewards import distance as dist_lib
from rsr.rewards.endogenous import RewardConfig, endogenous_reward, fill
from rsr.world_model import dynamics as dyn
from rsr.world_model import generate
from rsr.world_model.tokenizer import Tokenizer


@struct.dataclass
class StartBank:
  """Real starts (K of them) an imagined episode begins from."""

  context: jax.Array  # i32[K, C, N] tokens of C real frames
  actions: jax.Array  # f32[K, C, A] the action taken at each context frame (the last one is unused)
  task: jax.Array  # i32[K]
  goal: jax.Array  # i32[K, N] goal tokens
  anchor: jax.Array | None = None  # uint8[K, V, H, W, 3] the last context frame's real pixels

  @property
  def size(self) -> int:
    return int(self.task.shape[0])


@struct.dataclass
class WMParams:
  dynamics: Any
  tokenizer: Any
  reward_head: Any = None  # only for reward kind "learned"


@dataclasses.dataclass(frozen=True)
class WMParts:
  """The static modules (no parameters) a WorldModelEnv runs."""

  dynamics: dyn.Dynamics
  tokenizer: Tokenizer
  views: int = 1
  reward_head: Any = None  # rsr.rewards.learned.RewardHead for reward kind "learned"


@dataclasses.dataclass(frozen=True)
class WMEnvConfig:
  horizon: int = 40
  done_threshold: float = 0.9  # done (and success in imagination) when the done probability passes it
  reward: RewardConfig = RewardConfig()
  generate: generate.GenerateConfig = generate.GenerateConfig(temperature=0.0)
  # How imagined frames are drawn: "decoded" (the tokenizer's decoding of the imagined tokens, the paper's)
  # or "anchored" (the start's real last frame plus what the decoded frame changed against its decoding,
  # rsr/world_model/evaluate.py `anchored`: the tokenizer's error cancels wherever the scene is static).
  render: str = "decoded"
  # Environments stepped at once (0: the whole batch); a larger batch steps in equal chunks, one after
  # another. Speed only (every environment's frame depends on its own key, not on its batch): on XLA:CPU
  # a chunk's activations stay in cache (docs/benchmarks.md).
  chunk: int = 0
  # The exploit guard (0: off), in nats: the episode's surprise is the sum over its imagined frames of
  # -log(confidence) (generate.Imagined: the geometric mean of a frame's token probabilities). A step that
  # takes it past this is not paid the done bonus and ends the episode as truncated, so that a policy is not
  # paid for states the model is guessing at. Summed rather than per frame: imagination drifts from the real
  # episode step by step, and the sum ranks diverged steps where one frame's confidence does not
  # (docs/results.md, "The exploit guard's signal").
  max_surprise: float = 0.0

  def validate(self) -> "WMEnvConfig":
    if not (math.isfinite(self.max_surprise) and self.max_surprise >= 0.0):
      raise ValueError(f"max_surprise must be a number >= 0 (0: off), got {self.max_surprise}")
    if self.chunk < 0:
      raise ValueError(f"chunk must be >= 0 (0: the whole batch), got {self.chunk}")
    if self.horizon < 1:
      raise ValueError(f"horizon must be >= 1, got {self.horizon}")
    if self.render not in ("decoded", "anchored"):
      raise ValueError(f"render must be 'decoded' or 'anchored', got {self.render!r}")
    if not 0.0 < self.done_threshold < 1.0:
      raise ValueError(f"done_threshold must be in (0, 1), got {self.done_threshold}")
    if self.reward.kind == "handcrafted":
      raise ValueError("reward kind 'handcrafted' exists only in the simulator (env=sim); the world model "
                       "pays 'endogenous' or 'learned' rewards")
    self.reward.validate()
    self.generate.validate()
    return self


@struct.dataclass
class WMInner:
  cache: dyn.Cache
  tokens: jax.Array  # i32[N] the current frame
  goal_tokens: jax.Array  # i32[N]
  goal_feats: Any  # the goal frame's tokenizer features (reward distance "features")
  goal_rgb: jax.Array  # f32[V, H, W, 3] in [0, 1]
  offset: jax.Array  # f32[V, H, W, 3] added to every decoded frame: real anchor - its decoding, or zeros
  task: jax.Array  # i32[]
  key: jax.Array
  step: jax.Array  # i32[]
  distance: jax.Array  # f32[] the current frame's distance to the goal (reward align "change"; else zeros)
  surprise: jax.Array  # f32[] the episode's summed -log(frame confidence) so far (the exploit guard's)


class WorldModelEnv(core.Env):
  """See the module docstring."""

  def __init__(self, parts: WMParts, params: WMParams, bank: StartBank, config: WMEnvConfig = WMEnvConfig()):
    self.parts, self.params, self.bank, self.config = parts, params, bank, config.validate()
    mc = parts.dynamics.cfg
    if mc.conditioning != "action":
      raise ValueError("WorldModelEnv needs the action-conditioned dynamics (WM_act), not the goal model")
    self.horizon = config.horizon
    self._side = int(round(np.sqrt(mc.tokens_per_frame // parts.views)))
    if parts.views * self._side ** 2 != mc.tokens_per_frame:
      raise ValueError(f"tokens_per_frame {mc.tokens_per_frame} is not {parts.views} square views")
    self._hw = self._side * parts.tokenizer.config.downsample
    if config.render == "anchored" and bank.anchor is None:
      raise ValueError("render 'anchored' needs starts with their real frames (start_bank(..., ds=...))")
    if config.reward.kind == "learned" and (parts.reward_head is None or params.reward_head is None):
      raise ValueError("reward kind 'learned' needs a trained reward head (the world model's 'reward' stage)")
    self._lpips = (dist_lib.LPIPS.load(config.reward.lpips_weights)
                   if config.reward.kind == "endogenous" and config.reward.distance == "lpips" else None)

  # --- the protocol -----------------------------------------------------------------------------------

  def observation_spec(self):
    img = jax.ShapeDtypeStruct((self._hw, self._hw, 3), jnp.uint8)
    return {"rgb": img, "goal": img, "task": jax.ShapeDtypeStruct((), jnp.int32)}

  def action_spec(self):
    return core.ActionSpec(shape=(self.parts.dynamics.cfg.action_dim,))

  def reset(self, key: jax.Array, scene: Any = None) -> core.State:
    """The start is drawn from the bank with `key`, or, given `scene` >= 0 (i32[]), is bank entry `scene`
    (so that paired evaluations begin where they choose); -1 or None: drawn."""
    return _unbatch(self.batch_reset(key[None], None if scene is None else jnp.asarray(scene)[None]))

  def step(self, state: core.State, action: jax.Array) -> core.State:
    self.check_action(action)
    return _unbatch(self.batch_step(jax.tree_util.tree_map(lambda x: x[None], state), action[None]))

  def batch_reset(self, keys: jax.Array, scenes: Any = None) -> core.State:
    """keys u32[B, 2] -> a batch of B imagined episodes (the network runs once on the whole batch); their
    starts are random bank entries, or where `scenes` (i32[B]) is >= 0, those entries."""
    b = keys.shape[0]
    split = jax.vmap(jax.random.split)(keys)
    k_pick, k_next = split[:, 0], split[:, 1]
    i = jax.vmap(lambda k: jax.random.randint(k, (), 0, self.bank.size))(k_pick)
    if scenes is not None:
      i = jnp.where(jnp.asarray(scenes) >= 0, jnp.asarray(scenes, jnp.int32), i)
    context, actions = self.bank.context[i], self.bank.actions[i]  # [B, C, N], [B, C, A]
    task, goal = self.bank.task[i], self.bank.goal[i]
    cache = dyn.init_cache(self.parts.dynamics.cfg, b)
    for c in range(context.shape[1]):  # C is static and small
      prev = actions[:, c - 1] if c else jnp.zeros_like(actions[:, 0])
      cache, _, _ = self.parts.dynamics.apply(self.params.dynamics, cache, context[:, c], prev,
                                              jnp.full((b,), c > 0), task, method=dyn.Dynamics.observe)
    goal_rgb = self._decode(goal)
    zeros = jnp.zeros((b,))
    first = self._decode(context[:, -1])
    if self.config.render == "anchored":
      offset = self.bank.anchor[i].astype(jnp.float32) / 255.0 - first
    else:
      offset = jnp.zeros_like(first)
    inner = WMInner(cache=cache, tokens=context[:, -1], goal_tokens=goal, goal_feats=self._features(goal_rgb),
                    goal_rgb=goal_rgb, offset=offset, task=task, key=k_next, step=jnp.zeros((b,), jnp.int32),
                    distance=zeros, surprise=zeros)
    if self.config.reward.kind == "endogenous" and self.config.reward.align == "change":
      # The first step's change is measured from the start frame (a level would not need it: one more
      # distance per reset, paid only here).
      inner = inner.replace(distance=self._distance(jnp.clip(first + offset, 0.0, 1.0), context[:, -1], inner))
    obs = self._obs(first + offset, goal_rgb, task)
    info = {"success": jnp.zeros((b,), bool), "truncated": jnp.zeros((b,), bool), "step": inner.step,
            "done_prob": zeros, "distance": inner.distance, "confidence": jnp.ones((b,)), "surprise": zeros,
            "unsure": jnp.zeros((b,), bool)}
    return core.State(obs=obs, reward=zeros, done=jnp.zeros((b,), bool), info=info, inner=inner)

  def batch_step(self, states: core.State, actions: jax.Array) -> core.State:
    """states with leading axis B, actions f32[B, A] -> the next imagined frame of every environment.

    With `chunk` < B, the batch steps in a loop over equal chunks: of `chunk` environments, or of the
    largest size below it that divides B (a batch sized otherwise, such as a few episodes for a video)."""
    self.check_action(actions, batch_dims=1)
    b, c = actions.shape[0], self.config.chunk
    if not c or c >= b:
      return self._step_all(states, actions)
    c = max(d for d in range(1, c + 1) if b % d == 0)
    split = lambda x: x.reshape((b // c, c) + x.shape[1:])  # noqa: E731
    out = jax.lax.map(lambda xs: self._step_all(*xs), jax.tree_util.tree_map(split, (states, actions)))
    return jax.tree_util.tree_map(lambda x: x.reshape((b,) + x.shape[2:]), out)

  def _step_all(self, states: core.State, actions: jax.Array) -> core.State:
    """batch_step in one piece."""
    inn: WMInner = states.inner
    split = jax.vmap(jax.random.split)(inn.key)
    key, k_gen = split[:, 0], split[:, 1]
    actions = jnp.clip(actions, -1.0, 1.0)
    cache, tokens, done_logit, confidence = generate.imagine(
        self.parts.dynamics, self.params.dynamics, inn.cache, actions, inn.task, k_gen, self.config.generate)
    surprise = inn.surprise - jnp.log(jnp.maximum(confidence, 1e-30))
    unsure = (surprise > self.config.max_surprise) if self.config.max_surprise else jnp.zeros_like(confidence, bool)
    # A guarded step's done probability is 0: no success, no bonus (the alignment term is still paid).
    done_prob = jnp.where(unsure, 0.0, jax.nn.sigmoid(done_logit))
    rgb = jnp.clip(self._decode(tokens) + inn.offset, 0.0, 1.0)
    success = done_prob >= self.config.done_threshold
    step = inn.step + 1
    truncated = ((step >= self.config.horizon) | unsure) & ~success
    reward, d = self._reward(rgb, tokens, done_prob, inn)
    if self.config.reward.kind == "endogenous":
      reward = reward + fill(success, self.config.horizon - step, self.config.reward)
    inner = inn.replace(cache=cache, tokens=tokens, key=key, step=step, distance=d, surprise=surprise)
    info = dict(states.info, success=success, truncated=truncated, step=step, done_prob=done_prob, distance=d,
                confidence=confidence, surprise=surprise, unsure=unsure)
    return states.replace(obs=self._obs(rgb, inn.goal_rgb, inn.task), reward=reward,
                          done=success | truncated, info=info, inner=inner)

  # --- pieces (all on a batch: leading axis B) -------------------------------------------------------

  def _decode(self, tokens: jax.Array) -> jax.Array:
    """i32[B, N] -> f32[B, V, H, W, 3] in [0, 1]."""
    b, v = tokens.shape[0], self.parts.views
    codes = tokens.reshape(b * v, self._side, self._side)
    rgb = self.parts.tokenizer.apply(self.params.tokenizer, codes, method=Tokenizer.decode)
    return rgb.reshape((b, v) + rgb.shape[1:])

  def _features(self, rgb: jax.Array):
    if self.config.reward.kind == "endogenous" and self.config.reward.distance == "features":
      return self.parts.tokenizer.apply(self.params.tokenizer, rgb, method=Tokenizer.features)
    return ()

  @staticmethod
  def _obs(rgb: jax.Array, goal_rgb: jax.Array, task: jax.Array) -> dict:
    to8 = lambda x: jnp.round(jnp.clip(x[:, 0], 0.0, 1.0) * 255.0).astype(jnp.uint8)  # noqa: E731 (front view)
    return {"rgb": to8(rgb), "goal": to8(goal_rgb), "task": task}

  def _reward(self, rgb, tokens, done_prob, inn: WMInner) -> tuple[jax.Array, jax.Array]:
    """(reward f32[B], distance to the goal f32[B] in [0, 1]) for the imagined frames."""
    rc = self.config.reward
    if rc.kind == "learned":
      return self.parts.reward_head.apply(self.params.reward_head, tokens, inn.task), jnp.zeros_like(done_prob)
    d = self._distance(rgb, tokens, inn)
    return endogenous_reward(d, done_prob, rc, inn.distance), d

  def _distance(self, rgb, tokens, inn: WMInner) -> jax.Array:
    """f32[B] in [0, 1]: the frames' distance to their goals, by the endogenous reward's measure."""
    rc = self.config.reward
    if rc.distance == "features":
      return dist_lib.feature_distance(self._features(rgb), inn.goal_feats).mean(axis=-1)  # views
    if rc.distance == "pixels":
      return dist_lib.pixel_distance(rgb, inn.goal_rgb).mean(axis=-1)
    if rc.distance == "tokens":
      return dist_lib.token_distance(self.parts.tokenizer.config.levels, tokens, inn.goal_tokens)
    return self._lpips(rgb, inn.goal_rgb).mean(axis=-1)


def _unbatch(state: core.State) -> core.State:
  return jax.tree_util.tree_map(lambda x: x[0], state)


def start_bank(tok_ds, split: str, context: int, task_id: int | None = None, goal: str = "model",
               goal_fn=None, max_starts: int | None = None, starts: str = "first", ds=None,
               seed: int = 0) -> StartBank:
  """Starts from the episodes of `split` in a tokenized dataset (data_pipelines.tokenized).

  goal "model": goal_fn(first tokens i32[K, N], task i32[K]) -> goal tokens i32[K, N] (WM_goal's rollout
  from the start's first frame); goal "real": the frame where the episode first succeeded (only
  successful episodes become starts).
  starts "first": each episode's first `context` frames; "any": context windows anywhere before the
  episode's first success (or its end), drawn round-robin over the episodes with `seed` until
  `max_starts`, so that imagined episodes begin mid-task as well as at the start.
  ds: the pixel dataset the tokens came from; given, each start carries its last context frame's real
  pixels (`anchor`), against which the environment can render imagined frames (WMEnvConfig.render).
  task_id: only that task's episodes. Episodes shorter than `context` frames are skipped.
  """
  if goal not in ("model", "real"):
    raise ValueError(f"goal must be 'model' or 'real', got {goal!r}")
  if goal == "model" and goal_fn is None:
    raise ValueError("goal 'model' needs goal_fn (WM_goal's rollout)")
  if starts not in ("first", "any"):
    raise ValueError(f"starts must be 'first' or 'any', got {starts!r}")
  rng = np.random.default_rng(seed)
  episodes = []  # (episode index, its tokens, last start offset)
  for i in range(tok_ds.num_episodes(split)):
    e = tok_ds.read(split, i)
    if task_id is not None and int(e["task"][0]) != task_id:
      continue
    if len(e["tokens"]) < context or (goal == "real" and not e["success"].any()):
      continue
    end = int(np.argmax(e["success"])) if e["success"].any() else len(e["tokens"])
    last = max(0, min(end, len(e["tokens"])) - context) if starts == "any" else 0
    episodes.append((i, e, last))
  if not episodes:
    which = f"task {task_id} " if task_id is not None else ""
    raise ValueError(f"no {which}episodes in split {split!r} of {tok_ds.path} can start an imagined episode "
                     f"(need >= {context} frames{', and a success' if goal == 'real' else ''})")
  limit = max_starts or len(episodes)
  if starts == "first":
    picks = [(i, e, 0) for i, e, _ in episodes[:limit]]
  else:
    offsets = [rng.permutation(last + 1) for _, _, last in episodes]
    picks = []
    for r in range(max(len(o) for o in offsets)):
      picks += [(i, e, int(o[r])) for (i, e, _), o in zip(episodes, offsets) if r < len(o)]
    picks = picks[:limit]
  ctx = np.stack([e["tokens"][t:t + context] for _, e, t in picks])
  act = np.stack([e["action"][t:t + context] for _, e, t in picks])
  task = np.asarray([int(e["task"][0]) for _, e, _ in picks])
  context_tokens = jnp.asarray(ctx, jnp.int32)
  tasks = jnp.asarray(task, jnp.int32)
  if goal == "real":
    goals = jnp.asarray(np.stack([e["tokens"][int(np.argmax(e["success"]))] for _, e, _ in picks]), jnp.int32)
  else:
    goals = jnp.asarray(goal_fn(context_tokens[:, 0], tasks), jnp.int32)
  anchor = None
  if ds is not None:
    frames = {}
    for i, _, t in picks:
      if i not in frames:
        e = ds.read(split, i)
        frames[i] = np.stack([e[k] for k in ds.frame_keys], axis=1)  # [L, V, H, W, 3]
    anchor = jnp.asarray(np.stack([frames[i][t + context - 1] for i, _, t in picks]))
  return StartBank(context=context_tokens, actions=jnp.asarray(act, jnp.float32), task=tasks, goal=goals,
                   anchor=anchor)
