"""What every experiment binary shares: turning bad input into a usage message instead of a traceback, and
the multi-process flags (--coordinator_address, --num_processes, --process_id)."""

from __future__ import annotations

import contextlib
import logging

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
