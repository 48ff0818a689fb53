"""The `model` axis: FSDP shards the paper world model's parameters and optimizer state in proportion to
the axis size, and a training step compiles on an 8-device CPU mesh with the parameters staying sharded.

Runs in a subprocess: the 8 fake CPU devices must be set before jax starts, and the session's jax is
already running on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = r'''
import dataclasses, json, os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax, jax.numpy as jnp
from experiments.configs import world_model as wmc
from rsr.train import sharding
from rsr.world_model import dynamics as dyn, dynamics_train

out = {"devices": jax.device_count()}
c = wmc.get_config("paper")
mcfg = dynamics_train.dynamics_config(c, 15360, 512, "action")
trn = dynamics_train.DynamicsTrainConfig(batch_size=8, steps=10)
init = lambda m: (lambda k: dynamics_train.init_state(m, trn, k))
paper = jax.eval_shape(init(dyn.Dynamics(mcfg)), jax.random.PRNGKey(0))
out["params"] = dyn.param_count(paper.params)
for m in (1, 2, 4, 8):
  sh = sharding.state_shardings(paper, sharding.make_mesh(model=m), fsdp=m > 1)
  out[f"model{m}"] = [sharding.bytes_per_device(paper.params, sh.params),
                      sharding.bytes_per_device(paper.opt_state, sh.opt_state)]

# A training step of the paper's width (2 layers: the 32-layer compile takes minutes; bench --only=scaling
# compiles the full model) on data 1 x model 8, FSDP: it compiles, and the parameters leave it sharded.
small = dyn.Dynamics(dataclasses.replace(mcfg, layers=2))
mesh = sharding.make_mesh(model=8)
lowered, state, sh = dynamics_train.lower_sharded_step(small, trn, mesh, True, 8)
compiled = lowered.compile()
out_sh = compiled.output_shardings[0]
out["step_params_in"] = sharding.bytes_per_device(state.params, sh.params)
out["step_params_out"] = sharding.bytes_per_device(state.params, out_sh.params)
out["step_params_replicated"] = sharding.bytes_per_device(
    state.params, sharding.state_shardings(state.params, mesh, fsdp=False))
print("RESULT " + json.dumps(out))
'''


def test_fsdp_shrinks_the_paper_model_per_device_and_a_step_compiles_on_8_devices():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
  assert out["devices"] == 8
  assert 150e6 < out["params"] < 250e6  # the paper's ~200M
  full_p, full_o = out["model1"]
  assert full_p >= 4 * out["params"]  # f32, replicated: every device holds all of it
  for m in (2, 4, 8):
    p, o = out[f"model{m}"]
    # In proportion to the axis size, up to the small arrays (norms, biases) that stay replicated.
    assert full_p / m <= p < 1.05 * full_p / m, (m, p, full_p)
    assert full_o / m <= o < 1.05 * full_o / m, (m, o, full_o)
  # XLA may split a few more small arrays in its output; never fewer (rsr/train/loop.py re-places them).
  assert out["step_params_out"] <= out["step_params_in"] < out["step_params_replicated"] / 7
