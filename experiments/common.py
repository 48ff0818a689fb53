"""What every experiment binary shares: one error surface, the multi-process flags (--coordinator_address,
--num_processes, --process_id), and the run-and-report of the reproduce chain (experiments.reproduce and
experiments.quickstart).

The error surface: every binary runs as `common.run(main)`. A failure a user can act on (bad flags or
config fields, a missing or damaged dataset or checkpoint, a non-finite loss, a full disk, a missing
device, Ctrl-C) prints `error: ...` naming the file, field or step and what to do, and exits non-zero;
`--verbose` (or RSR_VERBOSE=1) shows the traceback instead. Anything else is a bug and keeps its traceback.
Temporary directories are the writers' business (rsr/train/checkpoint.py, rsr/utils/media.py,
data_pipelines/publish.py): each removes its own when a write fails.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import resource
import sys
import time
import traceback
from typing import Callable

from absl import app, flags

_COORD = flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-process runs; absent: "
                             "the cluster's environment, e.g. SLURM, Open MPI or a TPU pod slice).")
_NPROC = flags.DEFINE_integer("num_processes", 0, "Processes in a multi-process run (0: one, or the cluster's).")
_PID = flags.DEFINE_integer("process_id", -1, "This process's index (-1: from the cluster environment).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "On an error, show its traceback (also: environment RSR_VERBOSE=1).")

# On a machine without TPUs, jax logs at INFO that it could not load libtpu; binaries run at absl's INFO
# level, so the line would greet every user. It is not news: keep jax's backend probing quiet.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)

_HINT = "(the traceback: --verbose or RSR_VERBOSE=1)"
_WHAT_TO_DO = {
    errno.ENOSPC: "free space on that disk, then re-run the same command: it resumes from what was saved",
    errno.EDQUOT: "free space within your quota, then re-run the same command: it resumes from what was saved",
    errno.EACCES: "check the permissions of that path",
    errno.EPERM: "check the permissions of that path",
    errno.ENOENT: "check the path",
    errno.EROFS: "write the workdir on a writable file system",
}


def verbose() -> bool:
  env = os.environ.get("RSR_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")
  return env or (_VERBOSE.value if flags.FLAGS.is_parsed() else "--verbose" in sys.argv)


def run(main: Callable[[list[str]], None]) -> None:
  """app.run(main) behind the error surface (the module docstring), flag parsing included."""
  def guarded(argv):
    with usage_errors():
      main(argv)

  app.run(guarded, flags_parser=_parse_flags)


@contextlib.contextmanager
def usage_errors():
  """Turns an expected failure into `error: MESSAGE` on stderr and exit code 1 (130 for Ctrl-C); with
  --verbose or RSR_VERBOSE=1 it propagates with its traceback."""
  try:
    yield
  except BaseException as e:  # noqa: BLE001 - sorted by `describe`; anything it does not know propagates
    message = describe(e)
    if message is None or verbose():
      raise
    _fail(message, 130 if isinstance(e, KeyboardInterrupt) else getattr(e, "exitcode", 1) or 1)


def describe(e: BaseException) -> str | None:
  """The one-line message of an expected failure; None for anything else (a bug: keep its traceback)."""
  if isinstance(e, KeyboardInterrupt):
    return "interrupted; re-run the same command to resume from the latest checkpoint"
  if isinstance(e, app.UsageError):
    return _one_line(e)
  if isinstance(e, OSError) and e.errno is not None:
    where = f": {e.filename}" if e.filename else ""
    todo = _WHAT_TO_DO.get(e.errno)
    return f"{e.strerror or _one_line(e)}{where}" + (f"; {todo}" if todo else "")
  if isinstance(e, (ValueError, FloatingPointError, MemoryError, OSError)):
    return _one_line(e) or type(e).__name__
  text = str(e)
  if type(e).__name__ in ("XlaRuntimeError", "JaxRuntimeError"):  # out of memory, a device that failed
    if "RESOURCE_EXHAUSTED" in text:
      return (f"the device ran out of memory ({_one_line(e)[:200]}); lower the batch sizes or the model's size "
              "in the config, or run on a device with more memory")
    return f"the device failed: {_one_line(e)}"
  if _from_backend_setup(e):  # JAX_PLATFORMS names a device this machine lacks (jax may only assert)
    platforms = os.environ.get("JAX_PLATFORMS", "")
    detail = _one_line(e) or f"no {platforms or 'usable'} device is visible"
    return (f"no device to run on (JAX_PLATFORMS={platforms!r}): {detail}; run where that device is present, "
            "or choose one that is with JAX_PLATFORMS (e.g. JAX_PLATFORMS=cpu)")
  return None


def _from_backend_setup(e: BaseException) -> bool:
  if not isinstance(e, (RuntimeError, AssertionError)):
    return False
  if "Unable to initialize backend" in str(e) or "Unknown backend" in str(e):
    return True
  frames = traceback.extract_tb(e.__traceback__)
  return bool(frames) and frames[-1].filename.endswith(os.path.join("jax", "_src", "xla_bridge.py"))


def _one_line(e: BaseException) -> str:
  """An exception's message as one line (multi-line messages joined; TensorStore specs cut)."""
  lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
  return " ".join(lines)[:1000]


def _fail(message: str, code: int) -> None:
  print(f"error: {message}\n{_HINT}", file=sys.stderr, flush=True)
  sys.exit(code)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with one-line errors: a bad preset or a config field typo otherwise prints
  ml_collections' multi-line block (a traceback inside a "FATAL Flags parsing error")."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if verbose():
      raise
    _fail(_flag_message(str(e)), 2)
  except (KeyError, AttributeError, TypeError, ValueError) as e:  # ml_collections' override errors escape raw
    if verbose():
      raise
    _fail(_override_message(e, argv), 2)
  return []  # unreachable: _fail exits


def _flag_message(text: str) -> str:
  """`flag --config=F:P: Error whilst parsing config file: <traceback> ValueError: M` -> `--config=F:P: M`."""
  lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
  head = re.sub(r"^flag ", "", lines[0]) if lines else text
  errors = [m.group(2) for ln in lines[1:] if (m := re.match(r"^(\w+(?:Error|Exception)): (.*)$", ln))]
  if errors:
    head = re.sub(r": Error whilst parsing config file:?$", "", head)
    return f"{head}: {errors[-1]}"
  return " ".join([head] + lines[1:])


def _override_message(e: BaseException, argv: list[str]) -> str:
  """A config override naming a field that does not exist: the flag as typed, the field, the suggestion."""
  while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(message))
    e = e.args[0]
  text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  key = lines[0].strip("'\"") if lines else ""
  flag = next((a for a in argv[1:] if key and a.startswith("--config.") and key in a.split("=", 1)[0].split(".")),
              None)
  suggestion = next((ln for ln in lines[1:] if ln.startswith("Did you mean")), "")
  if flag is not None:
    return (f"{flag}: the config has no field {key!r}" + (f"; {suggestion[0].lower()}{suggestion[1:]}" if suggestion
                                                          else ""))
  return f"bad config override: {' '.join(lines) or type(e).__name__}"


def define_config_file(name: str, default: str, help_string: str):
  """config_flags.DEFINE_config_file behind the error surface. ml_collections resolves `--config.FIELD=...`
  overrides against the default config when the flag is defined, at import: a field typo would otherwise
  escape as a 40-line traceback before `run` is reached."""
  from ml_collections import config_flags

  try:
    return config_flags.DEFINE_config_file(name, default, help_string)
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    if verbose():
      raise
    _fail(_override_message(e, sys.argv), 2)


def initialize_distributed() -> None:
  """jax.distributed.initialize from the flags, or from the cluster's environment when they are absent;
  a no-op for a single process. Call before anything touches a device."""
  from rsr.train import sharding

  sharding.initialize(_COORD.value, _NPROC.value, _PID.value)


def run_and_report(config, workdir: str) -> dict:
  """Runs (or resumes) the chain, then prints the table, the wall time, the peak memory and every output."""
  from absl import logging

  from rsr.stages import reproduce

  logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO
  t0 = time.time()
  reproduce.plan(config, workdir)  # every config error before anything runs
  out = reproduce.run(config, workdir)
  p, files = out["plan"], out["files"]
  with open(files["markdown"]) as f:
    print("\n" + f.read())
  if "world_model" in files:  # what the world model could do, per held-out split (rsr/stages/diagnostics.py)
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
