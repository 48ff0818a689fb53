"""`make(task_name, **overrides)`: the registry of environments by name."""

from __future__ import annotations

import dataclasses

from rsr.envs.tabletop.env import TabletopConfig, TabletopEnv
from rsr.envs.tabletop.tasks import TASK_NAMES, TASKS


def make(task_name: str, **overrides) -> TabletopEnv:
  """Builds the tabletop env of a task.

  Args:
    task_name: one of TASK_NAMES ("push_cube", "pick_cube", "stack_cube", "place_cube").
    **overrides: fields of TabletopConfig (height, width, cameras, shadows, horizon, terminate_on_success).

  Raises:
    ValueError: naming the unknown task, the unknown override, or the bad value, with the valid choices.
  """
  if task_name not in TASKS:
    raise ValueError(f"unknown task {task_name!r}; valid tasks: {', '.join(TASK_NAMES)}")
  fields = {f.name for f in dataclasses.fields(TabletopConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown env option(s) {unknown}; valid options: {', '.join(sorted(fields))}")
  return TabletopEnv(TASKS[task_name](), TabletopConfig(**overrides))
