"""Two processes on localhost (4 fake CPU devices each, jax.distributed) train the tiny world model and the
tiny policy with a checkpoint and a restore, and get the losses of one process with 8 devices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _worker(args, workdir, tiny_dataset, tiny_world_model):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  return subprocess.Popen([sys.executable, "-m", "tests.train.multiprocess_worker", *args,
                           f"--data_dir={tiny_dataset}", f"--world_model_dir={tiny_world_model}",
                           f"--workdir={workdir}", f"--out={workdir}/out.json"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs):
  logs = []
  for p in procs:
    out, _ = p.communicate(timeout=3000)
    logs.append(out)
    assert p.returncode == 0, out[-4000:]
  return logs


def test_two_processes_match_one_process_with_eight_devices(tmp_path, tiny_dataset, tiny_world_model):
  port = _free_port()
  multi, single = tmp_path / "multi", tmp_path / "single"
  multi.mkdir()
  single.mkdir()
  _finish([_worker(["--mode=multi", f"--process_id={i}", f"--port={port}"], multi, tiny_dataset,
                   tiny_world_model) for i in (0, 1)])
  _finish([_worker(["--mode=single"], single, tiny_dataset, tiny_world_model)])
  m, s = (json.loads((d / "out.json").read_text()) for d in (multi, single))
  assert (m["processes"], m["devices"], s["processes"], s["devices"]) == (2, 8, 1, 8)
  # The world model: 4 steps, the last 2 after a resume from the step-2 checkpoint; losses must move.
  assert len(m["dynamics"]) == len(s["dynamics"]) == 4
  np.testing.assert_allclose(m["dynamics"], s["dynamics"], rtol=1e-5, atol=1e-6)
  assert len(set(np.round(m["dynamics"], 6))) > 1
  # The policy: the restored checkpoint replays calls 3 and 4 exactly, in both runs.
  np.testing.assert_allclose(m["policy"]["losses"], s["policy"]["losses"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m["policy"]["after_restore"], m["policy"]["losses"][2:], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(s["policy"]["after_restore"], s["policy"]["losses"][2:], rtol=1e-6, atol=1e-7)
