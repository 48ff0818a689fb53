"""The four tabletop tasks, by their fixed names."""

from rsr.envs.tabletop.tasks.base import Task
from rsr.envs.tabletop.tasks.pick_cube import PickCube
from rsr.envs.tabletop.tasks.place_cube import PlaceCube
from rsr.envs.tabletop.tasks.push_cube import PushCube
from rsr.envs.tabletop.tasks.stack_cube import StackCube

TASKS: dict[str, type[Task]] = {t.name: t for t in (PushCube, PickCube, StackCube, PlaceCube)}
TASK_NAMES = tuple(TASKS)

__all__ = ["TASKS", "TASK_NAMES", "Task"]
