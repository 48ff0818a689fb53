"""One process of tests/train/test_multiprocess.py (run as `python -m tests.train.multiprocess_worker`).

    --mode=multi --process_id=P --port=N   one of 2 processes, 4 fake CPU devices each (jax.distributed)
    --mode=single                          1 process with 8 fake CPU devices, the same global batches

Trains the tiny world model's dynamics (the shared loop: sharded batches from each process's own data,
orbax checkpoints from every process) for 4 steps with a stop after 2 and a resume; then the tiny policy's
fused PPO step for 2 calls, a checkpoint, 2 more calls, and a restore of the checkpoint followed by the
same 2 calls. Process 0 writes the losses as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--mode", choices=("multi", "single"), required=True)
  ap.add_argument("--process_id", type=int, default=0)
  ap.add_argument("--port", type=int, default=0)
  ap.add_argument("--data_dir", required=True)
  ap.add_argument("--world_model_dir", required=True)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--out", required=True)
  a = ap.parse_args()
  devices = 4 if a.mode == "multi" else 8
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  from rsr.train import sharding
  if a.mode == "multi":
    sharding.initialize(f"localhost:{a.port}", 2, a.process_id)

  import jax
  import numpy as np

  assert jax.device_count() == 8, jax.device_count()
  out = {"processes": jax.process_count(), "devices": jax.device_count(),
         "dynamics": _dynamics(a, two_process_data=a.mode == "single"), "policy": _policy(a)}
  if jax.process_index() == 0:
    with open(a.out, "w") as f:
      json.dump(out, f)
  del np


class _TwoProcessLoader:
  """In one process, the global batches that 2 processes assemble: process 0's part, then process 1's."""

  def __init__(self, make):
    self.parts = [make(p) for p in (0, 1)]

  def init_state(self):
    return self.parts[0].init_state()

  def iterate(self, state, sharding=None):
    import jax
    import numpy as np

    its = [p.iterate(state) for p in self.parts]
    for (b0, s), (b1, _) in zip(*its):
      b = {k: np.concatenate([b0[k], b1[k]]) for k in b0}
      yield ({k: jax.device_put(v, sharding) for k, v in b.items()} if sharding is not None else b), s


def _dynamics(a, two_process_data: bool) -> list[float]:
  import jax

  from data_pipelines import tokenized
  from data_pipelines.loader import WindowConfig, WindowLoader
  from experiments.configs import world_model as wm_configs
  from rsr.stages import tokenizer as stage_tokenizer
  from rsr.train import loop, sharding
  from rsr.world_model import dynamics as dyn
  from rsr.world_model import dynamics_train

  c = wm_configs.get_config("tiny")
  tok_ds = tokenized.open_tokens(os.path.join(a.world_model_dir, "tokens"))
  vocab = stage_tokenizer.tokenizer_config(c).codebook_size
  mcfg = dynamics_train.dynamics_config(c, vocab, tok_ds.tokens_per_frame, "action")
  model = dyn.Dynamics(mcfg)
  trn = dynamics_train.DynamicsTrainConfig(batch_size=8, steps=4, lr=1e-3, warmup=1)
  win = WindowConfig(batch_size=8, window=mcfg.window)
  if two_process_data:
    loader = _TwoProcessLoader(lambda p: WindowLoader(tok_ds, "train", win, seed=0, process_index=p,
                                                      process_count=2))
  else:
    loader = WindowLoader(tok_ds, "train", win, seed=0)
  workdir = os.path.join(a.workdir, "dynamics")
  mesh = sharding.make_mesh(model=2)  # data 4 x model 2, FSDP: both axes in use
  kw = dict(stage="dynamics", workdir=workdir, loader=loader, step_fn=dynamics_train.make_train_step(model, trn),
            evaluate=lambda s: {}, schedule=loop.Schedule(4, 100, 2, log_every=1), compat={"test": 1},
            batch_fn=lambda b: {k: b[k] for k in ("tokens", "action", "task", "done", "mask")},
            progress=False, mesh=mesh, fsdp=True)
  init = lambda: dynamics_train.init_state(model, trn, jax.random.PRNGKey(0))  # noqa: E731 (donated)
  loop.run(state=init(), max_steps_this_run=2, **kw)  # "killed" after step 2 (checkpointed)
  loop.run(state=init(), **kw)  # the same command again: restores step 2, runs 3 and 4
  if jax.process_index() != 0:
    return []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(ln) for ln in f if ln.strip()]
  return [r["train/loss"] for r in rows if "train/loss" in r]


def _policy(a) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from data_pipelines import open_dataset
  from experiments.configs import policy as policy_configs
  from rsr.agents import ppo
  from rsr.agents.networks import ActorCritic, init_params
  from rsr.stages import environments, policy_config
  from rsr.train import fused, sharding
  from rsr.train.checkpoint import Checkpointer

  c = policy_configs.get_config("tiny")
  c.data_dir, c.world_model_dir = a.data_dir, a.world_model_dir
  ds = open_dataset(c.data_dir)
  fcfg = policy_config.ppo_config(c)
  acfg = policy_config.agent_config(c)
  model = ActorCritic(acfg)
  make_env, env_params, _ = environments.world_model_env(c, ds, progress=False)
  opt = ppo.make_optimizer(fcfg.ppo)
  params = init_params(acfg, jax.random.PRNGKey(1), (ds.spec.height, ds.spec.width))
  state = jax.jit(lambda ep, s, k: fused.init_state(make_env(ep), params, opt, k, s, fcfg.num_envs))(
      env_params, jnp.zeros((fcfg.num_envs,), jnp.int32), jax.random.PRNGKey(2))
  mesh = sharding.make_mesh()
  state = fused.place(state, mesh, fcfg.num_envs)
  env_params = sharding.replicate(env_params, mesh)
  step = fused.make_fused_step(make_env, model.apply, opt, fcfg, sharding.batch_constraint(mesh, fcfg.num_envs))
  losses = []

  def call(s):
    s, m = step(s, env_params)
    losses.append(float(m["loss"]))
    return s

  for _ in range(2):
    state = call(state)
  ckpt = Checkpointer(os.path.join(a.workdir, "ppo"), compat={"test": 1})
  ckpt.save(2, state, {})
  target = jax.tree_util.tree_map(jnp.zeros_like, state)  # the layout to restore into (state is donated next)
  for _ in range(2):
    state = call(state)
  restored, _ = ckpt.restore(target)
  ckpt.close()
  for _ in range(2):
    restored = call(restored)
  del np
  return {"losses": losses[:4], "after_restore": losses[4:]}


if __name__ == "__main__":
  sys.exit(main())
