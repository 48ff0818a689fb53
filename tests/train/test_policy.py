"""RL inside the world model: WorldModelEnv under the Env protocol, the fused PPO step on one device and
on eight, exact resume of the PPO stage, and a non-finite loss that stops a stage without saving."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from data_pipelines import open_dataset
from experiments.configs import policy as policy_configs
from rsr.stages import bc as stage_bc
from rsr.stages import environments, policy_config
from rsr.stages import ppo as stage_ppo
from rsr.stages import world_model as wm_stages
from rsr.train import loop
from rsr.train.checkpoint import Checkpointer
from rsr.utils import configs as configs_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(tiny_dataset, tiny_world_model, **kw):
  c = policy_configs.get_config("tiny")
  c.data_dir, c.world_model_dir = tiny_dataset, tiny_world_model
  for k, v in kw.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


@pytest.fixture(scope="module")
def wm(tiny_dataset, tiny_world_model):
  c = _config(tiny_dataset, tiny_world_model)
  ds = open_dataset(tiny_dataset)
  make_env, params, bank = environments.world_model_env(c, ds, progress=False)
  return c, ds, make_env, params, bank


@pytest.mark.parametrize("distance", ["features", "pixels", "tokens"])
def test_world_model_env_protocol(wm, distance):
  c, ds, _, params, bank = wm
  c = _config(c.data_dir, c.world_model_dir, **{"rewards.distance": distance})
  make_env, params, bank = environments.world_model_env(c, ds, progress=False)
  env = make_env(params)
  n = 4
  state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), n), jnp.full((n,), -1, jnp.int32))
  spec = env.observation_spec()
  for k, s in spec.items():
    assert state.obs[k].shape == (n,) + s.shape and state.obs[k].dtype == s.dtype, k
  # The first observation is the last real context frame, decoded: close to the dataset's frame.
  assert int(bank.task[0]) == 0 and bank.context.shape[1] == c.wm_env.context
  step = jax.jit(env.step)
  rewards, dones, dist = [], [], []
  for t in range(c.wm_env.horizon + 2):
    state = step(state, jnp.asarray(np.random.default_rng(t).uniform(-1, 1, (n, 5)), jnp.float32))
    rewards.append(np.asarray(state.reward))
    dones.append(np.asarray(state.done))
    dist.append(np.asarray(state.info["distance"]))
    done_prob = np.asarray(state.info["done_prob"])
    # Reward = w_align * (1 - d) + w_done * 1[done >= tau], with d in [0, 1].
    # (Where an episode just ended, AutoReset already shows the new episode's info.)
    want = 1.0 * (1 - dist[-1]) + 10.0 * (done_prob >= 0.9)
    live = ~dones[-1]
    np.testing.assert_allclose(rewards[-1][live], want[live], rtol=1e-5, atol=1e-5)
  dist = np.stack(dist)
  # frames differ from the goal, and change
  assert ((dist >= 0) & (dist <= 1)).all() and dist[~np.stack(dones)].std() > 0
  dones = np.stack(dones)
  assert dones[:c.wm_env.horizon].any(axis=0).all()  # every env ended by the horizon (truncation at least)


def test_change_alignment_pays_the_distance_change(wm):
  """rewards.align="change" pays d_{t-1} - d_t plus the done bonus: the first step's change from the start
  frame's distance (shown at reset), and after an auto-reset from the new start's."""
  c, ds, _, _, _ = wm
  c = _config(c.data_dir, c.world_model_dir, **{"rewards.align": "change"})
  make_env, params, _ = environments.world_model_env(c, ds, progress=False)
  env = make_env(params)
  n = 4
  state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), n), jnp.full((n,), -1, jnp.int32))
  prev = np.asarray(state.info["distance"])
  assert (prev > 0).all() and (prev <= 1).all()  # the start frame is not the goal
  step = jax.jit(env.step)
  changes = []
  for t in range(c.wm_env.horizon + 2):
    state = step(state, jnp.asarray(np.random.default_rng(t).uniform(-1, 1, (n, 5)), jnp.float32))
    d, done = np.asarray(state.info["distance"]), np.asarray(state.done)
    want = (prev - d) + 10.0 * (np.asarray(state.info["done_prob"]) >= 0.9)
    np.testing.assert_allclose(np.asarray(state.reward)[~done], want[~done], rtol=1e-5, atol=1e-5)
    changes.append((prev - d)[~done])
    prev = d
  assert np.abs(np.concatenate(changes)).max() > 1e-4  # the frames moved relative to the goal


def test_success_fill_pays_the_steps_left(wm):
  """rewards.success_fill: a success at step t also pays w_align (H - t), the level an aligned absorbing goal
  would earn to the horizon. With the threshold near 0 every env succeeds at its first step."""
  c, ds, _, _, _ = wm
  h = c.wm_env.horizon
  rewards = {}
  for fill in (False, True):
    cf = _config(c.data_dir, c.world_model_dir, **{"rewards.success_fill": fill, "rewards.w_align": 2.0,
                                                   "wm_env.done_threshold": 1e-6, "rewards.tau": 0.0})
    make_env, params, _ = environments.world_model_env(cf, ds, progress=False)
    env = make_env(params)
    while hasattr(env, "env"):
      env = env.env
    n = 3
    state = jax.jit(env.batch_reset)(jax.random.split(jax.random.PRNGKey(0), n), jnp.full((n,), -1, jnp.int32))
    state = jax.jit(env.batch_step)(state, jnp.zeros((n, 5), jnp.float32))
    assert np.asarray(state.info["success"]).all() and (np.asarray(state.info["step"]) == 1).all()
    want = 2.0 * (1 - np.asarray(state.info["distance"])) + 10.0 + (2.0 * (h - 1) if fill else 0.0)
    np.testing.assert_allclose(np.asarray(state.reward), want, rtol=1e-5)
    rewards[fill] = np.asarray(state.reward)
  np.testing.assert_allclose(rewards[True] - rewards[False], 2.0 * (h - 1), rtol=1e-5)
  with pytest.raises(ValueError, match="success_fill pays the level"):
    policy_config.check(_config(c.data_dir, c.world_model_dir,
                                **{"rewards.success_fill": True, "rewards.align": "change"}))


def test_exploit_guard_withholds_done_where_the_model_is_unsure(wm):
  """wm_env.max_surprise: once an imagined episode's summed -log(frame confidence) passes it, the step pays no
  done bonus and ends the episode as truncated. A deliberately corrupted world model (dynamics weights
  zeroed: every token uniform) has confidence 1 / codebook at every step, so its surprise grows by
  log(codebook) a step and the guard stops it at the second step; the trained model is more confident."""
  c, ds, _, _, _ = wm
  codebook = int(np.prod(policy_config.world_model_config(c.world_model_dir).tokenizer.levels))
  limit = 1.5 * np.log(codebook)
  c = _config(c.data_dir, c.world_model_dir, **{"wm_env.max_surprise": limit})
  make_env, params, _ = environments.world_model_env(c, ds, progress=False)
  broken = params.replace(dynamics=jax.tree_util.tree_map(jnp.zeros_like, params.dynamics))
  n = 4
  seen = {}
  for name, p in (("trained", params), ("broken", broken)):
    env = make_env(p)
    while hasattr(env, "env"):  # the WorldModelEnv itself: no auto-reset hiding the ended step's info
      env = env.env
    state = jax.jit(env.batch_reset)(jax.random.split(jax.random.PRNGKey(0), n), jnp.full((n,), -1, jnp.int32))
    step = jax.jit(env.batch_step)
    before, conf = np.zeros(n), []
    for t in range(3):
      state = step(state, jnp.asarray(np.random.default_rng(t).uniform(-1, 1, (n, 5)), jnp.float32))
      info = {k: np.asarray(v) for k, v in state.info.items()}
      np.testing.assert_allclose(info["surprise"], before - np.log(info["confidence"]), rtol=1e-5)
      before = info["surprise"]
      unsure = info["surprise"] > limit
      assert (info["unsure"] == unsure).all()
      assert (info["done_prob"][unsure] == 0).all() and not info["success"][unsure].any()
      assert np.asarray(state.done)[unsure].all() and info["truncated"][unsure].all()
      # the bonus withheld: the reward is the alignment term alone
      np.testing.assert_allclose(np.asarray(state.reward)[unsure], 1.0 - info["distance"][unsure], atol=1e-5)
      conf.append(info["confidence"])
      if name == "broken":
        assert unsure.all() == (t >= 1)
    seen[name] = np.stack(conf)
  np.testing.assert_allclose(seen["broken"], 1.0 / codebook, rtol=1e-4)
  assert seen["trained"].mean() > 2.0 / codebook


def test_mid_episode_starts_and_anchored_frames(wm):
  """wm_env.starts="any" draws context windows from inside episodes (not only their first frames), and
  render="anchored" shows the start's real last frame at reset and keeps the real pixels where imagination
  leaves the scene as it was; a start index >= 0 picks that bank entry."""
  c, ds, _, _, _ = wm
  c = _config(c.data_dir, c.world_model_dir, **{"wm_env.starts": "any", "wm_env.render": "anchored",
                                                 "wm_env.goal": "real"})
  make_env, params, bank = environments.world_model_env(c, ds, progress=False)
  tok_ds_eps = {}
  wcfg = policy_config.world_model_config(c.world_model_dir)
  tok_ds = wm_stages.tokenize_stage(wcfg, c.world_model_dir, ds, progress=False)
  offsets = set()
  for k in range(bank.size):
    ctx = np.asarray(bank.context[k])
    for i in range(tok_ds.num_episodes(c.wm_env.split)):
      e = tok_ds_eps.setdefault(i, tok_ds.read(c.wm_env.split, i)["tokens"])
      hits = [t for t in range(len(e) - len(ctx) + 1) if np.array_equal(e[t:t + len(ctx)], ctx)]
      if hits:
        offsets.add(hits[0])
        break
  assert max(offsets) > 0, f"every start is an episode's first frame (offsets {sorted(offsets)})"
  env = make_env(params)
  n = bank.size
  state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), n), jnp.arange(n, dtype=jnp.int32))
  np.testing.assert_array_equal(np.asarray(state.obs["rgb"]), np.asarray(bank.anchor[:, 0]))
  inner = state.inner
  decoded = np.asarray(jax.jit(lambda t: env.env.env.env._decode(t))(inner.tokens))
  real = np.asarray(bank.anchor).astype(np.float32) / 255.0
  np.testing.assert_allclose(decoded + np.asarray(inner.offset), real, atol=1e-5)


def test_world_model_env_chunks_step_the_same(wm):
  """wm_env.chunk steps the batch in pieces: the same frames, rewards and dones as one piece, also with a
  chunk that does not divide the batch (3 of 4: chunks of 2)."""
  c, ds, _, _, _ = wm
  n = 4
  runs = {}
  for chunk in (0, 2, 3):
    make_env, params, _ = environments.world_model_env(c, ds, progress=False, chunk=chunk)
    env = make_env(params)
    state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), n), jnp.full((n,), -1, jnp.int32))
    step = jax.jit(env.step)
    # The chunks are a loop (lax.map) in the step's program; one piece has none.
    assert ("scan[" in str(jax.make_jaxpr(env.step)(state, jnp.zeros((n, 5))))) == (chunk > 0)
    out = []
    for t in range(c.wm_env.horizon + 2):
      state = step(state, jnp.asarray(np.random.default_rng(t).uniform(-1, 1, (n, 5)), jnp.float32))
      out.append((np.asarray(state.obs["rgb"]), np.asarray(state.reward), np.asarray(state.done)))
    runs[chunk] = out
  for chunk in (2, 3):
    for (rgb0, r0, d0), (rgb, r, d) in zip(runs[0], runs[chunk]):
      assert np.abs(rgb0.astype(int) - rgb.astype(int)).max() <= 1  # (float reassociation, before rounding)
      np.testing.assert_allclose(r0, r, rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(d0, d)


def test_auto_chunk_is_cpu_only():
  """wm_env.chunk = -1 (the cpu preset's) chunks on one CPU device only: on one GPU the chunks ran 2.4x
  slower than the whole batch; a mesh always steps its (already split) batch whole."""
  assert policy_config.imagined_chunk(policy_config.AUTO_CHUNK, 1, "cpu") == policy_config.CPU_CHUNK == 8
  assert policy_config.imagined_chunk(policy_config.AUTO_CHUNK, 1, "gpu") == 0
  assert policy_config.imagined_chunk(policy_config.AUTO_CHUNK, 1, "tpu") == 0
  assert policy_config.imagined_chunk(4, 1, "gpu") == 4  # a chunk set by hand is the user's choice
  assert policy_config.imagined_chunk(policy_config.AUTO_CHUNK, 8, "cpu") == 0
  assert policy_config.imagined_chunk(4, 2, "gpu") == 0
  from experiments.configs import policy as policy_configs
  assert policy_configs.get_config("cpu").wm_env.chunk == policy_config.AUTO_CHUNK


def test_world_model_env_rejects_what_cannot_work(wm):
  c, ds, _, _, _ = wm
  with pytest.raises(ValueError, match="handcrafted exists only in the simulator"):
    policy_config.check(_config(c.data_dir, c.world_model_dir, reward="handcrafted"))
  with pytest.raises(ValueError, match="env=sim pays the simulator's handcrafted reward"):
    policy_config.check(_config(c.data_dir, c.world_model_dir, env="sim", reward="endogenous"))
  for chunk in (3, -2):
    with pytest.raises(ValueError, match=f"wm_env.chunk must be -1 .* or divide ppo.num_envs = 8, got {chunk}"):
      policy_config.check(_config(c.data_dir, c.world_model_dir, **{"wm_env.chunk": chunk}))
  policy_config.check(_config(c.data_dir, c.world_model_dir, **{"wm_env.chunk": policy_config.AUTO_CHUNK}))
  with pytest.raises(ValueError, match="eval.splits: unknown split ood_sky; valid: id, ood_color"):
    policy_config.check(_config(c.data_dir, c.world_model_dir, **{"eval.splits": "id,ood_sky"}))
  with pytest.raises(ValueError, match="unknown stage.s. dpo; valid: bc, ppo"):
    policy_config.check(_config(c.data_dir, c.world_model_dir, stages="bc,dpo"))
  with pytest.raises(ValueError, match=r"wm_env.max_surprise must be a number >= 0, got -1.0"):
    policy_config.check(_config(c.data_dir, c.world_model_dir, **{"wm_env.max_surprise": -1.0}))
  with pytest.raises(ValueError, match="reward align must be one of"):
    policy_config.check(_config(c.data_dir, c.world_model_dir, **{"rewards.align": "delta"}))
  bad = _config(c.data_dir, c.world_model_dir, world_model_dir=os.path.join(c.data_dir, "nowhere"))
  with pytest.raises(ValueError, match="no .*config.json"):
    environments.world_model_env(bad, ds, progress=False)


def test_learned_reward_runs_the_reward_head(wm):
  c, ds, _, _, _ = wm
  c = _config(c.data_dir, c.world_model_dir, reward="learned")
  make_env, params, _ = environments.world_model_env(c, ds, progress=False)
  env = make_env(params)
  state = env.reset(jax.random.split(jax.random.PRNGKey(1), 2), jnp.full((2,), -1, jnp.int32))
  state = jax.jit(env.step)(state, jnp.zeros((2, 5)))
  assert np.isfinite(np.asarray(state.reward)).all()
  head = params.reward_head
  assert head is not None  # the head's own prediction, not the endogenous formula
  assert not np.allclose(np.asarray(state.reward), 1.0 - np.asarray(state.info["distance"]))


_EIGHT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from data_pipelines import open_dataset
from experiments.configs import policy as policy_configs
from rsr.agents import ppo
from rsr.agents.networks import ActorCritic, init_params
from rsr.stages import environments, policy_config
from rsr.train import fused, sharding

c = policy_configs.get_config("tiny")
c.data_dir, c.world_model_dir = sys.argv[1], sys.argv[2]
ds = open_dataset(c.data_dir)
make_env, env_params, _ = environments.world_model_env(c, ds, progress=False)
fcfg = policy_config.ppo_config(c)
acfg = policy_config.agent_config(c)
model = ActorCritic(acfg)
params = init_params(acfg, jax.random.PRNGKey(0), (ds.spec.height, ds.spec.width))
opt = ppo.make_optimizer(fcfg.ppo)
out = {}
for n in (1, 8):
  mesh = sharding.make_mesh(n)
  state = jax.jit(lambda ep: fused.init_state(make_env(ep), params, opt, jax.random.PRNGKey(1),
                                              jnp.full((fcfg.num_envs,), -1, jnp.int32), fcfg.num_envs))(env_params)
  state = fused.place(state, mesh, fcfg.num_envs)
  ep = sharding.replicate(env_params, mesh)
  step = fused.make_fused_step(make_env, model.apply, opt, fcfg, sharding.batch_constraint(mesh, fcfg.num_envs))
  losses = []
  for i in range(2):
    state, m = step(state, ep, critic_only=(i == 0))
    losses.append(float(m["loss"]))
  shards = sorted({len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(state.env_state)
                   if x.ndim and x.sharding.spec and x.sharding.spec[0] == "data"})
  flat = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(jax.device_get(state.params))])
  out[n] = {"losses": losses, "params": flat.tolist()[:2000], "norm": float(np.linalg.norm(flat)),
            "devices": shards}
print("RESULT " + json.dumps(out))
"""


def test_fused_step_same_result_on_eight_devices(tiny_dataset, tiny_world_model):
  """The same global batch on a mesh of 1 and of 8 (fake CPU) devices: same losses and parameters."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  r = subprocess.run([sys.executable, "-c", _EIGHT, tiny_dataset, tiny_world_model], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=1800)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.split("RESULT ", 1)[1])
  one, eight = out["1"], out["8"]
  assert eight["devices"] == [8]  # the env batch really was sharded over the 8 devices
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=2e-4, atol=1e-5)
  np.testing.assert_allclose(eight["params"], one["params"], rtol=1e-3, atol=1e-5)
  assert abs(eight["norm"] - one["norm"]) < 1e-3 * one["norm"]


def _ppo_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(ln) for ln in f]
  return [{k: v for k, v in ln.items() if k != "train/env_steps_per_s"} for ln in lines if ln["stage"] == "ppo"]


def test_ppo_stage_resumes_exactly(tiny_dataset, tiny_world_model, tmp_path):
  """Killed after 2 of 4 compiled calls and re-run: the metrics equal an uninterrupted run's."""
  c = _config(tiny_dataset, tiny_world_model)
  c.eval.splits = "id"
  c.eval.videos = 0
  c.ppo.eval_every = 4  # the simulator evaluation once, at the end
  ds = open_dataset(tiny_dataset)
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  stage_bc.run(c, straight, ds, progress=False)
  shutil.copytree(straight, killed)  # one BC start for both, as reproduce shares it
  a = stage_ppo.run(c, straight, ds, progress=False)
  assert stage_ppo.run(c, killed, ds, progress=False, max_steps_this_run=2) == {}
  b = stage_ppo.run(c, killed, ds, progress=False)
  la, lb = _ppo_lines(straight), _ppo_lines(killed)
  assert [ln["step"] for ln in la if "train/loss" in ln] == [1, 2, 3, 4] and la == lb
  assert a == b and "sim_id/success" in a
  assert {"train/approx_kl", "train/entropy", "train/value_loss", "train/episode_return",
          "train/success"} <= set([ln for ln in la if "train/loss" in ln][-1])


@struct.dataclass
class _Toy:
  step: jax.Array
  w: jax.Array


def test_non_finite_loss_stops_without_saving(tmp_path):
  def step_fn(state, _):
    w = state.w + 1.0
    loss = jnp.where(state.step >= 3, jnp.nan, w.sum())
    return _Toy(step=state.step + 1, w=jnp.where(state.step >= 3, jnp.nan, w)), {"loss": loss}

  init = _Toy(step=jnp.zeros((), jnp.int32), w=jnp.zeros((2,)))
  with pytest.raises(FloatingPointError, match="loss is nan at step 4; stopped without saving"):
    loop.run("toy", str(tmp_path), init, step_fn, lambda s: {}, loop.Schedule(10, 100, 1), {"toy": 1},
             progress=False)
  ckpt = Checkpointer(str(tmp_path / "checkpoints" / "toy"), compat={"toy": 1})
  assert ckpt.latest_step() == 3
  state, _ = ckpt.restore(init)
  ckpt.close()
  assert np.isfinite(np.asarray(state.w)).all() and float(state.w[0]) == 3.0


def test_train_policy_binary_tiny(tiny_dataset, tiny_world_model, tmp_path):
  """The binary as a user runs it: BC then PPO in the world model; metrics, TensorBoard, videos, table."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  r = subprocess.run([sys.executable, "-m", "experiments.train_policy", "--config=experiments/configs/policy.py:tiny",
                      f"--config.data_dir={tiny_dataset}", f"--config.world_model_dir={tiny_world_model}",
                      "--config.eval.splits=id,ood_color", "--config.eval.videos=1", f"--workdir={tmp_path}"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
  assert r.returncode == 0, r.stderr[-3000:]
  for f in ("config.json", "metrics.jsonl", "videos/sim_id.gif", "videos/sim_ood_color.gif", "videos/imagined.gif",
            "tables/ppo.json"):
    assert os.path.getsize(tmp_path / f) > 0, f
  for stage in ("bc", "ppo"):
    assert list((tmp_path / "tb" / stage).glob("events.out.tfevents.*")), stage
  table = json.loads((tmp_path / "tables/ppo.json").read_text())
  assert table["updates"] == 4 and 0.0 <= table["sim_ood_color/success"] <= 1.0
  assert "workdir:" in r.stdout


def test_train_policy_binary_bad_flags(tiny_dataset, tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  r = subprocess.run([sys.executable, "-m", "experiments.train_policy", "--config=experiments/configs/policy.py:tiny",
                      f"--config.data_dir={tiny_dataset}", "--config.env=sim", "--config.reward=endogenous",
                      f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode != 0
  assert "env=sim pays the simulator's handcrafted reward" in r.stderr and "Traceback" not in r.stderr


def test_config_written_before_speed_fields_still_loads(tmp_path):
  """A run's config.json from before `ppo.microbatch` and `wm_env.chunk` existed (evaluate reads it to
  check the checkpoint): whole minibatches and batches, and the same checkpoint fields as a config that
  names them."""
  c = policy_configs.get_config("cpu")
  raw = c.to_dict()
  del raw["ppo"]["microbatch"], raw["wm_env"]["chunk"]
  path = tmp_path / "config.json"
  path.write_text(json.dumps(raw))
  old = configs_lib.read(str(path), "policy")
  assert policy_config.ppo_config(old).ppo.microbatch == 0
  assert stage_ppo.compat(old) == stage_ppo.compat(c)
