"""Configs: the one converter from a preset's section to the library's typed config (`typed`), and configs
stored beside earlier outputs: reading one back (`read`, migrated to the current fields) and comparing it
with the current config (datasets, checkpoints)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, TypeVar

import ml_collections

T = TypeVar("T")


def typed(cls: type[T], section: Mapping[str, Any], **given: Any) -> T:
  """The frozen dataclass `cls` from a config section: each field from `given` (what the section does not
  hold: a trained tokenizer's vocabulary, a nested config), else the section's field of the same name (a
  list becomes a tuple), else the dataclass's default; then its `validate()`, if it has one.

  The one converter between the presets (ml_collections) and the library's typed configs, so a new setting
  is a preset field and a dataclass field of the same name; a field a stored config lacks takes the
  dataclass default unless ADDED below says what the old runs did. A `given` name that is no field of `cls`
  is a ValueError (a typo would otherwise be dropped)."""
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(given) - names)
  if unknown:
    raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}")
  values = {}
  for name in names:
    v = given[name] if name in given else section[name] if name in section else dataclasses.MISSING
    if v is not dataclasses.MISSING:
      values[name] = tuple(v) if isinstance(v, list) else v
  out = cls(**values)
  return out.validate() if hasattr(out, "validate") else out


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


# The one migration of stored configs: each field added to a binary's presets after runs were written, with
# the value that reproduces what those runs did. A run's config.json is read through it, so the library reads
# every field as an attribute and an old run behaves as it did. Add a field here when a preset gains one
# whose absence meant something (tests/utils/test_configs.py checks every entry names a preset field).
ADDED: dict[str, dict[str, Any]] = {
    "world_model": {
        "tokenizer.norm": "group",
        "tokenizer.sticky_margin": 0.0,
        "dynamics.action_film": False,
        "dynamics.output": "codes",
        "dynamics.prev_frame_input": False,
        "dynamics.dtype": "float32",
        "dynamics.remat": False,
        "dynamics_train.mask_schedule": "cosine",
        "dynamics_train.mask_min": 0.5,
        "dynamics_train.context_noise": 0.0,
        "dynamics_train.self_context": 0.0,
        "dynamics_train.action_dropout": 0.0,
        "dynamics_train.changed_weight": 1.0,
        "dynamics_train.done_input": "masked",
        "dynamics_train.probe_horizon": 0,
        "dynamics_train.probe_steps": 3000,
        "generate.copy_bias": 0.0,
        "generate.action_guidance": 1.0,
        # the reward head's group, from before the presets held it whole
        "reward_head.d_model": 64, "reward_head.hidden": 128, "reward_head.batch_size": 16,
        "reward_head.steps": 200, "reward_head.lr": 1e-3, "reward_head.warmup": 10,
        "reward_head.weight_decay": 1e-4, "reward_head.grad_clip": 1.0, "reward_head.eval_every": 100,
        "reward_head.checkpoint_every": 100, "reward_head.eval_windows": 512, "reward_head.quality_episodes": 32,
    },
    "policy": {
        "wm_env.render": "decoded",
        "wm_env.starts": "first",
        "wm_env.chunk": 0,
        "ppo.microbatch": 0, "ppo.normalize_advantages": True, "ppo.clip_value": True,
        "eval.gap_starts": 0, "eval.gap_offset": 0,
        "rewards.align": "level", "rewards.success_fill": False,
        "wm_env.max_surprise": 0.0,
        "dyna.rounds": 3, "dyna.episodes": 64, "dyna.wm_steps": 300, "dyna.wm_lr": 1e-4, "dyna.repeat": 4,
    },
}


def migrate(raw: Mapping[str, Any], kind: str) -> dict:
  """A stored config (plain JSON values) with every field of ADDED[kind] it lacks set to its old value."""
  if kind not in ADDED:
    raise ValueError(f"unknown config kind {kind!r}; valid: {', '.join(ADDED)}")
  out = json.loads(json.dumps(dict(raw)))
  for field, value in ADDED[kind].items():
    *groups, name = field.split(".")
    node = out
    for g in groups:
      node = node.setdefault(g, {})
    node.setdefault(name, value)
  return out


def read(path: str, kind: str) -> ml_collections.ConfigDict:
  """A binary's config.json (kind "world_model" or "policy") as a ConfigDict of the current fields: migrated,
  and JSON lists back to tuples, as the presets have them."""
  with open(path) as f:
    raw = json.load(f)

  def tuples(x):
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    return tuple(tuples(v) for v in x) if isinstance(x, list) else x

  return ml_collections.ConfigDict(tuples(migrate(raw, kind)))
