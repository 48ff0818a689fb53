"""Environments behind one functional protocol (see core.py); `make(task_name)` builds one."""

from rsr.envs.core import ActionSpec, Env, State
from rsr.envs.registry import make
from rsr.envs.tabletop.scenes import SPLITS
from rsr.envs.tabletop.tasks import TASK_NAMES

__all__ = ["ActionSpec", "Env", "State", "make", "SPLITS", "TASK_NAMES"]
