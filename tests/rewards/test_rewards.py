"""Rewards: perceptual distances (bounds, symmetry, ordering, LPIPS against NumPy), the endogenous reward's
hand cases and config errors, the learned reward head (learns, resumes exactly, loads) and the reward
quality report (rank correlations with the handcrafted reward)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from data_pipelines.tokenized import TokenDataset
from experiments.configs import world_model as wm_configs
from rsr.rewards import distance, endogenous, learned, quality
from rsr.stages import reward as stage_reward
from rsr.world_model.tokenizer import Tokenizer, TokenizerConfig


def _images(seed: int, n: int, size: int) -> np.ndarray:
  """Smooth-ish random images f32[n, size, size, 3] in [0, 1] (blocks of colour, like a rendered scene)."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 1, (n, size // 4, size // 4, 3)).astype(np.float32)
  return coarse.repeat(4, axis=1).repeat(4, axis=2)


def _noisy(x: np.ndarray, sigma: float, seed: int) -> np.ndarray:
  return np.clip(x + sigma * np.random.default_rng(seed).normal(size=x.shape), 0, 1).astype(np.float32)


# ---- feature, tokenizer, pixel and token distances --------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
  tok = Tokenizer(TokenizerConfig(channels=(8, 16), levels=(5, 5, 5)))
  params = tok.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3), jnp.uint8))
  return tok, params


def test_feature_distance_bounds_symmetry_and_order(tokenizer):
  tok, params = tokenizer
  feats = lambda x: tok.apply(params, jnp.asarray(x), method=Tokenizer.features)
  a = _images(0, 6, 16)
  fa, f_small, f_large = feats(a), feats(_noisy(a, 0.05, 1)), feats(_noisy(a, 0.4, 2))
  assert len(fa) == 2  # one layer per encoder stage
  np.testing.assert_array_equal(distance.feature_distance(fa, fa), 0.0)
  d_small = np.asarray(distance.feature_distance(fa, f_small))
  d_large = np.asarray(distance.feature_distance(fa, f_large))
  np.testing.assert_allclose(distance.feature_distance(f_large, fa), d_large, rtol=1e-6)
  assert d_small.shape == (6,) and ((d_small > 0) & (d_large <= 1)).all()
  assert (d_small < d_large).all(), (d_small, d_large)
  # Exactly opposite feature vectors are the far end of the scale.
  v = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 4, 8))
  np.testing.assert_allclose(distance.feature_distance([v], [-v]), 1.0, rtol=1e-5)
  with pytest.raises(ValueError, match="layer 0: features must share a shape"):
    distance.feature_distance([v], [v[:, :2]])


def test_tokenizer_distance_is_the_endogenous_default(tokenizer):
  tok, params = tokenizer
  dist = jax.jit(lambda a, b: distance.tokenizer_distance(tok, params, a, b))
  a = _images(4, 6, 16).reshape(2, 3, 16, 16, 3)  # leading axes are batch axes
  small, large = _noisy(a, 0.05, 5), _noisy(a, 0.4, 6)
  np.testing.assert_array_equal(dist(a, a), 0.0)
  d_small, d_large = np.asarray(dist(a, small)), np.asarray(dist(a, large))
  assert d_small.shape == (2, 3)
  np.testing.assert_allclose(dist(large, a), d_large, rtol=1e-5)
  assert ((d_small > 0) & (d_large <= 1)).all() and (d_small < d_large).all(), (d_small, d_large)
  # It is the feature distance over the encoder's stages.
  feats = lambda x: tok.apply(params, jnp.asarray(x), method=Tokenizer.features)
  np.testing.assert_allclose(d_large, distance.feature_distance(feats(a), feats(large)), rtol=1e-5)


def test_pixel_and_token_distances_by_hand():
  zeros = np.zeros((2, 4, 4, 3), np.float32)
  with pytest.raises(ValueError, match="pixel_distance: images must be floats in"):
    distance.pixel_distance(zeros.astype(np.uint8), zeros.astype(np.uint8))
  grey = np.full((2, 4, 4, 3), 0.5, np.float32)
  half = zeros.copy()
  half[1, :2] = 1.0  # half the pixels of image 1 differ by 1
  np.testing.assert_allclose(distance.pixel_distance(zeros, grey), [0.25, 0.25])
  np.testing.assert_allclose(distance.pixel_distance(zeros, half), [0.0, 0.5])
  # levels (5, 5): id = d0 + 5 d1, value = (d - 2) / 2, so 0 -> (-1, -1), 12 -> (0, 0), 24 -> (1, 1).
  levels = (5, 5)
  ta = jnp.array([[0, 12], [0, 0], [7, 7]])
  tb = jnp.array([[0, 24], [24, 24], [7, 7]])
  np.testing.assert_allclose(distance.token_distance(levels, ta, tb), [0.125, 1.0, 0.0])
  np.testing.assert_allclose(distance.token_distance(levels, jnp.array([0]), jnp.array([12])), 0.25)


# ---- LPIPS ------------------------------------------------------------------------------------------

CHANNELS = (4, 6, 8, 6, 6)  # small; the kernels are AlexNet's


def _lpips_arrays(seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  out, cin = {}, 3
  for i, ((k, _, _, _), cout) in enumerate(zip(distance.ALEX, CHANNELS), 1):
    out[f"conv{i}_w"] = (rng.normal(size=(k, k, cin, cout)) * np.sqrt(2 / (k * k * cin))).astype(np.float32)
    out[f"conv{i}_b"] = rng.uniform(0, 0.1, cout).astype(np.float32)
    out[f"lin{i}"] = rng.uniform(0, 0.2, cout).astype(np.float32)
    cin = cout
  return out


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("lpips") / "alex.npz")
  np.savez(path, **_lpips_arrays())
  return path


def test_lpips_identical_bounded_and_monotone_in_noise(lpips_file):
  lp = distance.LPIPS.load(lpips_file)
  a = _images(10, 8, 64)
  np.testing.assert_array_equal(lp(a, a), 0.0)
  means = []
  for j, sigma in enumerate((0.02, 0.1, 0.3)):
    d = np.asarray(lp(a, _noisy(a, sigma, 20 + j)))
    assert d.shape == (8,) and ((d >= 0) & (d <= 1)).all()
    np.testing.assert_allclose(lp(_noisy(a, sigma, 20 + j), a), d, rtol=1e-5)
    means.append(float(d.mean()))
  assert means[0] < means[1] < means[2], means
  b = _noisy(a, 0.3, 22)
  np.testing.assert_allclose(lp(a, b), np.clip(np.asarray(lp.layers(a, b)).sum(-1), 0, 1), rtol=1e-6)
  assert lp(a.reshape(2, 4, 64, 64, 3), b.reshape(2, 4, 64, 64, 3)).shape == (2, 4)
  with pytest.raises(ValueError, match="at least 31x31"):
    lp(a[:, :16, :16], a[:, :16, :16])


def test_lpips_first_layer_matches_numpy(lpips_file):
  """conv1 (stride 4, pad 2) + ReLU on LPIPS's scaled input, then normalise / square / lin / spatial mean,
  written independently in NumPy."""
  lp = distance.LPIPS.load(lpips_file)
  w = _lpips_arrays()
  a, b = _images(30, 2, 64), _noisy(_images(30, 2, 64), 0.2, 31)

  def relu1(x):
    x = (x * 2 - 1 - np.array([-0.030, -0.088, -0.188])) / np.array([0.458, 0.448, 0.450])
    x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    n = (x.shape[1] - 11) // 4 + 1
    out = np.zeros((x.shape[0], n, n, CHANNELS[0]))
    for i in range(n):
      for j in range(n):
        patch = x[:, 4 * i:4 * i + 11, 4 * j:4 * j + 11, :]  # [B, 11, 11, 3]
        out[:, i, j] = np.tensordot(patch, w["conv1_w"], axes=([1, 2, 3], [0, 1, 2])) + w["conv1_b"]
    return np.maximum(out, 0)

  def unit(f):
    return f / (np.sqrt((f ** 2).sum(-1, keepdims=True)) + 1e-10)

  fa, fb = relu1(a), relu1(b)
  assert fa.shape == (2, 15, 15, CHANNELS[0])
  np.testing.assert_allclose(lp.features(jnp.asarray(a))[0], fa, rtol=1e-4, atol=1e-5)
  expected = (((unit(fa) - unit(fb)) ** 2) @ w["lin1"]).mean(axis=(1, 2))
  np.testing.assert_allclose(np.asarray(lp.layers(a, b))[:, 0], expected, rtol=1e-4, atol=1e-7)


def test_lpips_weight_file_errors(tmp_path, lpips_file):
  arrays = _lpips_arrays()
  missing = str(tmp_path / "missing.npz")
  np.savez(missing, **{k: v for k, v in arrays.items() if k != "lin3"})
  with pytest.raises(ValueError, match=r"missing\.npz has no key 'lin3'"):
    distance.LPIPS.load(missing)
  torch_layout = str(tmp_path / "torch.npz")
  np.savez(torch_layout, **{**arrays, "conv2_w": arrays["conv2_w"].transpose(3, 2, 0, 1)})
  with pytest.raises(ValueError, match=r"torch\.npz: 'conv2_w' has shape \(6, 4, 5, 5\), expected \(5, 5, 4, cout\)"):
    distance.LPIPS.load(torch_layout)
  negative = str(tmp_path / "negative.npz")
  np.savez(negative, **{**arrays, "lin1": -arrays["lin1"]})
  with pytest.raises(ValueError, match=r"negative\.npz: 'lin1' has negative weights"):
    distance.LPIPS.load(negative)
  with pytest.raises(ValueError, match=r"nowhere\.npz does not exist"):
    distance.LPIPS.load(str(tmp_path / "nowhere.npz"))


# ---- the endogenous reward and its config -------------------------------------------------------------

def test_endogenous_reward_by_hand():
  cfg = endogenous.RewardConfig()
  d = jnp.array([0.0, 0.5, 1.0, 0.25, 0.1])
  done = jnp.array([0.9, 0.8999, 1.0, 0.0, 0.95])  # exactly tau earns the bonus; just below does not
  np.testing.assert_allclose(endogenous.endogenous_reward(d, done, cfg), [11.0, 0.5, 10.0, 0.75, 10.9], rtol=1e-6)
  other = endogenous.RewardConfig(w_align=2.0, w_done=1.0, tau=0.5)
  r = jax.jit(endogenous.endogenous_reward, static_argnums=2)(d, done, other)
  np.testing.assert_allclose(r, [3.0, 2.0, 1.0, 1.5, 2.8], rtol=1e-6)
  change = endogenous.RewardConfig(align="change", w_align=2.0)
  prev = jnp.array([0.5, 0.5, 0.5, 0.25, 0.3])
  np.testing.assert_allclose(endogenous.endogenous_reward(d, done, change, prev), [11.0, 0.0, 9.0, 0.0, 10.4],
                             rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="align 'change' needs the previous frame's distance"):
    endogenous.endogenous_reward(d, done, change)
  # success_fill: a success pays w_align for every step left; nothing elsewhere, nothing when off
  success, left = jnp.array([True, False, True, True]), jnp.array([5, 5, 0, -1])
  np.testing.assert_allclose(endogenous.fill(success, left, endogenous.RewardConfig(success_fill=True, w_align=2.0)),
                             [10.0, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(endogenous.fill(success, left, cfg), 0.0)


def test_reward_config_errors(tmp_path):
  assert endogenous.RewardConfig().validate().distance == "features"
  bad = [(dict(kind="sparse"), "reward kind must be one of"),
         (dict(distance="ssim"), "reward distance must be one of"),
         (dict(align="delta"), "reward align must be one of"),
         (dict(distance="lpips"), "reward lpips_weights must name the LPIPS npz"),
         (dict(distance="lpips", lpips_weights=str(tmp_path / "x.npz")), r"reward lpips_weights: no file .*x\.npz"),
         (dict(w_done=-1.0), "reward w_done must be a finite number >= 0"),
         (dict(tau=1.5), r"reward tau must be a probability in \[0, 1\]"),
         (dict(align="change", success_fill=True), "reward success_fill pays the level an absorbing goal")]
  for kw, msg in bad:
    with pytest.raises(ValueError, match=msg):
      endogenous.RewardConfig(**kw).validate()
  # Only the endogenous reward reads a distance.
  endogenous.RewardConfig(kind="learned", distance="lpips").validate()


# ---- the learned reward head ------------------------------------------------------------------------

N_TOKENS, KEY_TOKEN = 12, 5
TABLE = np.array([0, 3, 1, 4, 1, 5, 9, 2], np.float32) / 3  # reward of the key token's value


def _token_dataset(path: str) -> TokenDataset:
  """reward[t] = TABLE[tokens[t + 1, KEY_TOKEN]]; other tokens are noise; the last step's reward is 0;
  odd episodes succeed at their last step."""
  rng = np.random.default_rng(0)
  arrays, splits = {}, {"train": 24, "val": 8, "ood_all": 8}
  for split, episodes in splits.items():
    lengths = rng.integers(6, 12, episodes).astype(np.int32)
    toks, rewards, success = [], [], []
    for i, n in enumerate(lengths):
      t = rng.integers(0, len(TABLE), (n, N_TOKENS))
      toks.append(t)
      rewards.append(np.append(TABLE[t[1:, KEY_TOKEN]], 0.0))
      success.append(np.arange(n) == (n - 1 if i % 2 else n))
    s = int(lengths.sum())
    arrays.update({f"{split}/tokens": np.concatenate(toks).astype(np.int16),
                   f"{split}/action": rng.uniform(-1, 1, (s, 5)).astype(np.float32),
                   f"{split}/reward": np.concatenate(rewards).astype(np.float32),
                   f"{split}/success": np.concatenate(success), f"{split}/lengths": lengths,
                   f"{split}/task_ids": rng.integers(0, 4, episodes).astype(np.int32)})
  return TokenDataset(path, arrays, {"fingerprint": "synthetic/0", "splits": list(splits),
                                     "tokens_per_frame": N_TOKENS})


def _config(**head) -> ml_collections.ConfigDict:
  c = wm_configs.get_config("tiny")  # levels (5, 5, 5): vocab 125
  c.reward_head.update({**dict(d_model=32, hidden=64, batch_size=16, steps=200, lr=3e-3, warmup=10, eval_every=100,
                              checkpoint_every=80), **head})
  return c


def _lines(workdir: str) -> list[dict]:
  with open(f"{workdir}/metrics.jsonl") as f:
    return [json.loads(ln) for ln in f if json.loads(ln)["stage"] == "reward"]


def test_reward_head_learns_resumes_and_loads(tmp_path):
  tok_ds = _token_dataset(str(tmp_path / "tokens"))
  c = _config()
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  # A stand-in alignment term that orders frames as the handcrafted reward does (the real one is tested below).
  align = lambda tokens, goal: TABLE[np.asarray(tokens)[:, KEY_TOKEN]]  # noqa: E731
  a = stage_reward.run(c, straight, tok_ds, progress=False, align=align)
  assert a["val/reward_r2"] > 0.8 and a["ood_all/reward_r2"] > 0.8, a
  # The quality report: the 4 successful episodes of each held-out split, every step up to success.
  steps = sum(len(tok_ds.read("val", i)["reward"]) - 1 for i in range(1, 8, 2))
  assert a["val/quality_episodes"] == 4 and a["val/quality_steps"] == steps, a
  assert a["val/align_spearman"] == pytest.approx(1.0) and a["val/align_spearman_within"] == pytest.approx(1.0)
  assert a["val/head_spearman"] > 0.8 and a["ood_all/head_spearman"] > 0.8, a
  with open(f"{straight}/tables/reward.json") as f:
    assert json.load(f) == a
  # Killed at 100 (last checkpoint 80), then resumed: the run an uninterrupted one would have been.
  assert stage_reward.run(c, killed, tok_ds, progress=False, max_steps_this_run=100) == {}
  b = stage_reward.run(c, killed, tok_ds, progress=False, align=align)
  assert a == b and _lines(straight) == _lines(killed)
  # A finished stage re-run retrains nothing.
  n_lines = len(_lines(straight))
  assert stage_reward.run(c, straight, tok_ds, progress=False, align=align) == a
  assert len(_lines(straight)) == n_lines

  model, params = stage_reward.load(c, straight, 125, N_TOKENS)
  ep = tok_ds.read("val", 0)
  pred = np.asarray(model.apply(params, ep["tokens"][1:], ep["task"][1:]))
  assert np.abs(pred - ep["reward"][:-1]).mean() < 0.3 * TABLE.std()
  with pytest.raises(ValueError, match=r"incompatible config: d_model: checkpoint has 32, config has 48"):
    stage_reward.load(_config(d_model=48), straight, 125, N_TOKENS)
  with pytest.raises(ValueError, match=r"checkpoints/reward come from an incompatible config: "
                                      r"reward\.d_model: checkpoint has 32, config has 48$"):
    stage_reward.run(_config(d_model=48), straight, tok_ds, progress=False)
  with pytest.raises(ValueError, match=r"no reward-head checkpoint in .*nothing.*run the 'reward' stage first"):
    stage_reward.load(c, str(tmp_path / "nothing"), 125, N_TOKENS)


def test_reward_head_settings_and_shapes():
  c = wm_configs.get_config("tiny")
  assert learned.settings(c) == c.reward_head.to_dict()
  with pytest.raises(ValueError, match="reward_head.batch_size must be"):
    c.reward_head.batch_size = 0
    learned.check(c)
  with pytest.raises(ValueError, match="reward_head hidden must be a positive integer"):
    learned.RewardHeadConfig(vocab=10, tokens_per_frame=4, hidden=0).validate()
  head = learned.RewardHead(learned.RewardHeadConfig(vocab=10, tokens_per_frame=4, d_model=8, hidden=8))
  p = head.init(jax.random.PRNGKey(0), jnp.zeros((3, 4), jnp.int32), jnp.zeros((3,), jnp.int32))
  assert head.apply(p, jnp.ones((3, 4), jnp.int32), jnp.arange(3)).shape == (3,)
  with pytest.raises(ValueError, match="expects 4 tokens per frame"):
    head.apply(p, jnp.ones((3, 5), jnp.int32), jnp.arange(3))


def test_spearman_by_hand():
  # Ranks of b: 1, 2, 4, 3; sum of squared rank differences 2: 1 - 6 * 2 / (4 * (16 - 1)) = 0.8.
  assert quality.spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 40, 30])) == pytest.approx(0.8)
  assert quality.spearman(np.array([4.0, 3, 2, 1]), np.array([1.0, 2, 3, 4])) == pytest.approx(-1.0)
  # Ties share their mean rank: b's ranks 1.5, 1.5, 3 against 1, 2, 3 (Pearson of the ranks: sqrt(3)/2).
  assert quality.spearman(np.array([1.0, 2, 3]), np.array([5.0, 5, 7])) == pytest.approx(np.sqrt(3) / 2)
  assert quality.spearman(np.array([1.0, 2, 3]), np.array([5.0, 5, 5])) is None  # undefined: constant
  assert quality.spearman(np.array([1.0, 2]), np.array([1.0, 2])) is None  # too few steps


def test_alignment_is_one_at_the_goal_and_falls_with_distance(tokenizer):
  """make_alignment pays 1 - the tokenizer-feature distance between decoded frames: exactly 1 for the goal's
  own tokens, and lower for frames whose tokens differ more from the goal's."""
  tok, params = tokenizer
  rng = np.random.default_rng(3)
  goal = rng.integers(0, 125, 2 * 16)  # 2 views of 4 x 4 tokens (16x16 frames)
  frames = np.stack([goal] * 4)
  frames[1, :4] = (goal[:4] + 1) % 125
  frames[2, :16] = (goal[:16] + 60) % 125
  frames[3] = rng.integers(0, 125, 2 * 16)
  a = quality.make_alignment(tok, params, views=2)(frames, goal)
  assert a.shape == (4,) and a[0] == 1.0
  assert 1.0 > a[1] > a[3] and 1.0 > a[2] > a[3], a


def test_reward_quality_on_imagined_frames(tmp_path):
  """With a perfect stand-in world model (it returns each episode's real future tokens, done certain at
  success) the imagined report is the real one over steps C .. t*, plus the done bonus; a world model that
  freezes the last context frame pays a constant alignment: its correlation is left out, not made up."""
  tok_ds = _token_dataset(str(tmp_path / "tokens"))
  align = lambda tokens, goal: TABLE[np.asarray(tokens)[:, KEY_TOKEN]]  # noqa: E731
  context = 2
  episodes = {tok_ds.read("val", i)["tokens"][:context].tobytes(): tok_ds.read("val", i) for i in range(8)}

  def perfect(tokens, actions, task):
    h = actions.shape[1] - context
    toks, done = np.zeros((len(tokens), h, N_TOKENS), np.int32), np.zeros((len(tokens), h), np.float32)
    for j, t in enumerate(tokens):
      e = episodes[np.asarray(t).tobytes()]  # the context as stored (np.stack keeps the dtype)
      n = min(h, len(e["tokens"]) - context)
      toks[j, :n] = e["tokens"][context:context + n]
      done[j, :n] = e["success"][context:context + n]
    return toks, done

  frozen = lambda tokens, actions, task: (  # noqa: E731
      np.repeat(np.asarray(tokens)[:, -1:], actions.shape[1] - context, axis=1),
      np.zeros((len(tokens), actions.shape[1] - context)))
  q = quality.reward_quality(align, tok_ds, "val", 8, imagine=perfect, context=context)
  al, rw, target, within = [], [], [], []
  for i in range(1, 8, 2):  # the successful episodes
    e = tok_ds.read("val", i)
    t_star = len(e["reward"]) - 1
    a = TABLE[e["tokens"][context:t_star + 1, KEY_TOKEN]]
    al.append(a)
    rw.append(a + 10.0 * (np.arange(context, t_star + 1) == t_star))
    target.append(e["reward"][context - 1:t_star])
    within.append(quality.spearman(rw[-1], target[-1]))
  assert q["imagined_align_spearman"] == pytest.approx(1.0)
  assert q["imagined_reward_spearman"] == pytest.approx(quality.spearman(np.concatenate(rw), np.concatenate(target)))
  assert q["imagined_reward_spearman_within"] == pytest.approx(np.mean(within))
  assert q["imagined_reward_spearman"] != q["imagined_align_spearman"]  # the done bonus is in the reward
  q = quality.reward_quality(align, tok_ds, "val", 8, imagine=frozen, context=context)
  assert "imagined_align_spearman_within" not in q and q["episodes"] == 4
