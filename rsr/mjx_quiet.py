"""Imports `mujoco.mjx` without the line it prints to stdout when the optional `warp` backend is absent.

This project runs MJX's JAX implementation only; the message is noise in every binary's output.
"""

import contextlib
import io

with contextlib.redirect_stdout(io.StringIO()):
  from mujoco import mjx  # noqa: F401  (re-exported)

__all__ = ["mjx"]
