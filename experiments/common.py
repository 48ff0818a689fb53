"""What every experiment binary shares: turning bad input into a usage message instead of a traceback, the
multi-process flags (--coordinator_address, --num_processes, --process_id), and the run-and-report of the
reproduce chain (experiments.reproduce and experiments.quickstart)."""

from __future__ import annotations

import contextlib
import logging
import resource
import time

from absl import app, flags

_COORD = flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-process runs; absent: "
                             "the cluster's environment, e.g. SLURM, Open MPI or a TPU pod slice).")
_NPROC = flags.DEFINE_integer("num_processes", 0, "Processes in a multi-process run (0: one, or the cluster's).")
_PID = flags.DEFINE_integer("process_id", -1, "This process's index (-1: from the cluster environment).")

# On a machine without TPUs, jax logs at INFO that it could not load libtpu; binaries run at absl's INFO
# level, so the line would greet every user. It is not news: keep jax's backend probing quiet.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


@contextlib.contextmanager
def usage_errors():
  """Re-raises ValueError (bad names, sizes, shapes) as absl's UsageError: message + exit code 1."""
  try:
    yield
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def parse_stages(value: str, valid: tuple[str, ...]) -> list[str]:
  """A comma list of stage names -> the list; a ValueError names the unknown ones and the valid ones."""
  stages = [s.strip() for s in value.split(",") if s.strip()]
  bad = [s for s in stages if s not in valid]
  if bad or not stages:
    raise ValueError(f"unknown stage(s) {', '.join(bad) or repr(value)}; valid: {', '.join(valid)}")
  return stages


def initialize_distributed() -> None:
  """jax.distributed.initialize from the flags, or from the cluster's environment when they are absent;
  a no-op for a single process. Call before anything touches a device."""
  from rsr.train import sharding

  sharding.initialize(_COORD.value, _NPROC.value, _PID.value)


def run_and_report(config, workdir: str) -> dict:
  """Runs (or resumes) the chain, then prints the table, the wall time, the peak memory and every output."""
  from absl import logging

  from rsr.eval import reproduce

  logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO
  t0 = time.time()
  with usage_errors():
    reproduce.plan(config, workdir)  # every config error before anything runs
    out = reproduce.run(config, workdir)
  p, files = out["plan"], out["files"]
  with open(files["markdown"]) as f:
    print("\n" + f.read())
  if "world_model" in files:  # what the world model could do, per held-out split (rsr/eval/diagnostics.py)
    with open(files["world_model"]) as f:
      print(f.read())
  # ru_maxrss is in KiB on Linux: the peak resident memory of this process (every stage runs in it).
  peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"Finished in {(time.time() - t0) / 60:.1f} min (this invocation; finished sub-runs are skipped), "
        f"peak memory {peak_gb:.1f} GB.")
  print(f"Files in {p.workdir}:")
  for what, path in reproduce.outputs(p):
    print(f"  {what}: {path}")
  for kind, path in files.items():
    print(f"  table ({kind}): {path}")
  return out
