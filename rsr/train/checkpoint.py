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

import orbax.checkpoint as ocp

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
    else:
      media.write_json(path, compat)
    self._manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "extra"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                             create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, extra: Mapping[str, Any]) -> None:
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     extra=ocp.args.JsonSave(dict(extra))))
    self._manager.wait_until_finished()

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """The state (shaped like `target`) and extra of `step` (default: the latest)."""
    step = self.latest_step() if step is None else step
    out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                              extra=ocp.args.JsonRestore()))
    return out["state"], dict(out["extra"])

  def close(self) -> None:
    self._manager.close()
