"""Comparing a config with the one stored beside earlier outputs (datasets, checkpoints)."""

from __future__ import annotations

import json
from typing import Any, Mapping


def plain(config: Mapping[str, Any]) -> dict:
  """The config as plain JSON values (tuples -> lists), as it reads back from disk."""
  return json.loads(json.dumps(dict(config)))


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
  """(field, stored value, current value) for every top-level field that differs, sorted by field."""
  return [(k, stored.get(k), current.get(k)) for k in sorted(set(stored) | set(current))
          if stored.get(k) != current.get(k)]
