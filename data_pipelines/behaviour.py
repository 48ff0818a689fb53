"""The behaviour policy that generates the data: the scripted expert, noisy or perturbed, per episode.

A world model must see more than perfect demonstrations: it learns what actions do from noisy and
off-script behaviour, and what failure looks like from failed episodes. One compiled policy serves a
batch that mixes behaviours, because each episode's behaviour is data (`BehaviourArgs`), not structure:
  * noise: std of Gaussian noise added to every expert action;
  * explore: the expert is interrupted by segments of uniformly random actions; a segment starts with
    probability `segment_prob` at each step outside a segment and lasts `segment_len` steps (inclusive
    range), after which the expert takes over again from wherever the random actions left things.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from rsr.envs import core
from rsr.envs.tabletop.env import TabletopEnv
from rsr.envs.tabletop.tasks import base
from rsr.envs.rollout import Policy


@struct.dataclass
class BehaviourArgs:
  noise: jax.Array  # f32[] action noise std
  explore: jax.Array  # bool[] random-action segments on/off


@struct.dataclass
class BehaviourCarry:
  expert: base.ExpertCarry
  args: BehaviourArgs
  action: jax.Array  # f32[A] the current random segment's action
  left: jax.Array  # i32[] steps left in the current random segment (0: the expert acts)


def behaviour_policy(env: TabletopEnv, segment_prob: float = 0.15,
                     segment_len: tuple[int, int] = (2, 8)) -> Policy:
  """A Policy whose `init(BehaviourArgs)` picks the episode's behaviour; see the module docstring."""
  lo, hi = int(segment_len[0]), int(segment_len[1])
  if not 0.0 <= segment_prob <= 1.0:
    raise ValueError(f"segment_prob must be in [0, 1], got {segment_prob}")
  if not 1 <= lo <= hi:
    raise ValueError(f"segment_len must be (min, max) with 1 <= min <= max, got {segment_len}")
  action_dim = env.action_spec().shape[0]

  def init(args: BehaviourArgs) -> BehaviourCarry:
    return BehaviourCarry(expert=env.task.expert_init(), args=args,
                          action=jnp.zeros((action_dim,), jnp.float32), left=jnp.zeros((), jnp.int32))

  def act(carry: BehaviourCarry, state: core.State, key: jax.Array):
    k_noise, k_start, k_len, k_act = jax.random.split(key, 4)
    # The expert always runs so that its phase machine follows the scene through random segments.
    expert, action = env.task.expert_act(carry.expert, env.view(state.inner))
    action = action + carry.args.noise * jax.random.normal(k_noise, action.shape)
    start = carry.args.explore & (carry.left <= 0) & (jax.random.uniform(k_start) < segment_prob)
    seg_action = jnp.where(start, jax.random.uniform(k_act, action.shape, minval=-1.0, maxval=1.0),
                           carry.action)
    left = jnp.where(start, jax.random.randint(k_len, (), lo, hi + 1), carry.left - 1)
    random_now = carry.args.explore & (left > 0)
    action = jnp.where(random_now, seg_action, action)
    carry = carry.replace(expert=expert, action=seg_action, left=jnp.maximum(left, 0))
    return carry, jnp.clip(action, -1.0, 1.0)

  return Policy(init=init, act=act)
