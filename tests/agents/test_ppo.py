"""PPO's pieces against hand-computed cases and independent oracles (rlax, NumPy loops)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsr.agents import ppo
from rsr.agents.networks import ActorCritic, AgentConfig, init_params


# --- Gaussian policy ---------------------------------------------------------------------------------------


def test_gaussian_log_prob_and_entropy():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  mean = jax.random.normal(k1, (4, 3))
  log_std = 0.5 * jax.random.normal(k2, (4, 3))
  x = jax.random.normal(k3, (4, 3))
  want = jax.scipy.stats.norm.logpdf(x, mean, jnp.exp(log_std)).sum(-1)
  np.testing.assert_allclose(ppo.gaussian_log_prob(mean, log_std, x), want, rtol=1e-5, atol=1e-5)
  # Closed form: each dimension has entropy 0.5 * log(2 pi e sigma^2).
  want_h = np.sum(0.5 * np.log(2 * np.pi * np.e * np.exp(2 * np.asarray(log_std))), axis=-1)
  np.testing.assert_allclose(ppo.gaussian_entropy(log_std), want_h, rtol=1e-5)


def test_sample_action_log_prob_is_of_the_raw_sample():
  mean = jnp.zeros((1000, 2))
  log_std = jnp.full((1000, 2), math.log(2.0))
  raw, logp = ppo.sample_action(jax.random.PRNGKey(0), mean, log_std)
  np.testing.assert_allclose(logp, ppo.gaussian_log_prob(mean, log_std, raw), rtol=1e-6)
  # Unclipped: with std 2 many raw actions lie outside [-1, 1]; the env clips, the sample does not.
  assert float(jnp.abs(raw).max()) > 1.0
  assert float(jnp.std(raw)) == pytest.approx(2.0, rel=0.1)


# --- GAE ---------------------------------------------------------------------------------------------------


def test_gae_hand_case():
  # gamma 0.9, lam 0.8, so gamma * lam = 0.72.
  # env 0 (done at t=1): t=2: delta = 3 + 0.9 * 2.0 - 1.5 = 3.3, A = 3.3
  #                      t=1: delta = 2 - 1.0 = 1.0 (no bootstrap), A = 1.0 (no carry)
  #                      t=0: delta = 1 + 0.9 * 1.0 - 0.5 = 1.4, A = 1.4 + 0.72 * 1.0 = 2.12
  # env 1 (no done, values 0): deltas = rewards = [0, 0, 1] -> A = [0.72^2, 0.72, 1]
  rewards = jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
  values = jnp.array([[0.5, 0.0], [1.0, 0.0], [1.5, 0.0]])
  dones = jnp.array([[False, False], [True, False], [False, False]])
  last_value = jnp.array([2.0, 0.0])
  adv, ret = ppo.gae(rewards, values, dones, last_value, 0.9, 0.8)
  np.testing.assert_allclose(adv, [[2.12, 0.5184], [1.0, 0.72], [3.3, 1.0]], rtol=1e-6)
  np.testing.assert_allclose(ret, [[2.62, 0.5184], [2.0, 0.72], [4.8, 1.0]], rtol=1e-6)


def _random_rollout(seed, t=9, b=4):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(t, b)).astype(np.float32), rng.normal(size=(t, b)).astype(np.float32),
          rng.random((t, b)) < 0.25, rng.normal(size=(b,)).astype(np.float32))


def _gae_numpy(rewards, values, dones, last_value, gamma, lam):
  t_len, b_len = rewards.shape
  adv = np.zeros((t_len, b_len))
  for b in range(b_len):
    carry = 0.0
    for t in reversed(range(t_len)):
      v_next = last_value[b] if t == t_len - 1 else values[t + 1, b]
      nd = 0.0 if dones[t, b] else 1.0
      carry = rewards[t, b] + gamma * v_next * nd - values[t, b] + gamma * lam * nd * carry
      adv[t, b] = carry
  return adv


@pytest.mark.parametrize("seed", [0, 1])
def test_gae_matches_numpy_loop(seed):
  rewards, values, dones, last_value = _random_rollout(seed)
  adv, ret = ppo.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones), jnp.asarray(last_value),
                     0.97, 0.9)
  want = _gae_numpy(rewards, values, dones, last_value, 0.97, 0.9)
  np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, want + values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_rlax(seed):
  import rlax  # a test dependency (requirements-dev.txt): missing, the oracle fails instead of skipping

  rewards, values, dones, last_value = _random_rollout(seed, t=11, b=5)
  gamma, lam = 0.99, 0.95
  adv, _ = ppo.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones), jnp.asarray(last_value),
                   gamma, lam)
  # rlax is unbatched over time: values of length T + 1 (the bootstrap last), discount_t = gamma * (1 - done_t).
  discount = gamma * (1.0 - dones.astype(np.float32))
  values_tp1 = np.concatenate([values, last_value[None]], axis=0)
  want = jax.vmap(rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1)(
      jnp.asarray(rewards), jnp.asarray(discount), lam, jnp.asarray(values_tp1))
  np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-5)


# --- The loss ----------------------------------------------------------------------------------------------


def _fixed_apply(params, obs):
  """An 'network' whose outputs are its parameters: the loss's arithmetic can be checked by hand."""
  del obs
  return params["mean"], params["log_std"], params["value"]


def test_ppo_loss_hand_case():
  cfg = ppo.PPOConfig(clip_eps=0.2, vf_coef=0.5, ent_coef=0.01, normalize_advantages=False, clip_value=True)
  params = {"mean": jnp.array([[0.3], [-0.2], [0.7]]), "log_std": jnp.zeros((3, 1)),
            "value": jnp.array([1.0, 0.1, -0.5])}
  action = jnp.array([[0.1], [0.4], [-0.3]])
  new_logp = ppo.gaussian_log_prob(params["mean"], params["log_std"], action)
  ratio = jnp.array([1.5, 0.5, 1.1])
  batch = ppo.Batch(obs={}, action=action, log_prob=new_logp - jnp.log(ratio), value=jnp.zeros(3),
                    advantage=jnp.array([1.0, -1.0, 2.0]), returns=jnp.array([2.0, 0.0, -1.0]))
  loss, m = ppo.ppo_loss(_fixed_apply, params, batch, cfg)
  # Surrogate min(r A, clip(r, 0.8, 1.2) A): [min(1.5, 1.2), min(-0.5, -0.8), min(2.2, 2.2)] = [1.2, -0.8, 2.2]
  policy_loss = -(1.2 - 0.8 + 2.2) / 3
  # Values move from old 0 toward returns; clipped to +-0.2: [0.2, 0.1, -0.2].
  # max(unclipped, clipped) squared errors: [max(1, 3.24), max(0.01, 0.01), max(0.25, 0.64)]
  value_loss = 0.5 * (3.24 + 0.01 + 0.64) / 3
  entropy = 0.5 * (1 + math.log(2 * math.pi))
  assert float(m["policy_loss"]) == pytest.approx(policy_loss, rel=1e-5)
  assert float(m["value_loss"]) == pytest.approx(value_loss, rel=1e-5)
  assert float(m["entropy"]) == pytest.approx(entropy, rel=1e-5)
  assert float(loss) == pytest.approx(policy_loss + 0.5 * value_loss - 0.01 * entropy, rel=1e-5)
  assert float(m["loss"]) == float(loss)
  # Ratios 1.5 and 0.5 are outside [0.8, 1.2], 1.1 is inside.
  assert float(m["clip_frac"]) == pytest.approx(2 / 3)
  kl = np.mean([0.5 - math.log(1.5), -0.5 - math.log(0.5), 0.1 - math.log(1.1)])
  assert float(m["approx_kl"]) == pytest.approx(kl, rel=1e-4)
  for v in m.values():
    assert v.shape == () and v.dtype == jnp.float32

  # Without value clipping the value loss is the plain 0.5 * MSE: 0.5 * (1 + 0.01 + 0.25) / 3.
  _, m = ppo.ppo_loss(_fixed_apply, params, batch, ppo.PPOConfig(normalize_advantages=False, clip_value=False))
  assert float(m["value_loss"]) == pytest.approx(0.5 * 1.26 / 3, rel=1e-5)
  # Normalised advantages are centred: with equal ratios of 1 the surrogate is their mean, 0.
  same = batch.replace(log_prob=new_logp)
  _, m = ppo.ppo_loss(_fixed_apply, params, same, ppo.PPOConfig(normalize_advantages=True))
  assert float(m["policy_loss"]) == pytest.approx(0.0, abs=1e-6)


CFG = AgentConfig(channels=(4, 8), hidden=32, num_tasks=3, action_dim=2)
NET = ActorCritic(CFG)


@pytest.fixture(scope="module")
def rollout():
  """Initial parameters and a batch of 32 as a collector would produce it (actions from that policy)."""
  params = init_params(CFG, jax.random.PRNGKey(0), (16, 16))
  n = 32
  k_rgb, k_task, k_act, k_adv, k_ret = jax.random.split(jax.random.PRNGKey(1), 5)
  obs = {"rgb": jax.random.randint(k_rgb, (n, 16, 16, 3), 0, 256).astype(jnp.uint8),
         "task": jax.random.randint(k_task, (n,), 0, CFG.num_tasks)}
  mean, log_std, value = jax.jit(NET.apply)(params, obs)
  action, log_prob = ppo.sample_action(k_act, mean, log_std)
  return params, ppo.Batch(obs=obs, action=action, log_prob=log_prob, value=value,
                           advantage=jax.random.normal(k_adv, (n,)), returns=jax.random.normal(k_ret, (n,)))


def test_critic_only_leaves_the_policy_alone_and_kl_is_zero_on_policy(rollout):
  params, batch = rollout
  cfg = ppo.PPOConfig()
  (loss, m), grads = jax.jit(jax.value_and_grad(
      lambda p: ppo.ppo_loss(NET.apply, p, batch, cfg, critic_only=True), has_aux=True))(params)
  norm = lambda tree: float(sum(jnp.abs(x).sum() for x in jax.tree_util.tree_leaves(tree)))  # noqa: E731
  for name, g in grads["params"].items():
    if name.startswith("actor"):
      assert norm(g) == 0.0, name
    else:
      assert norm(g) > 0.0, name
  # The data came from these very parameters: ratio 1, nothing clipped, zero KL.
  assert float(m["approx_kl"]) == pytest.approx(0.0, abs=1e-6)
  assert float(m["clip_frac"]) == 0.0
  assert float(loss) == pytest.approx(cfg.vf_coef * float(m["value_loss"]), rel=1e-6)


def test_ppo_update_decreases_the_loss(rollout):
  cfg = ppo.PPOConfig(epochs=2, minibatches=4, lr=1e-3)
  params, batch = rollout
  opt = ppo.make_optimizer(cfg)
  opt_state = opt.init(params)
  update = jax.jit(functools.partial(ppo.ppo_update, NET.apply, opt, cfg=cfg))
  loss_of = jax.jit(lambda p: ppo.ppo_loss(NET.apply, p, batch, cfg)[1])
  before = loss_of(params)
  key = jax.random.PRNGKey(1)
  for _ in range(4):
    key, sub = jax.random.split(key)
    params, opt_state, metrics = update(params, opt_state, batch, sub)
  after = loss_of(params)
  assert set(metrics) == {"loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"}
  assert all(v.shape == () for v in metrics.values())
  assert float(after["loss"]) < float(before["loss"]) - 0.05
  assert float(after["value_loss"]) < float(before["value_loss"])
  assert float(after["policy_loss"]) < float(before["policy_loss"]) - 0.02
  assert float(after["approx_kl"]) > 1e-6  # the full loss moves the policy, not only the critic


def test_actor_and_critic_learning_rates_are_separate(rollout):
  """Adam's first step moves a parameter by at most its rate (about the rate where the gradient is large):
  with actor_lr 1e-5 and critic_lr 1e-3 each part moves by its own rate."""
  params, batch = rollout
  cfg = ppo.PPOConfig(epochs=1, minibatches=1, lr=3e-4, actor_lr=1e-5, critic_lr=1e-3)
  opt = ppo.make_optimizer(cfg)
  new, _, _ = ppo.ppo_update(NET.apply, opt, params, opt.init(params), batch, jax.random.PRNGKey(2), cfg)
  moved = {"actor": 0.0, "critic": 0.0}
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(new)):
    part = "actor" if "actor" in jax.tree_util.keystr(path) else "critic"
    moved[part] = max(moved[part], float(jnp.abs(a - b).max()))
  # (f32 rounding of a parameter near 1 adds ~1e-7 to the measured step)
  assert 0.5e-5 < moved["actor"] <= 1.02e-5, moved
  assert 0.5e-3 < moved["critic"] <= 1.02e-3, moved


def test_a_parameter_of_neither_part_is_named():
  with pytest.raises(ValueError, match=r"encoder.*neither"):
    ppo.actor_critic_labels({"params": {"actor_mean": jnp.zeros(2), "encoder": jnp.zeros(2)}})


def test_micro_batches_are_the_fewest_equal_parts():
  assert ppo.micro_batches(512, 128) == 4
  assert ppo.micro_batches(320, 128) == 4  # 3 parts of 320 are not equal: 4 of 80
  assert ppo.micro_batches(128, 128) == 1
  assert ppo.micro_batches(100, 0) == 1  # 0: the whole minibatch
  assert ppo.micro_batches(7, 2) == 7


@pytest.mark.parametrize("normalize", [True, False])
def test_micro_batches_compute_the_same_update(rollout, normalize):
  """Minibatches of 16 in micro-batches of at most 6 (4 of 4): the same parameters and metrics as one pass
  per minibatch, the advantages normalized over the whole minibatch either way."""
  params, batch = rollout
  out = []
  for micro in (0, 6):
    cfg = ppo.PPOConfig(epochs=2, minibatches=2, lr=1e-3, normalize_advantages=normalize, microbatch=micro)
    opt = ppo.make_optimizer(cfg)
    update = jax.jit(functools.partial(ppo.ppo_update, NET.apply, opt, cfg=cfg))
    out.append(update(params, opt.init(params), batch, jax.random.PRNGKey(3)))
  (p_whole, _, m_whole), (p_micro, _, m_micro) = out
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(p_whole),
                                                           jax.tree_util.tree_leaves(params)))
  assert moved > 1e-4  # the update did something to compare
  for a, b in zip(jax.tree_util.tree_leaves(p_whole), jax.tree_util.tree_leaves(p_micro)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for k in m_whole:
    np.testing.assert_allclose(m_whole[k], m_micro[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_bad_minibatch_count_is_named(rollout):
  params, batch = rollout
  batch = jax.tree_util.tree_map(lambda x: x[:30], batch)
  cfg = ppo.PPOConfig(minibatches=4)
  opt = ppo.make_optimizer(cfg)
  with pytest.raises(ValueError, match=r"30 samples.*4 equal"):
    ppo.ppo_update(NET.apply, opt, params, opt.init(params), batch, jax.random.PRNGKey(0), cfg)


# --- Reward scaling ----------------------------------------------------------------------------------------


def test_reward_scaler_matches_numpy_statistics():
  rng = np.random.default_rng(0)
  gamma, b = 0.9, 3
  rollouts = [(rng.normal(1.0, 2.0, size=(7, b)).astype(np.float32), rng.random((7, b)) < 0.2) for _ in range(3)]
  s = ppo.reward_scaler_init(b)
  ret = np.zeros(b)
  seen = []
  for rewards, dones in rollouts:
    s, scaled = ppo.reward_scaler_update(s, jnp.asarray(rewards), jnp.asarray(dones), gamma)
    for t in range(rewards.shape[0]):
      ret = ret * gamma + rewards[t]
      seen.append(ret.copy())
      ret[dones[t]] = 0.0
    all_rets = np.stack(seen)
    assert float(s.count) == all_rets.size
    assert float(s.mean) == pytest.approx(all_rets.mean(), rel=1e-4)
    assert float(s.var) == pytest.approx(all_rets.var(), rel=1e-4)
    np.testing.assert_allclose(s.ret, ret, rtol=1e-5)
    np.testing.assert_allclose(scaled, rewards / all_rets.std(), rtol=1e-4)
  # Tiny constant rewards: the divisor is floored, the rewards are not blown up.
  s, scaled = ppo.reward_scaler_update(ppo.reward_scaler_init(2), jnp.full((1, 2), 1e-3), jnp.zeros((1, 2), bool),
                                       gamma)
  np.testing.assert_allclose(scaled, 1e-3 / 1e-2, rtol=1e-5)
