"""Checkpoints that resume exactly, refuse to mix configs, and are verified before they are trusted.

A `Checkpointer` owns one directory of orbax checkpoints (each saved atomically by orbax: written to a
temporary directory, then renamed), holding two items per step: `state` (any pytree: parameters,
optimizer state, RNG, step) and `extra` (JSON: the data iterator's state and anything small). Beside them,
`compat.json` records the config fields that must match for a checkpoint to be meaningful (model shapes,
data spec); opening the directory with different values raises a CheckpointError naming every field.

Orbax reads a damaged step without complaint where it can: a flipped byte in a data file comes back as a
different finite number, a missing `_METADATA` as nothing at all. So every save also records, in `extra`,
each saved array's path, shape, dtype and two checksums of its bits, and only finite values are saved. A
restore checks the step against that record and the target (structure, shapes, dtypes, checksums,
finiteness); a step that fails is named with its file or array. `restore(..., fallback=True)` (the
training loop's resume) then moves it to DIR/damaged/STEP, says so in one line on stderr, and takes the
previous kept step, which `max_to_keep` = 2 guarantees exists. A save that fails (a full disk) removes its
temporary directory, so nothing half-written stays behind.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rsr.train import sharding
from rsr.utils import configs, media

DAMAGED = "damaged"  # DIR/damaged/STEP: steps a restore found damaged, kept for inspection
_VERIFY = "_verify"  # the key of `extra` that holds the saved arrays' record
_TMP = "*.orbax-checkpoint-tmp*"  # orbax's name for a step it has not finished writing


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: damaged, missing, or from another config. The message names the
  directory, the step and the file or array, and what to do."""


class DamagedStep(CheckpointError):
  """One step's files do not hold what was saved there: an earlier step may still be good."""


class Checkpointer:
  def __init__(self, directory: str, compat: Mapping[str, Any], max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    os.makedirs(self.directory, exist_ok=True)
    compat = configs.plain(compat)
    path = os.path.join(self.directory, "compat.json")
    if os.path.exists(path):
      try:
        with open(path) as f:
          stored = json.load(f)
      except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is unreadable ({_first_line(e)}); restore it, or move "
                              f"{self.directory} away to start this stage over") from None
      bad = [f"{k}: checkpoint has {a!r}, config has {b!r}" for k, a, b in configs.differences(stored, compat)]
      if bad:
        raise CheckpointError(f"the checkpoints in {self.directory} come from an incompatible config: "
                              + "; ".join(bad))
    elif sharding.lead():  # the other processes of a multi-process run write nothing but shards
      media.write_json(path, compat)
    if sharding.lead():  # a killed save's leftovers: orbax never lists them, but they take space
      _remove_tmp(self.directory)
    self._manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "extra"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                             create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def read_extra(self, step: int) -> dict:
    """The `extra` of `step` as saved, without the state (not verified)."""
    return {k: v for k, v in dict(self._read_extra(step)).items() if k != _VERIFY}

  def save(self, step: int, state: Any, extra: Mapping[str, Any]) -> None:
    """Saves `state` and `extra` as `step`. A FloatingPointError (nothing saved) if any value is not finite;
    an OSError for a full disk and a CheckpointError for any other failure, with no temporary left."""
    stored = _storable(state)
    record = _record(stored)
    bad = [p for p, finite in zip(record["paths"], record["finite"], strict=True) if not finite]
    if bad:
      raise FloatingPointError(f"step {step} holds non-finite values in {', '.join(bad[:3])}"
                               f"{' and more' if len(bad) > 3 else ''}; nothing was saved in {self.directory}")
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(stored), extra=ocp.args.JsonSave({**dict(extra), _VERIFY: record})))
      self._manager.wait_until_finished()
    except BaseException as e:  # noqa: BLE001 - orbax and TensorStore raise many kinds for one failed write
      if sharding.lead():  # an interrupted or failed write leaves nothing behind, whatever stopped it
        _remove_tmp(self.directory)
      if not isinstance(e, Exception):  # Ctrl-C, SystemExit: not the checkpoint's failure
        raise
      latest = self.latest_step()
      kept = f"the latest kept step is {latest}" if latest is not None else "no step is kept yet"
      if _no_space(e):
        raise OSError(errno.ENOSPC, f"no space left on the device while saving step {step} in {self.directory} "
                      f"(nothing of it was kept; {kept})") from None
      raise CheckpointError(f"saving step {step} in {self.directory} failed ({_root_cause(e)}); nothing of it "
                            f"was kept; {kept}") from None

  def restore(self, target: Any, step: int | None = None, fallback: bool = False) -> tuple[Any, dict]:
    """The state (shaped like `target`) and extra of `step` (default: the latest), verified.

    A damaged step is a CheckpointError naming it, unless `fallback` (and `step` is None): then the step is
    moved to DIR/damaged/ and the previous kept step is tried, with one line on stderr saying so."""
    if step is not None or not fallback:
      step = self.latest_step() if step is None else step
      if step is None:
        raise CheckpointError(f"no checkpoint in {self.directory}")
      try:
        return self._restore_verified(target, step)
      except DamagedStep as e:
        earlier = [s for s in self.steps() if s < step]
        hint = (f"; re-run the stage that wrote it: its resume moves the step to {DAMAGED}/ and continues "
                f"from step {earlier[-1]}" if earlier else "")
        raise CheckpointError(f"{e}{hint}") from None
    tried = []
    for s in reversed(self.steps()):
      try:
        out = self._restore_verified(target, s)
      except DamagedStep as e:
        if jax.process_count() > 1:  # processes must agree on the step; moving it is a decision for a user
          raise CheckpointError(f"{e}; move {os.path.join(self.directory, str(s))} away and re-run") from None
        tried.append(s)
        earlier = [x for x in self.steps() if x < s]
        where = self._set_aside(s)
        print(f"checkpoint: {e}; moved it to {where} and " + (f"resuming from step {earlier[-1]}" if earlier
              else "no earlier step is kept"), file=sys.stderr, flush=True)
        continue
      return out
    raise CheckpointError(f"every kept step in {self.directory} is damaged ({', '.join(map(str, tried))}, now "
                          f"in {os.path.join(self.directory, DAMAGED)}); move {self.directory} away to start this "
                          "stage over")

  def restore_fields(self, target: Mapping[str, Any], step: int | None = None) -> dict[str, Any]:
    """Some top-level fields of a saved state ({field: pytree shaped like it}), reading nothing else: for
    example a policy's parameters out of a PPO state whose environment states would need the env built.
    Verified like `restore` (the fields' arrays only); a damaged step is a CheckpointError."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    item = {k: _storable(v) for k, v in target.items()}
    record = self._read_record(step)
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
    except Exception as e:  # noqa: BLE001 - see _restore_verified
      raise self._damaged(step, e) from None
    restored = {k: out["state"][k] for k in target}
    self._verify(step, restored, record, partial=True)
    return {k: _refill(v, restored[k]) for k, v in target.items()}

  def close(self) -> None:
    self._manager.close()

  # ---- verification ---------------------------------------------------------------------------------

  def _restore_verified(self, target: Any, step: int) -> tuple[Any, dict]:
    record = self._read_record(step)
    stored_target = _storable(target)
    if record is not None:
      self._check_layout(step, stored_target, record)
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(stored_target), extra=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - orbax and TensorStore raise many kinds for one damaged step
      # Without a record (a checkpoint older than records) a failed read may as well be another layout:
      # then no step is condemned.
      raise self._damaged(step, e, known=record is not None) from None
    self._verify(step, out["state"], record, partial=False)
    extra = {k: v for k, v in dict(out["extra"]).items() if k != _VERIFY}
    return _refill(target, out["state"]), extra

  def _read_record(self, step: int) -> dict | None:
    """The saved arrays' record of `step` (None for a checkpoint written before records existed)."""
    return self._read_extra(step).get(_VERIFY)

  def _read_extra(self, step: int) -> dict:
    try:
      return dict(self._manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))["extra"])
    except Exception as e:  # noqa: BLE001 - orbax and TensorStore raise many kinds for one damaged step
      raise self._damaged(step, e, item="extra") from None

  def _check_layout(self, step: int, stored_target: Any, record: dict) -> None:
    want = {p: (tuple(s), d) for p, s, d in zip(record["paths"], record["shapes"], record["dtypes"], strict=True)}
    have = {p: (tuple(np.shape(x)), _dtype(x)) for p, x in _leaves(stored_target)}
    problems = [f"{p} is missing" for p in want if p not in have][:3]
    problems += [f"{p} is not expected" for p in have if p not in want][:3]
    problems += [f"{p} has shape {want[p][0]} {want[p][1]}, expected {have[p][0]} {have[p][1]}"
                 for p in want if p in have and want[p] != have[p]][:3]
    if problems:
      raise CheckpointError(f"step {step} in {self.directory} holds another state than this stage builds: "
                            + "; ".join(problems))

  def _verify(self, step: int, restored: Any, record: dict | None, partial: bool) -> None:
    got = _record(restored)
    where = os.path.join(self.directory, str(step))
    bad = [p for p, finite in zip(got["paths"], got["finite"], strict=True) if not finite]
    if bad:  # saves refuse non-finite values: these were damaged since (or saved before that rule)
      raise DamagedStep(f"step {step} in {self.directory} is damaged: non-finite values in {bad[0]} ({where})")
    if record is None:
      return
    sums = dict(zip(record["paths"], map(tuple, record["sums"]), strict=True))
    for p, s in zip(got["paths"], got["sums"], strict=True):
      if p not in sums and not partial:
        raise DamagedStep(f"step {step} in {self.directory}: {p} is not in its record ({where})")
      if p in sums and tuple(s) != sums[p]:
        raise DamagedStep(f"step {step} in {self.directory} is damaged: the data of {p} differs from what "
                              f"was saved (checksum; files under {os.path.join(where, 'state')})")

  def _damaged(self, step: int, e: BaseException, item: str = "state", known: bool = True) -> CheckpointError:
    """The error for a step orbax could not read: a missing file by its name, else TensorStore's own line
    (it names the array and the database file). `known`: the layout was checked, so this is damage."""
    path = os.path.join(self.directory, str(step))
    missing = [f for f in ("state", "extra", os.path.join("state", "_METADATA"), os.path.join("state", "manifest.ocdbt"),
                           "_CHECKPOINT_METADATA") if not os.path.exists(os.path.join(path, f))]
    what = f"{os.path.join(path, missing[0])} is missing" if missing else _unreadable(e, os.path.join(path, item))
    if known or missing:
      return DamagedStep(f"step {step} in {self.directory} is damaged: {what}")
    return CheckpointError(f"step {step} in {self.directory} cannot be read: {what}")

  def _set_aside(self, step: int) -> str:
    """Moves a damaged step out of orbax's view, into DIR/damaged/STEP (a later damage of the same step
    number gets a suffix); returns where it went."""
    dst = os.path.join(self.directory, DAMAGED, str(step))
    n = 1
    while os.path.exists(dst):
      dst, n = os.path.join(self.directory, DAMAGED, f"{step}.{n}"), n + 1
    if sharding.lead():
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      os.rename(os.path.join(self.directory, str(step)), dst)
    self._manager.reload()
    return dst


# ---- the record of saved arrays ------------------------------------------------------------------------

def _key_name(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _leaves(tree: Any) -> list[tuple[str, Any]]:
  """(path, leaf) of every array, the path as field names joined by '/': the same for a dataclass field
  and a dict key, so a partial restore (a dict of fields) names arrays as the full save did."""
  return [("/".join(_key_name(k) for k in path), x) for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _dtype(x) -> str:
  return str(np.dtype(getattr(x, "dtype", None) or np.asarray(x).dtype))


def _words(x: jax.Array) -> jax.Array:
  """The bits of an array as uint32 words (one per element up to 32 bits; two for 64-bit elements)."""
  x = jnp.ravel(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  bits = x.dtype.itemsize * 8
  if bits < 32:
    return jax.lax.bitcast_convert_type(x, {8: jnp.uint8, 16: jnp.uint16}[bits]).astype(jnp.uint32)
  return jnp.ravel(jax.lax.bitcast_convert_type(x, jnp.uint32))


@jax.jit
def _sums(leaves: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
  """uint32[L, 2] checksums (sum of the words, and of the words weighted by position: a flipped bit or two
  swapped words change them) and bool[L] all-finite, computed where the arrays live (sharded or not)."""
  sums, finite = [], []
  for x in leaves:
    w = _words(x)
    pos = jnp.arange(1, w.size + 1, dtype=jnp.uint32)
    sums.append(jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * pos, dtype=jnp.uint32)]))
    finite.append(jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True))
  return jnp.stack(sums), jnp.stack(finite)


def _record(tree: Any) -> dict:
  """{paths, shapes, dtypes, sums, finite} of the arrays of a (storable) tree, as JSON-ready lists."""
  named = _leaves(tree)
  if not named:
    return {"paths": [], "shapes": [], "dtypes": [], "sums": [], "finite": []}
  sums, finite = jax.device_get(_sums([jnp.asarray(x) for _, x in named]))
  return {"paths": [p for p, _ in named], "shapes": [list(np.shape(x)) for _, x in named],
          "dtypes": [_dtype(x) for _, x in named], "sums": sums.tolist(),
          "finite": [bool(f) for f in finite]}


# ---- errors and leftovers ------------------------------------------------------------------------------

def _first_line(e: BaseException) -> str:
  """The first line of a message, without TensorStore's JSON specs (which repeat the path at length)."""
  text = re.sub(r"\s*\[tensorstore_spec.*$", "", str(e).strip(), flags=re.S).strip()
  return (text.splitlines()[0] if text else type(e).__name__)[:400]


def _root_cause(e: BaseException) -> str:
  """The innermost exception's first line: TensorStore's names the array and file, orbax's wrapper does not."""
  seen = []
  while e is not None and e not in seen:
    seen.append(e)
    e = e.__cause__ or e.__context__
  for x in reversed(seen):
    if str(x).strip():
      return _first_line(x)
  return type(seen[0]).__name__


def _unreadable(e: BaseException, where: str) -> str:
  """TensorStore's error for a damaged step as `FILE cannot be read (CODE: reason)`: it names the file in a
  chain of drivers, with the JSON spec of each; the file and its status code are what a user acts on."""
  texts, x = [], e
  while x is not None and len(texts) < 10:
    texts.append(re.sub(r"\s*\[tensorstore_spec.*$", "", str(x).strip(), flags=re.S))
    x = x.__cause__ or x.__context__
  for text in texts[::-1]:
    files = [f for f in re.findall(r'local file "([^"]+)"', text) if not f.endswith("/")]
    if files:
      code = re.match(r"\s*([A-Z_]+):", text)
      reason = text.rsplit(f'"{files[-1]}"', 1)[1].lstrip(": ").strip()
      detail = (code.group(1) if code else "unreadable") + (f": {reason[:150]}" if reason else "")
      return f"{files[-1]} cannot be read ({detail})"
  return f"{where}: {_root_cause(e)}"


def _no_space(e: BaseException) -> bool:
  while e is not None:
    if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) or "os_error_code='28'" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


def _remove_tmp(directory: str) -> None:
  for p in glob.glob(os.path.join(directory, _TMP)):
    shutil.rmtree(p, ignore_errors=True)


def _empty(x) -> bool:
  return getattr(x, "size", 1) == 0


def _storable(tree: Any) -> Any:
  """Zero-size arrays (MJX data of a model without actuators, for one) hold no data, and orbax refuses to
  save them: they are stored as None."""
  return None if tree is None else jax.tree_util.tree_map(lambda x: None if _empty(x) else x, tree)


def _refill(target: Any, restored: Any) -> Any:
  """`restored` with the target's zero-size arrays put back where _storable left None."""
  if target is None:
    return restored
  leaves, treedef = jax.tree_util.tree_flatten(target)
  stored = iter(jax.tree_util.tree_leaves(restored))
  return treedef.unflatten([x if _empty(x) else next(stored) for x in leaves])
