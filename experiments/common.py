"""What every experiment binary shares: turning bad input into a usage message instead of a traceback."""

from __future__ import annotations

import contextlib
import logging

from absl import app

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
