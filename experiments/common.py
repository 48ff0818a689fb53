"""What every experiment binary shares: turning bad input into a usage message instead of a traceback."""

from __future__ import annotations

import contextlib

from absl import app


@contextlib.contextmanager
def usage_errors():
  """Re-raises ValueError (bad names, sizes, shapes) as absl's UsageError: message + exit code 1."""
  try:
    yield
  except ValueError as e:
    raise app.UsageError(str(e)) from None
