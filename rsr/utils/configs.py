"""Comparing a config with the one stored beside earlier outputs (datasets, checkpoints)."""

from __future__ import annotations

import json
from typing import Any, Mapping


def plain(config: Mapping[str, Any]) -> dict:
  """The config as plain JSON values (tuples -> lists), as it reads back from disk."""
  return json.loads(json.dumps(dict(config)))


def differences(stored: Mapping[str, Any], current: Mapping[str, Any], prefix: str = ""
                ) -> list[tuple[str, Any, Any]]:
  """(field, stored value, current value) for every field that differs, sorted by field; nested mappings
  are compared field by field and named with dots ("dynamics.d_model"), so that an error names the one
  value that changed rather than printing two whole sections. A field missing on one side is None there."""
  out = []
  for k in sorted(set(stored) | set(current)):
    a, b = stored.get(k), current.get(k)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      out.extend(differences(a, b, f"{prefix}{k}."))
    elif a != b:
      out.append((f"{prefix}{k}", a, b))
  return out
