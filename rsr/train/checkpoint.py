"""Checkpoints that resume exactly and refuse to mix configs.

A `Checkpointer` owns one directory of orbax checkpoints (each saved atomically by orbax: written to a
temporary directory, then renamed), holding two items per step: `state` (any pytree: parameters,
optimizer state, RNG, step) and `extra` (JSON: the data iterator's state and anything small). Beside them,
`compat.json` records the config fields that must match for a checkpoint to be meaningful (model shapes,
data spec); opening the directory with different values raises a ValueError naming every mismatched field.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

from rsr.train import sharding
from rsr.utils import configs, media


class Checkpointer:
  def __init__(self, directory: str, compat: Mapping[str, Any], max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    os.makedirs(self.directory, exist_ok=True)
    compat = configs.plain(compat)
    path = os.path.join(self.directory, "compat.json")
    if os.path.exists(path):
      with open(path) as f:
        stored = json.load(f)
      bad = [f"{k}: checkpoint has {a!r}, config has {b!r}" for k, a, b in configs.differences(stored, compat)]
      if bad:
        raise ValueError(f"the checkpoints in {self.directory} come from an incompatible config: "
                         + "; ".join(bad))
    elif sharding.lead():  # the other processes of a multi-process run write nothing but shards
      media.write_json(path, compat)
    self._manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "extra"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                             create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, extra: Mapping[str, Any]) -> None:
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_storable(state)),
                                                     extra=ocp.args.JsonSave(dict(extra))))
    self._manager.wait_until_finished()

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """The state (shaped like `target`) and extra of `step` (default: the latest)."""
    step = self.latest_step() if step is None else step
    out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_storable(target)),
                                                              extra=ocp.args.JsonRestore()))
    return _refill(target, out["state"]), dict(out["extra"])

  def restore_fields(self, target: Mapping[str, Any], step: int | None = None) -> dict[str, Any]:
    """Some top-level fields of a saved state ({field: pytree shaped like it}), reading nothing else: for
    example a policy's parameters out of a PPO state whose environment states would need the env built."""
    step = self.latest_step() if step is None else step
    item = {k: _storable(v) for k, v in target.items()}
    out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
    return {k: _refill(v, out["state"][k]) for k, v in target.items()}

  def close(self) -> None:
    self._manager.close()


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
