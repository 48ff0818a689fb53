"""The one migration of stored configs (rsr/utils/configs.py): old runs read with their old behaviour."""

from __future__ import annotations

import json

import pytest

from experiments.configs import policy as policy_configs
from experiments.configs import world_model as wm_configs
from rsr.utils import configs

PRESETS = {"world_model": wm_configs, "policy": policy_configs}


@pytest.mark.parametrize("kind", sorted(configs.ADDED))
def test_every_added_field_is_a_preset_field(kind):
  """A migration entry that names no preset field would fill a field nothing reads."""
  module = PRESETS[kind]
  for preset in module.PRESETS:
    flat = {}

    def walk(d, prefix=""):
      for k, v in d.items():
        if isinstance(v, dict):
          walk(v, f"{prefix}{k}.")
        else:
          flat[f"{prefix}{k}"] = v

    walk(module.get_config(preset).to_dict())
    missing = [f for f in configs.ADDED[kind] if f not in flat]
    assert not missing, f"{kind} preset {preset} lacks {missing}"


@pytest.mark.parametrize("kind", sorted(configs.ADDED))
def test_an_old_config_reads_back_with_old_values_and_a_new_one_unchanged(kind, tmp_path):
  current = PRESETS[kind].get_config("cpu")
  raw = configs.plain(current.to_dict())
  path = tmp_path / "config.json"
  path.write_text(json.dumps(raw))
  assert configs.plain(configs.read(str(path), kind).to_dict()) == raw  # nothing added over a full config

  old = json.loads(json.dumps(raw))
  for field in configs.ADDED[kind]:
    *groups, name = field.split(".")
    node = old
    for g in groups:
      node = node[g]
    del node[name]
  path.write_text(json.dumps(old))
  back = configs.read(str(path), kind)
  for field, value in configs.ADDED[kind].items():
    node = back
    for part in field.split("."):
      node = node[part]
    assert node == value, field
  assert isinstance(back.dynamics.window if kind == "world_model" else back.agent.channels,
                    int if kind == "world_model" else tuple)  # JSON lists come back as the presets' tuples


def test_unknown_kind_is_named():
  with pytest.raises(ValueError, match="unknown config kind 'reward'; valid: world_model, policy"):
    configs.migrate({}, "reward")
