"""rsr/utils/configs.py: the one converter from a preset section to a typed config, and the one migration of
stored configs (old runs read with their old behaviour)."""

from __future__ import annotations

import dataclasses
import json

import ml_collections
import pytest

from experiments.configs import policy as policy_configs
from experiments.configs import world_model as wm_configs
from rsr.stages import policy_config
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


@dataclasses.dataclass(frozen=True)
class _Example:
  size: int
  channels: tuple[int, ...] = (1,)
  kind: str = "a"

  def validate(self) -> "_Example":
    if self.size < 0:
      raise ValueError(f"size must be >= 0, got {self.size}")
    return self


def test_typed_takes_given_then_section_then_default_and_validates():
  section = ml_collections.ConfigDict({"channels": [2, 3], "size": 9, "unrelated": "ignored"})
  assert configs.typed(_Example, section, size=4) == _Example(size=4, channels=(2, 3), kind="a")
  assert configs.typed(_Example, {"size": 1}).channels == (1,)
  with pytest.raises(ValueError, match="size must be >= 0, got -1"):
    configs.typed(_Example, {"size": -1})
  with pytest.raises(ValueError, match="_Example has no field sise"):
    configs.typed(_Example, {}, sise=1)
  with pytest.raises(TypeError):  # a field with no default that neither gives
    configs.typed(_Example, {})


def test_a_preset_setting_reaches_the_library_config():
  """A setting is a preset field of the dataclass's name: `ppo.clip_value` needs no converter edit."""
  c = policy_configs.get_config("tiny")
  assert policy_config.ppo_config(c).ppo.clip_value is True
  c.ppo.clip_value, c.ppo.normalize_advantages = False, False
  got = policy_config.ppo_config(c).ppo
  assert got.clip_value is False and got.normalize_advantages is False
