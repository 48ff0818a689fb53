"""The `dyna` stage: PPO in the world model, refined between rounds on the policy's own real episodes.

RoboScape-R trains its world model once, on demonstrations; a policy trained inside it finds the states the
model gets wrong and is paid for them. Dyna (Sutton 1990; MBPO, Janner et al. 2019; DreamerV3, Hafner et
al. 2023) alternates acting in the world and learning in the model. Each of `dyna.rounds` rounds:

  a. PPO inside the current world model with the endogenous reward (rsr/stages/ppo.py), ppo.updates / rounds
     updates, from the previous round's policy (round 0: the BC start);
  b. `dyna.episodes` real-simulator episodes of that policy (its sampled actions, id scenes). No reward is
     used: their frames and actions, and the simulator's success flag, which labels the done head as it
     labels the demonstrations';
  c. `dyna.wm_steps` steps fine-tuning the dynamics and done head (the tokenizer stays frozen) on the
     demonstrations' train split with every round's episodes so far appended `dyna.repeat` times.

The last round skips b and c. Reports per round: the exploitation gap of the round's PPO policy in the
round's model (imagined vs real success from the same starts, eval.gap_starts), and the model's open loop on
the round's real episodes before it trains on them (how wrong it is where the policy goes).

    WORKDIR/dyna/round_R/   checkpoints/ppo, tables/ppo.json, metrics.jsonl (the round's PPO, as ppo.run
                            writes them); episodes.npz (atomic); world_model/checkpoints/dynamics (the
                            fine-tuned model of round R + 1); summary.json (written last: the round is done)
    WORKDIR/tables/dyna.json  every round's summary and the real-episode budget

Every piece resumes: PPO and the fine-tuning in the shared loop, the episodes by their file, a round by its
summary. A killed run re-run continues exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines import tokenized
from data_pipelines.loader import WindowConfig, WindowLoader
from rsr.agents.networks import ActorCritic
from rsr.envs import registry
from rsr.envs import rollout as rollout_lib
from rsr.envs.tabletop import scenes as scenes_lib
from rsr.envs.tabletop.tasks import TASKS
from rsr.stages import bc as stage_bc
from rsr.stages import environments, policy_config
from rsr.stages import ppo as stage_ppo
from rsr.stages import tokenizer as stage_tokenizer
from rsr.stages import world_model as wm_stages
from rsr.train import loop, sharding
from rsr.utils import media
from rsr.world_model import dynamics as dyn
from rsr.world_model import dynamics_train, generate
from rsr.world_model import evaluate as wm_eval


def round_config(config, r: int) -> ml_collections.ConfigDict:
  """The PPO config of round r: its share of ppo.updates; the critic warm-up in round 0 only (later rounds
  start from a trained critic)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.ppo.updates = updates_per_round(config)
    if r > 0:
      c.ppo.critic_warmup = 0
  return c


def updates_per_round(config) -> int:
  return -(-config.ppo.updates // config.dyna.rounds)


def round_dir(workdir: str, r: int) -> str:
  return os.path.join(workdir, "dyna", f"round_{r}")


def real_episodes(config) -> int:
  """The real-simulator episodes a finished dyna stage used (the last round collects none)."""
  return config.dyna.episodes * (config.dyna.rounds - 1)


def run(config, workdir: str, ds, progress: bool = True, max_steps_this_run: int | None = None) -> dict:
  """Every round (module docstring); {} when stopped early by max_steps_this_run (each round's PPO and
  fine-tuning get it, as a kill would stop either)."""
  policy_config.check(config, ("dyna",), ds)
  if len(ds.frame_keys) != 1:
    raise ValueError(f"the dyna stage tokenizes one camera; the dataset has {len(ds.frame_keys)} "
                     f"({', '.join(ds.frame_keys)})")
  hw = (ds.spec.height, ds.spec.width)
  mesh = sharding.make_mesh()
  chunk = policy_config.imagined_chunk(config.wm_env.chunk, mesh.devices.size, jax.default_backend())
  base = environments.world_model_parts(config, ds, progress, chunk=chunk)
  wcfg, tok_ds = base.config, base.tokens
  model = ActorCritic(policy_config.agent_config(config))
  dyn_model = dyn.Dynamics(dynamics_train.dynamics_config(wcfg, vocab_size(wcfg), tok_ds.tokens_per_frame, "action"))

  params = stage_bc.load(config, workdir, hw)
  dyn_params = base.params.dynamics
  collected: list[dict] = []
  rounds = []
  for r in range(config.dyna.rounds):
    rdir = round_dir(workdir, r)
    cfg_r = round_config(config, r)
    wm = dataclasses.replace(base, params=base.params.replace(dynamics=dyn_params))
    done_path = os.path.join(rdir, "summary.json")
    if os.path.isfile(done_path):
      with open(done_path) as f:
        summary = json.load(f)
    else:
      summary = {"round": r, "ppo": _ppo_round(cfg_r, rdir, ds, progress, max_steps_this_run, mesh, wm, params, hw)}
      if not summary["ppo"]:
        return {}
    params, _ = stage_ppo.load_params(cfg_r, rdir, hw)
    if r == config.dyna.rounds - 1:
      _finish_round(done_path, summary)
      rounds.append(summary)
      break
    episodes = collect(config, ds, model.apply, params, base.encode_video, r, os.path.join(rdir, "episodes.npz"))
    if "own_rollouts" not in summary:
      summary["own_rollouts"] = own_rollouts(wcfg, dyn_model, dyn_params, base.decode, episodes,
                                             TASKS[config.task].task_id)
    collected += split_episodes(episodes, config.task)
    union = tokenized.with_episodes(tok_ds, "train", collected * config.dyna.repeat, _union_tag(r))
    dyn_params, fine = finetune(config, wcfg, os.path.join(rdir, "world_model"), union, dyn_model, dyn_params, r,
                                progress, max_steps_this_run)
    if fine is None:
      return {}
    summary.setdefault("finetune", fine)
    _finish_round(done_path, summary)
    rounds.append(summary)

  out = {"rounds": rounds, "real_episodes": real_episodes(config), "updates": updates_per_round(config) * len(rounds),
         "task": config.task, **{k: v for k, v in rounds[-1]["ppo"].items() if k.startswith("sim_")}}
  if sharding.lead():
    media.write_json(os.path.join(workdir, "tables", "dyna.json"), out)
  return out


def _ppo_round(cfg_r, rdir: str, ds, progress: bool, max_steps_this_run, mesh, wm, start, hw) -> dict:
  """Round r's PPO stage, or the summary it wrote if it finished (a resumed round does not evaluate again)."""
  path = os.path.join(rdir, "tables", "ppo.json")
  if os.path.isfile(path):
    _, step = stage_ppo.load_params(cfg_r, rdir, hw)  # the checkpoint is this config's (else a ValueError)
    if step == stage_ppo.calls(cfg_r):
      with open(path) as f:
        return json.load(f)
  return stage_ppo.run(cfg_r, rdir, ds, progress, max_steps_this_run, mesh=mesh, wm=wm, start=start)


def _finish_round(path: str, summary: dict) -> None:
  if sharding.lead() and not os.path.isfile(path):
    media.write_json(path, summary)


def collect(config, ds, apply_fn, params, encode_video, r: int, path: str) -> dict[str, np.ndarray]:
  """Round r's real episodes of the policy `params` (dyna.episodes, id scenes; read back if `path` exists):
  {frames uint8[K, T + 1, H, W, 3], tokens i32[K, T + 1, N], action f32[K, T, A], success bool[K, T + 1],
  state f32[K, T + 1, S], length i32[K] (steps taken)}, written atomically to `path`."""
  if os.path.isfile(path):
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  env = registry.make(config.task, height=ds.spec.height, width=ds.spec.width)
  key = rollout_lib.stream_key(config.seed, "dyna", f"round{r}")
  scenes = scenes_lib.sample_batch(jax.random.fold_in(key, 1), "id", config.dyna.episodes)
  sampled = lambda p: stage_ppo.agent_policy(apply_fn, p, False, sample=True)  # noqa: E731
  ep = jax.jit(lambda p, k, s: rollout_lib.rollout(env, sampled(p), k, s, env.horizon, record=True,
                                                   trajectory=True))(params, key, scenes)
  frames = np.asarray(ep.frames["rgb"]).swapaxes(0, 1)
  out = {"frames": frames, "tokens": encode_video(frames).astype(np.int32),
         "action": np.asarray(ep.trajectory.action).swapaxes(0, 1),
         "success": np.asarray(ep.trajectory.success).T, "state": np.asarray(ep.trajectory.obs["state"]).swapaxes(0, 1),
         "length": np.asarray(ep.length, np.int32)}
  if sharding.lead():
    media.write_npz(path, out)
  return out


def split_episodes(episodes: dict[str, np.ndarray], task: str) -> list[dict[str, np.ndarray]]:
  """collect's batch -> one dataset episode each (tokenized.TokenDataset.read's fields): observations 0..length,
  the action taken at each (zeros after the last, as the dataset's last step has none that it saw), no
  reward (the Dyna loop uses none)."""
  out = []
  for i, n in enumerate(episodes["length"]):
    steps = int(n) + 1
    action = np.zeros((steps, episodes["action"].shape[-1]), np.float32)
    action[:n] = episodes["action"][i, :n]
    out.append({"tokens": episodes["tokens"][i, :steps], "action": action, "reward": np.zeros(steps, np.float32),
                "success": episodes["success"][i, :steps], "state": episodes["state"][i, :steps],
                "task": np.full(steps, TASKS[task].task_id, np.int32)})
  return out


def own_rollouts(wcfg, dyn_model: dyn.Dynamics, dyn_params, decode, episodes: dict[str, np.ndarray],
                 task_id: int) -> dict:
  """The world model's open loop on the policy's real episodes (eval_context real frames, then eval_horizon
  imagined with the episode's actions): mean PSNR and its gain over copy-last-frame and over shuffled
  actions, as the dynamics stage reports them on held-out demonstrations."""
  d = wcfg.dynamics_train
  context, horizon = d.eval_context, d.eval_horizon
  keep = np.flatnonzero(episodes["length"] + 1 >= context + horizon)
  if len(keep) < 2:
    return {"episodes": int(len(keep))}
  t = context + horizon
  tb = {"tokens": episodes["tokens"][keep, :t], "action": episodes["action"][keep, :t],
        "task": np.full(len(keep), task_id, np.int32)}
  r = wm_eval.open_loop(dyn_model, dyn_params, decode, tb, episodes["frames"][keep, :t, None], context, horizon,
                        generate.GenerateConfig.from_config(wcfg.generate), jax.random.PRNGKey(11), 1)
  return {"episodes": int(len(keep)), "psnr": float(r["psnr"].mean()),
          "gain_over_copy": float(r["psnr"].mean() - r["psnr_copy"].mean()),
          "gain_over_shuffled": float(r["psnr"].mean() - r["psnr_shuffled"].mean())}


def finetune(config, wcfg, directory: str, union: tokenized.TokenDataset, model: dyn.Dynamics, params, r: int,
             progress: bool = True, max_steps_this_run: int | None = None) -> tuple[Any, dict | None]:
  """`dyna.wm_steps` steps of the dynamics stage's losses on `union`'s train split, from `params` (a fresh
  optimizer at dyna.wm_lr, cosine to 0). -> (fine-tuned parameters, the last step's losses), or (params, None)
  when stopped early. Resumable (WorldModel DIRECTORY/checkpoints/dynamics)."""
  d = wcfg.dynamics_train
  trn = dataclasses.replace(wm_stages.train_config(wcfg), steps=config.dyna.wm_steps, lr=config.dyna.wm_lr,
                            warmup=0)
  win = WindowConfig(batch_size=d.batch_size, window=model.cfg.window, done_label=d.done_label,
                     ramp_steps=d.ramp_steps)
  loader = WindowLoader(union, "train", win, seed=config.seed + 1000 + r)
  opt = dynamics_train.optimizer(trn)
  params = jax.tree_util.tree_map(jnp.array, params)  # a copy: the train step donates its state
  state = dynamics_train.DynamicsState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params),
                                       rng=jax.random.PRNGKey(config.seed + 1000 + r))
  step_fn = dynamics_train.make_train_step(model, trn)
  last_loss: dict = {}

  def train_step(state, batch):
    state, m = step_fn(state, batch)
    last_loss.update(m)
    return state, m

  compat = _finetune_compat(config, wcfg, model.cfg, union.meta["fingerprint"], r)
  state, _, finished = loop.run(
      "dynamics", directory, state, train_step, lambda s: {},
      loop.Schedule(trn.steps, trn.steps, max(1, trn.steps // 4)), compat, loader=loader,
      batch_fn=lambda b: {k: b[k] for k in ("tokens", "action", "task", "done", "mask")},
      progress=progress, max_steps_this_run=max_steps_this_run)
  if not finished:
    return params, None
  return state.params, {k: float(last_loss[k]) for k in ("loss", "ce", "done_mse", "changed_acc") if k in last_loss}


def _union_tag(r: int) -> str:
  return f"dyna{r}"


def _finetune_compat(config, wcfg, mcfg: dyn.DynamicsConfig, tokens: str, r: int) -> dict:
  d = config.dyna
  return {**wm_stages.dynamics_compat(wcfg, mcfg, tokens, "dynamics"), "round": r, "steps": d.wm_steps,
          "lr": d.wm_lr, "repeat": d.repeat, "episodes": d.episodes}


def vocab_size(wcfg) -> int:
  return stage_tokenizer.tokenizer_config(wcfg).codebook_size


def load_dynamics_round(config, workdir: str, r: int, tok_ds: tokenized.TokenDataset):
  """The dynamics parameters fine-tuned after round r (what round r + 1 trained in); tok_ds: the world
  model's own token dataset."""
  wdir = os.path.abspath(config.world_model_dir)
  wcfg = policy_config.world_model_config(wdir)
  mcfg = dynamics_train.dynamics_config(wcfg, vocab_size(wcfg), tok_ds.tokens_per_frame, "action")
  directory = os.path.join(round_dir(workdir, r), "world_model", "checkpoints", "dynamics")
  compat = _finetune_compat(config, wcfg, mcfg, f"{tok_ds.meta['fingerprint']}+{_union_tag(r)}", r)
  return wm_stages.load_dynamics(wcfg, wdir, tok_ds, vocab_size(wcfg), directory=directory, compat=compat)[1]


def load_params(config, workdir: str, hw: tuple[int, int]) -> tuple[Any, int, int]:
  """(actor-critic parameters, round, PPO step) of the latest round with a PPO checkpoint."""
  for r in reversed(range(config.dyna.rounds)):
    if os.path.isdir(os.path.join(round_dir(workdir, r), "checkpoints", "ppo")):
      params, step = stage_ppo.load_params(round_config(config, r), round_dir(workdir, r), hw)
      return params, r, step
  raise ValueError(f"no PPO checkpoint in {os.path.join(workdir, 'dyna')}: the dyna stage has not saved one")

