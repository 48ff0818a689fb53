"""The small checks every stage's `check(config, ...)` is made of: signs, sizes, divisibility over devices.

Stages check their whole config when a binary starts, before anything compiles (a negative batch size
otherwise surfaces minutes later as an MLIR error, or not at all). Each check raises a ValueError naming
the config field as a user types it (`dynamics_train.batch_size`), the value, and what would work.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Mapping


def positive(section: Mapping[str, Any], prefix: str, *names: str) -> None:
  """Each field is a finite number > 0 (integers stay integers: ml_collections keeps a field's type)."""
  for name in names:
    v = section[name]
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
      raise ValueError(f"{prefix}.{name} must be a positive number, got {v!r}")


def non_negative(section: Mapping[str, Any], prefix: str, *names: str) -> None:
  for name in names:
    v = section[name]
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
      raise ValueError(f"{prefix}.{name} must be a number >= 0, got {v!r}")


def one_of(value: Any, field: str, valid: tuple[Any, ...]) -> None:
  if value not in valid:
    raise ValueError(f"{field} must be one of {', '.join(map(repr, valid))}, got {value!r}")


def positive_ints(values: Any, field: str, least: int = 1) -> tuple[int, ...]:
  """A non-empty tuple of integers >= least (channel lists, FSQ levels)."""
  values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
  if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < least for v in values):
    raise ValueError(f"{field} must be a non-empty tuple of integers >= {least}, got {values!r}")
  return values


def device_count() -> int:
  """Devices every trainer's mesh spans (all processes). Asking compiles nothing."""
  import jax

  return jax.device_count()


def mesh_model(model: int, field: str = "mesh.model") -> int:
  """The `model` axis size, checked against the devices present; returns the device count."""
  n = device_count()
  if isinstance(model, bool) or not isinstance(model, int) or model < 1 or n % model:
    raise ValueError(f"{field} = {model!r} must be a positive integer that divides the {n} devices present")
  return n


def divides_devices(batch: int, field: str, devices: int | None = None) -> None:
  """A batch split over every device (rsr/train/sharding.py) must split evenly."""
  n = device_count() if devices is None else devices
  if batch % n:
    raise ValueError(f"{field} = {batch} does not divide over the {n} devices present; use a multiple of {n}")


def expand(value: str, valid: Iterable[str], what: str, allow_all: bool = True) -> list[str]:
  """A comma list -> its names ('all' -> every valid name, unless allow_all is off); raises naming a bad
  one and the valid ones."""
  valid = list(valid)
  names = valid if allow_all and value == "all" else [v.strip() for v in value.split(",") if v.strip()]
  bad = [n for n in names if n not in valid]
  if bad or not names:
    also = " or 'all'" if allow_all else ""
    raise ValueError(f"unknown {what} {', '.join(bad) or repr(value)}; valid: {', '.join(valid)}{also}")
  return names
