"""The world model's parts: FSQ codes, the cached imagination path, MaskGIT decoding, done metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsr.world_model import dynamics as dyn
from rsr.world_model import dynamics_train, generate, token_head
from rsr.world_model import evaluate as wm_eval
from rsr.world_model.fsq import FSQ
from rsr.world_model.tokenizer import Tokenizer, TokenizerConfig, depth_to_space, space_to_depth


def test_fsq_codes_round_trip_and_cover_the_codebook():
  f = FSQ((8, 5, 5, 5))
  z = 3 * jax.random.normal(jax.random.PRNGKey(0), (20000, 4))
  q = f.quantize(z)
  codes = f.codes(q)
  assert f.codebook_size == 1000 and int(codes.min()) >= 0 and int(codes.max()) < 1000
  assert len(np.unique(codes)) > 800  # wide inputs reach most codes
  np.testing.assert_array_equal(f.embed(codes), q)
  every = jnp.arange(1000)
  np.testing.assert_array_equal(f.codes(f.embed(every)), every)  # ids <-> levels is a bijection
  # Straight-through: rounding does not kill the gradient.
  g = jax.grad(lambda z: f.quantize(z).sum())(z[:8])
  assert float(jnp.abs(g).min()) > 0
  with pytest.raises(ValueError, match="FSQ levels must be integers >= 2"):
    FSQ((1, 5))


def test_space_to_depth_inverts():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  np.testing.assert_array_equal(depth_to_space(space_to_depth(x)), x)


def test_tokenizer_shapes():
  tok = Tokenizer(TokenizerConfig(channels=(8, 16), levels=(5, 5, 5)))
  x = jnp.zeros((2, 3, 16, 16, 3), jnp.uint8)
  p = tok.init(jax.random.PRNGKey(0), x)
  recon, codes = tok.apply(p, x)
  assert recon.shape == (2, 3, 16, 16, 3) and codes.shape == (2, 3, 4, 4)
  np.testing.assert_array_equal(tok.apply(p, x, method=Tokenizer.encode), codes)
  assert tok.apply(p, codes, method=Tokenizer.decode).shape == (2, 3, 16, 16, 3)


CONFIGS = [dict(action_conditioning="cross"), dict(action_conditioning="additive"), dict(conditioning="task"),
           dict(prev_frame_input=True)]


@pytest.mark.parametrize("kw", CONFIGS, ids=["cross", "additive", "goal", "prev_frame"])
def test_cached_frames_equal_the_full_window(kw):
  """One frame at a time against the cache gives the training pass's logits and done (imagination is
  exactly the model that was trained)."""
  cfg = dyn.DynamicsConfig(vocab=50, tokens_per_frame=6, d_model=32, layers=2, heads=4, window=4, **kw)
  m = dyn.Dynamics(cfg)
  k = jax.random.PRNGKey(0)
  tok = jax.random.randint(k, (2, 4, 6), 0, 51)  # mask ids included
  act = jax.random.uniform(k, (2, 4, 5), minval=-1, maxval=1)
  task = jnp.array([0, 3])
  p = m.init(k, tok, act, task)
  logits, done = m.apply(p, tok, act, task)
  cache = dyn.init_cache(cfg, 2)
  for t in range(4):
    prev = act[:, t - 1] if t else jnp.zeros((2, 5))
    cache, d, lg = m.apply(p, cache, tok[:, t], prev, jnp.full((2,), t > 0), task, method=dyn.Dynamics.observe)
    np.testing.assert_allclose(lg, logits[:, t], atol=1e-4)
    np.testing.assert_allclose(d, done[:, t], atol=1e-4)
  assert cache.pos.tolist() == [4, 4] and bool(cache.valid.all())
  # Actions matter to WM_act (and not at all to the goal model).
  other, _ = m.apply(p, tok, -act, task)
  moved = float(jnp.abs(other[:, 1:] - logits[:, 1:]).max())
  assert (moved == 0.0) == (kw.get("conditioning") == "task")


def test_maskgit_schedule_and_imagine():
  assert [generate.fixed_after(s, 2, 256) for s in range(2)] == [75, 256]
  assert [generate.fixed_after(s, 4, 100) for s in range(4)] == [8, 30, 62, 100]
  cfg = dyn.DynamicsConfig(vocab=50, tokens_per_frame=6, d_model=32, layers=2, heads=4, window=3)
  m = dyn.Dynamics(cfg)
  p = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 6), jnp.int32), jnp.zeros((1, 3, 5)), jnp.zeros((1,), jnp.int32))
  cache = dyn.init_cache(cfg, 3)
  act, task = jnp.zeros((3, 5)), jnp.zeros((3,), jnp.int32)
  for _ in range(4):  # beyond the cache size: the oldest frame is dropped
    cache, tokens, done, conf = generate.imagine(m, p, cache, act, task, jax.random.PRNGKey(1),
                                                 generate.GenerateConfig(temperature=0.0))
    assert tokens.shape == (3, 6) and int(tokens.max()) < 50 and done.shape == (3,)
    # Greedy: each token's probability is its distribution's largest, so their geometric mean is in [1/50, 1].
    assert conf.shape == (3,) and bool(((conf <= 1) & (conf >= 1 / 50 - 1e-6)).all())
  assert cache.pos.tolist() == [4, 4, 4]
  again = generate.imagine(m, p, dyn.init_cache(cfg, 3), act, task, jax.random.PRNGKey(9),
                           generate.GenerateConfig(temperature=0.0))[1]
  first = generate.imagine(m, p, dyn.init_cache(cfg, 3), act, task, jax.random.PRNGKey(1),
                           generate.GenerateConfig(temperature=0.0))[1]
  np.testing.assert_array_equal(again, first)  # greedy decoding ignores the key
  reset = dyn.reset_cache(cache, jnp.array([True, False, False]))
  assert reset.pos.tolist() == [0, 4, 4] and not bool(reset.valid[0].any())


def test_argmax_and_attention_match_their_plain_forms():
  """The greedy token of one softmax over codes is jnp.argmax (first index on ties) with its log-probability;
  over FSQ digits it is the code of each digit's argmax, scored by the sum of their log-probabilities;
  attend is softmax attention (normalised after the weighted sum), with and without a mask."""
  logits = jnp.asarray(np.random.default_rng(0).integers(0, 4, (5, 7, 11)), jnp.float32)  # many ties
  idx, logp = token_head.greedy("codes", (), logits)
  np.testing.assert_array_equal(idx, jnp.argmax(logits, axis=-1))
  np.testing.assert_allclose(logp, jnp.max(jax.nn.log_softmax(logits), axis=-1), rtol=1e-6)
  levels = (3, 2, 4)
  digit_logits = jax.random.normal(jax.random.PRNGKey(3), (5, 9))
  tok, logp = token_head.greedy("digits", levels, digit_logits)
  parts = np.split(np.asarray(digit_logits), [3, 5], axis=-1)
  want = sum(p.argmax(-1) * b for p, b in zip(parts, (1, 3, 6)))
  np.testing.assert_array_equal(tok, want)
  np.testing.assert_allclose(logp, token_head.log_prob("digits", levels, digit_logits, tok), rtol=1e-5)
  all_codes = jnp.arange(24)
  every = jax.vmap(lambda t: token_head.log_prob("digits", levels, digit_logits, jnp.full((5,), t)))(all_codes)
  np.testing.assert_allclose(jax.nn.logsumexp(every, axis=0), 0.0, atol=1e-5)  # a distribution over codes
  np.testing.assert_array_equal(tok, every.argmax(axis=0))
  q, k, v = (jax.random.normal(kk, (2, 6, 3, 4)) for kk in jax.random.split(jax.random.PRNGKey(0), 3))
  mask = np.tril(np.ones((6, 6), bool))
  for m in (None, mask):
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
    s = s if m is None else jnp.where(m, s, -jnp.inf)
    want = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
    np.testing.assert_allclose(dyn.attend(q, k, v, m), want, rtol=1e-5, atol=1e-6)


def test_greedy_imagine_matches_maskgit_by_hand():
  """Greedy K = 2 decoding against the cache: the most confident quarter-ish of the tokens (the cosine
  schedule) from the first pass, the rest from the second pass given them, as written out plainly."""
  cfg = dyn.DynamicsConfig(vocab=50, tokens_per_frame=16, d_model=32, layers=2, heads=4, window=3)
  m = dyn.Dynamics(cfg)
  p = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 16), jnp.int32), jnp.zeros((1, 3, 5)),
             jnp.zeros((1,), jnp.int32))
  b = 3
  act, task, has = jax.random.uniform(jax.random.PRNGKey(2), (b, 5)), jnp.zeros((b,), jnp.int32), jnp.ones((b,), bool)
  cache = dyn.init_cache(cfg, b)
  cache, _, _ = m.apply(p, cache, jax.random.randint(jax.random.PRNGKey(3), (b, 16), 0, 50), act, has, task,
                        method=dyn.Dynamics.observe)
  _, tokens, _, confidence = generate.imagine(m, p, cache, act, task, jax.random.PRNGKey(1),
                                              generate.GenerateConfig(temperature=0.0))
  masked = np.full((b, 16), cfg.mask_id)
  logits = np.asarray(m.apply(p, cache, jnp.asarray(masked), act, has, task, write=False, method=dyn.Dynamics.observe)[2])
  conf = np.max(np.asarray(jax.nn.log_softmax(logits)), axis=-1)
  first = masked.copy()
  keep = generate.fixed_after(0, 2, 16)
  for i in range(b):
    top = np.argsort(-conf[i], kind="stable")[:keep]
    first[i, top] = np.argmax(logits[i, top], axis=-1)
  logits2 = np.asarray(m.apply(p, cache, jnp.asarray(first), act, has, task, write=False, method=dyn.Dynamics.observe)[2])
  want = np.where(first == cfg.mask_id, np.argmax(logits2, axis=-1), first)
  np.testing.assert_array_equal(tokens, want)
  # The frame's confidence: the geometric mean of each token's probability in the pass that fixed it.
  logp = np.where(first == cfg.mask_id, np.max(np.asarray(jax.nn.log_softmax(logits2)), axis=-1), conf)
  np.testing.assert_allclose(confidence, np.exp(logp.mean(axis=-1)), rtol=1e-5)


def test_copy_bias_keeps_the_previous_frame():
  """The copy bias moves decoding towards the previous frame's tokens: unbiased greedy decoding of a random
  network changes tokens, a large bias keeps every one, and a first frame (no previous) is unaffected."""
  cfg = dyn.DynamicsConfig(vocab=50, tokens_per_frame=6, d_model=32, layers=2, heads=4, window=3,
                           prev_frame_input=True)
  m = dyn.Dynamics(cfg)
  p = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 6), jnp.int32), jnp.zeros((1, 3, 5)), jnp.zeros((1,), jnp.int32))
  act, task = jnp.zeros((4, 5)), jnp.arange(4)
  seen = jax.random.randint(jax.random.PRNGKey(3), (4, 6), 0, 50)
  cache = m.apply(p, dyn.init_cache(cfg, 4), seen, act, jnp.zeros((4,), bool), task, method=dyn.Dynamics.observe)[0]
  imagine = lambda c, bias: generate.imagine(  # noqa: E731
      m, p, c, act, task, jax.random.PRNGKey(1), generate.GenerateConfig(temperature=0.0, copy_bias=bias))[1]
  assert not bool((imagine(cache, 0.0) == seen).all())
  np.testing.assert_array_equal(imagine(cache, 1e4), seen)
  fresh = dyn.init_cache(cfg, 4)
  np.testing.assert_array_equal(imagine(fresh, 1e4), imagine(fresh, 0.0))
  with pytest.raises(ValueError, match="copy_bias"):
    generate.GenerateConfig(copy_bias=-1.0).validate()


def test_action_guidance_scales_the_action_effect():
  """Guidance 0 decodes the frame with its action hidden, so two different actions imagine the same frame;
  guidance 1 is the conditioned frame, in which they differ; a larger scale changes the frame further."""
  cfg = dyn.DynamicsConfig(vocab=50, tokens_per_frame=16, d_model=32, layers=2, heads=4, window=3,
                           prev_frame_input=True, action_film=True)
  m = dyn.Dynamics(cfg)
  p = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 16), jnp.int32), jnp.zeros((1, 3, 5)), jnp.zeros((1,), jnp.int32))
  b, task = 4, jnp.zeros((4,), jnp.int32)
  seen = jax.random.randint(jax.random.PRNGKey(3), (b, 16), 0, 50)
  cache = m.apply(p, dyn.init_cache(cfg, b), seen, jnp.zeros((b, 5)), jnp.zeros((b,), bool), task,
                  method=dyn.Dynamics.observe)[0]
  act_a, act_b = (jax.random.normal(jax.random.PRNGKey(k), (b, 5)) for k in (5, 6))
  imagine = lambda act, w: np.asarray(generate.imagine(  # noqa: E731
      m, p, cache, act, task, jax.random.PRNGKey(1), generate.GenerateConfig(temperature=0.0, action_guidance=w))[1])
  np.testing.assert_array_equal(imagine(act_a, 0.0), imagine(act_b, 0.0))
  assert (imagine(act_a, 1.0) != imagine(act_b, 1.0)).any()
  assert (imagine(act_a, 4.0) != imagine(act_a, 1.0)).any()
  with pytest.raises(ValueError, match="action_guidance"):
    generate.GenerateConfig(action_guidance=-1.0).validate()


def test_loss_and_changed_token_metrics_by_hand():
  """The loss is the mean cross-entropy over masked tokens (+ the done term); `changed_frac` and
  `changed_acc` count the masked tokens that differ from the previous frame, none in a static window."""
  cfg = dyn.DynamicsConfig(vocab=20, tokens_per_frame=8, d_model=32, layers=1, heads=4, window=3)
  m = dyn.Dynamics(cfg)
  k = jax.random.PRNGKey(0)
  moving = jax.random.randint(k, (4, 3, 8), 0, 20)
  batch = {"action": jnp.zeros((4, 3, 5)), "task": jnp.zeros((4,), jnp.int32), "done": jnp.zeros((4, 3)),
           "mask": jnp.ones((4, 3), bool)}
  p = m.init(k, moving, batch["action"], batch["task"])
  no_done = dynamics_train.DynamicsTrainConfig(done_weight=0.0)
  static = jnp.broadcast_to(moving[:, :1], moving.shape)
  assert float(dynamics_train.losses(m, p, dict(batch, tokens=static), k, no_done)[1]["changed_frac"]) == 0.0
  loss, metrics = dynamics_train.losses(m, p, dict(batch, tokens=moving), k, no_done)
  k_mask = jax.random.split(k, 4)[0]  # the key `losses` draws its mask with: the same mask
  mask = np.asarray(dynamics_train.sample_mask(k_mask, moving.shape))
  logits, _ = m.apply(p, jnp.where(mask, cfg.mask_id, moving), batch["action"], batch["task"], moving)
  tok = np.asarray(moving)
  ce = np.take_along_axis(np.asarray(-jax.nn.log_softmax(logits)), tok[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss, ce[mask].mean(), rtol=1e-5)
  changed = mask & (tok != np.concatenate([tok[:, :1], tok[:, :-1]], 1))
  right = np.asarray(logits).argmax(-1) == tok
  assert changed.any()
  assert float(metrics["changed_frac"]) == pytest.approx(changed.sum() / mask.sum())
  assert float(metrics["changed_acc"]) == pytest.approx(right[changed].mean())


def test_self_context_reads_the_models_own_guess():
  """With self_context the training pass reads the model's greedy guess of the window (first frames and
  unhidden tokens real) as its visible tokens and previous-frame input, and is scored on the real tokens;
  a share of 0 of the windows is the plain loss."""
  cfg = dyn.DynamicsConfig(vocab=20, tokens_per_frame=8, d_model=32, layers=1, heads=4, window=3,
                           prev_frame_input=True)
  m = dyn.Dynamics(cfg)
  k = jax.random.PRNGKey(5)
  tokens = jax.random.randint(k, (6, 3, 8), 0, 20)
  batch = {"tokens": tokens, "action": jax.random.normal(k, (6, 3, 5)), "task": jnp.zeros((6,), jnp.int32),
           "done": jnp.zeros((6, 3)), "mask": jnp.ones((6, 3), bool)}
  p = m.init(k, tokens, batch["action"], batch["task"])
  trn = lambda share: dynamics_train.DynamicsTrainConfig(done_weight=0.0, self_context=share)  # noqa: E731
  guess = np.asarray(dynamics_train.own_guess(m, p, batch, jax.random.fold_in(k, 1), trn(1.0)))
  tok = np.asarray(tokens)
  np.testing.assert_array_equal(guess[:, 0], tok[:, 0])
  assert (guess != tok).any()  # an untrained model guesses wrong
  np.testing.assert_array_equal(dynamics_train.own_guess(m, p, batch, k, trn(0.0)), tok)

  mask = np.asarray(dynamics_train.sample_mask(jax.random.split(k, 4)[0], tokens.shape))
  logits, _ = m.apply(p, jnp.where(mask, cfg.mask_id, guess), batch["action"], batch["task"], guess)
  ce = np.take_along_axis(np.asarray(-jax.nn.log_softmax(logits)), tok[..., None], -1)[..., 0]
  loss = dynamics_train.losses(m, p, batch, k, trn(1.0))[0]
  np.testing.assert_allclose(loss, ce[mask].mean(), rtol=1e-5)
  plain = dynamics_train.losses(m, p, batch, k, trn(0.0))[0]
  assert abs(float(plain) - float(loss)) > 1e-4
  with pytest.raises(ValueError, match="self_context"):
    dynamics_train.DynamicsTrainConfig(self_context=1.5).validate()


@pytest.mark.parametrize("done_input", ["visible", "predicted"])
def test_done_head_reads_complete_frames(done_input):
  """With done_input visible / predicted the done loss is the head's on the unmasked window / on the
  window with masked tokens guessed, and moves the done head alone; "masked" moves the trunk too."""
  cfg = dyn.DynamicsConfig(vocab=20, tokens_per_frame=8, d_model=32, layers=1, heads=4, window=3)
  m = dyn.Dynamics(cfg)
  k = jax.random.PRNGKey(4)
  tokens = jax.random.randint(k, (4, 3, 8), 0, 20)
  batch = {"tokens": tokens, "action": jax.random.normal(k, (4, 3, 5)), "task": jnp.zeros((4,), jnp.int32),
           "done": jnp.array([[0, 0, 1], [0, 1, 1], [0, 0, 0], [0, 0, 1]], jnp.float32),
           "mask": jnp.ones((4, 3), bool)}
  p = m.init(k, tokens, batch["action"], batch["task"])
  cfg_of = lambda **kw: dynamics_train.DynamicsTrainConfig(done_input=done_input, **kw)  # noqa: E731
  _, metrics = dynamics_train.losses(m, p, batch, k, cfg_of())
  frames = tokens
  if done_input == "predicted":
    mask = np.asarray(dynamics_train.sample_mask(jax.random.split(k, 4)[0], tokens.shape))
    logits, _ = m.apply(p, jnp.where(mask, cfg.mask_id, tokens), batch["action"], batch["task"], tokens)
    frames = jnp.where(mask, np.asarray(logits).argmax(-1), tokens)
    assert not np.array_equal(frames, tokens)  # an untrained model guesses wrong
  done = jax.nn.sigmoid(m.apply(p, frames, batch["action"], batch["task"])[1])
  np.testing.assert_allclose(metrics["done_mse"], jnp.mean((done - batch["done"]) ** 2), rtol=1e-5)

  def grads(c):
    return jax.grad(lambda q: dynamics_train.losses(m, q, batch, k, c)[0])(p)["params"]

  base, ours = grads(cfg_of(done_weight=0.0)), grads(cfg_of())
  for name in base:
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(base[name]),
                                                   jax.tree_util.tree_leaves(ours[name])))
    assert same == (name not in ("done_hidden", "done_out")), name
  masked = grads(dynamics_train.DynamicsTrainConfig(done_input="masked"))
  assert not np.array_equal(masked["norm"]["scale"], base["norm"]["scale"])  # the default: the trunk learns done


def test_cache_ring_keeps_the_newest_frames():
  """Past the window, the ring overwrites the oldest slot: its slots hold exactly the last W - 1 frames.
  Layer-0 keys depend only on the frame, its predecessor, the action and the position (not on the cached
  history), so a cache large enough never to wrap must hold the same keys for those frames."""
  kw = dict(vocab=50, tokens_per_frame=6, d_model=32, layers=2, heads=4, prev_frame_input=True)
  small, big = dyn.DynamicsConfig(window=4, **kw), dyn.DynamicsConfig(window=9, **kw)
  m_small, m_big = dyn.Dynamics(small), dyn.Dynamics(big)
  k = jax.random.PRNGKey(0)
  tok = jax.random.randint(k, (2, 7, 6), 0, 50)
  act = jax.random.uniform(k, (2, 7, 5), minval=-1, maxval=1)
  task = jnp.array([1, 2])
  p = m_small.init(k, tok[:, :4], act[:, :4], task)
  c_small, c_big = dyn.init_cache(small, 2), dyn.init_cache(big, 2)
  for t in range(7):
    prev, has = (act[:, t - 1] if t else jnp.zeros((2, 5))), jnp.full((2,), t > 0)
    c_small = m_small.apply(p, c_small, tok[:, t], prev, has, task, method=dyn.Dynamics.observe)[0]
    c_big = m_big.apply(p, c_big, tok[:, t], prev, has, task, method=dyn.Dynamics.observe)[0]
  assert c_small.pos.tolist() == [7, 7] and bool(c_small.valid.all())
  np.testing.assert_array_equal(c_small.last, tok[:, 6])
  for t in (4, 5, 6):  # frame t sits in slot t mod 3; frames 0..3 were overwritten
    np.testing.assert_allclose(c_small.k[:, 0, :, t % 3], c_big.k[:, 0, :, t], atol=1e-5)
    np.testing.assert_allclose(c_small.v[:, 0, :, t % 3], c_big.v[:, 0, :, t], atol=1e-5)
  with pytest.raises(ValueError, match="window must be >= 2"):
    dyn.DynamicsConfig(window=1, **kw).validate()


def test_mask_sampling_spares_the_first_frame():
  m = dynamics_train.sample_mask(jax.random.PRNGKey(0), (64, 5, 32))
  assert not bool(m[:, 0].any())
  frac = float(m[:, 1:].mean())
  assert 0.55 < frac < 0.72  # E[cos(pi u / 2)] = 2 / pi


def test_auc_and_f1():
  scores = np.array([0.1, 0.4, 0.35, 0.8])
  labels = np.array([0, 0, 1, 1], bool)
  assert dynamics_train.auc(scores, labels) == pytest.approx(0.75)
  assert dynamics_train.auc(np.array([0.5, 0.5]), np.array([0, 1], bool)) == pytest.approx(0.5)
  assert dynamics_train.auc(scores, np.zeros(4, bool)) is None
  assert dynamics_train.f1(scores >= 0.5, labels) == pytest.approx(2 / 3)


def test_done_replay_and_open_loop_report():
  """The replay feeds real frames through imagination's cache (the training pass's done, frame for frame);
  the report counts windows by hand."""
  cfg = dyn.DynamicsConfig(vocab=50, tokens_per_frame=6, d_model=32, layers=2, heads=4, window=4)
  m = dyn.Dynamics(cfg)
  k = jax.random.PRNGKey(3)
  tok = jax.random.randint(k, (2, 4, 6), 0, 50)
  act = jax.random.uniform(k, (2, 4, 5), minval=-1, maxval=1)
  task = jnp.array([1, 2])
  p = m.init(k, tok, act, task)
  np.testing.assert_allclose(wm_eval.make_replay(m)(p, tok, act, task), m.apply(p, tok, act, task)[1], atol=1e-4)
  labels = np.array([[0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 1, 1]], np.float32)  # windows 0 and 3 succeed
  imagined = np.array([[0.1, 0.95, 0.2], [0.95, 0.1, 0.1], [0.2, 0.3, 0.89], [0.1, 0.2, 0.3]])
  real = np.array([[0.1, 0.2, 0.97], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1], [0.1, 0.92, 0.99]])
  r = wm_eval.done_open_loop(imagined, real, labels)
  assert r["windows_success"] == 2
  assert r["false_imagined"] == 0.5 and r["false_real"] == 0.0  # window 1 fires on imagined frames only
  assert r["recall_imagined"] == 0.5 and r["recall_real"] == 1.0  # window 0 at the wrong step still counts
  assert r["auc_real"] == 1.0 and r["auc_imagined"] == pytest.approx(14.5 / 27)  # ranks by hand
  none = wm_eval.done_open_loop(imagined[1:3], real[1:3], labels[1:3])
  assert none["recall_imagined"] is None and none["false_imagined"] == 0.5


def test_paper_preset_builds_and_lowers():
  """The paper-sized dynamics model (32 layers, 8 heads, d 512, 16 frames) builds and its training step
  lowers on CPU without allocating it; its parameter count is the reference code's ~200M."""
  from experiments.configs import world_model as wm_configs
  from rsr.world_model.tokenizer import TokenizerConfig

  c = wm_configs.get_config("paper")
  tcfg = TokenizerConfig(channels=tuple(c.tokenizer.channels), levels=tuple(c.tokenizer.levels))
  n = 2 * (128 // tcfg.downsample) ** 2  # two views of 16 x 16 tokens
  mcfg = dynamics_train.dynamics_config(c, tcfg.codebook_size, n, "action")
  assert (mcfg.layers, mcfg.heads, mcfg.d_model, mcfg.window) == (32, 8, 512, 16)
  model = dyn.Dynamics(mcfg)
  trn = dynamics_train.DynamicsTrainConfig(batch_size=1)
  state = jax.eval_shape(lambda k: dynamics_train.init_state(model, trn, k), jax.random.PRNGKey(0))
  count = dyn.param_count(state.params)
  print(f"paper preset dynamics: {count / 1e6:.1f}M parameters")
  assert 150e6 < count < 250e6
  batch = {"tokens": jax.ShapeDtypeStruct((1, 16, n), jnp.int32), "action": jax.ShapeDtypeStruct((1, 16, 5), jnp.float32),
           "task": jax.ShapeDtypeStruct((1,), jnp.int32), "done": jax.ShapeDtypeStruct((1, 16), jnp.float32),
           "mask": jax.ShapeDtypeStruct((1, 16), bool)}
  lowered = dynamics_train.make_train_step(model, trn).lower(state, batch)
  assert "dot_general" in lowered.as_text()[:10_000_000]
