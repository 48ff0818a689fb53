"""The Dyna stage: a round appends the policy's real episodes to the world model's data and fine-tunes it,
and a run killed mid-round continues exactly."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from data_pipelines import open_dataset, tokenized
from experiments.configs import policy as policy_configs
from rsr.stages import bc as stage_bc
from rsr.stages import dyna as stage_dyna
from rsr.stages import gap, policy_config
from rsr.stages import trained as trained_lib
from rsr.stages import world_model as wm_stages
from rsr.utils import media


def _config(tiny_dataset, tiny_world_model):
  c = policy_configs.get_config("tiny")
  c.data_dir, c.world_model_dir = tiny_dataset, tiny_world_model
  c.stages = "bc,dyna"
  c.eval.splits, c.eval.videos, c.eval.gap_starts = "id", 0, 2
  c.ppo.updates, c.ppo.eval_every = 4, 2
  c.dyna.rounds, c.dyna.episodes, c.dyna.wm_steps, c.dyna.repeat = 2, 3, 4, 2
  return c


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_dyna_round_appends_episodes_and_resumes_exactly(tiny_dataset, tiny_world_model, tmp_path):
  # Rounds and re-runs compile the same programs: conftest's compilation cache compiles them once.
  c = _config(tiny_dataset, tiny_world_model)
  ds = open_dataset(tiny_dataset)
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  media.write_text(os.path.join(straight, "config.json"), c.to_json_best_effort())  # as train_policy writes it
  stage_bc.run(c, straight, ds, progress=False)
  shutil.copytree(straight, killed)  # one BC start for both, as reproduce shares it
  a = stage_dyna.run(c, straight, ds, progress=False)

  # Round 0 collected its real episodes of the round's policy, and the world model trained on them.
  ep = dict(np.load(os.path.join(stage_dyna.round_dir(straight, 0), "episodes.npz")))
  assert ep["frames"].shape[0] == ep["tokens"].shape[0] == c.dyna.episodes
  assert ep["frames"].shape[2:] == (ds.spec.height, ds.spec.width, 3) and ep["frames"].dtype == np.uint8
  assert (ep["length"] >= 1).all() and ep["action"].shape[-1] == 5
  assert not os.path.exists(os.path.join(stage_dyna.round_dir(straight, 1), "episodes.npz"))  # the last round
  wdir = os.path.abspath(tiny_world_model)
  wcfg = policy_config.world_model_config(wdir)
  tok_ds = wm_stages.tokenize_stage(wcfg, wdir, ds, progress=False)
  new = stage_dyna.split_episodes(ep, c.task)
  union = tokenized.with_episodes(tok_ds, "train", new * c.dyna.repeat, "t")
  n0 = tok_ds.num_episodes("train")
  assert union.num_episodes("train") == n0 + c.dyna.repeat * c.dyna.episodes
  got = union.read("train", n0)
  np.testing.assert_array_equal(got["tokens"], ep["tokens"][0, :ep["length"][0] + 1])
  np.testing.assert_array_equal(got["action"][:-1], ep["action"][0, :ep["length"][0]])
  assert union.meta["fingerprint"] != tok_ds.meta["fingerprint"]
  np.testing.assert_array_equal(union.read("train", 0)["tokens"], tok_ds.read("train", 0)["tokens"])

  r0 = a["rounds"][0]
  assert set(r0["ppo"]["exploitation"]) == {"start", "ppo"} and r0["finetune"]["loss"] > 0
  assert r0["own_rollouts"]["episodes"] >= 0
  assert a["real_episodes"] == c.dyna.episodes and len(a["rounds"]) == 2
  base = wm_stages.load_dynamics(wcfg, wdir, tok_ds, stage_dyna.vocab_size(wcfg))[1]

  # Killed inside round 0's PPO, then inside round 0's fine-tuning, then run to the end: the same result.
  assert stage_dyna.run(c, killed, ds, progress=False, max_steps_this_run=1) == {}
  assert stage_dyna.run(c, killed, ds, progress=False, max_steps_this_run=2) == {}
  b = stage_dyna.run(c, killed, ds, progress=False)
  hw = (ds.spec.height, ds.spec.width)
  pa, ra, sa = stage_dyna.load_params(c, straight, hw)
  pb, rb, sb = stage_dyna.load_params(c, killed, hw)
  assert (ra, sa) == (rb, sb) == (1, 2)
  for x, y in zip(_leaves(pa), _leaves(pb), strict=True):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(np.load(os.path.join(stage_dyna.round_dir(killed, 0), "episodes.npz"))["frames"],
                                ep["frames"])
  assert a == b
  assert json.load(open(os.path.join(straight, "tables", "dyna.json")))["real_episodes"] == c.dyna.episodes

  # The fine-tuning moved the world model, and evaluation finds the last round's policy.
  tuned = stage_dyna.load_dynamics_round(c, straight, 0, tok_ds)
  assert any(not np.array_equal(x, y) for x, y in zip(_leaves(base), _leaves(tuned), strict=True))
  t = trained_lib.load(straight)
  assert t.stage == "dyna" and t.finished and t.task == c.task

  # The gap report of finished policies in any world model: the same weights from two workdirs, the same row.
  report = gap.report([t, trained_lib.load(killed)], tiny_world_model, c.task, starts=2, offset=1, horizon=2,
                      progress=False)
  rows = list(report["policies"].values())
  assert len(rows) == 2 and rows[0] == rows[1] and report["spearman"]["imagined_success"] is None
  r = rows[0]
  assert r["agreement"] + r["imagined_only"] + r["real_only"] == pytest.approx(1.0)
  assert 0 <= r["real_success"] <= 1 and np.isfinite(r["imagined_return"])
  with pytest.raises(ValueError, match="named twice"):
    gap.report([t, t], tiny_world_model, c.task, starts=2, offset=1, horizon=2, progress=False)


@pytest.mark.parametrize("change, message", [
    ({"stages": "bc,ppo,dyna"}, "pick one"),
    ({"env": "sim", "reward": "handcrafted"}, "needs env=world_model"),
    ({"dyna.rounds": 0}, "dyna.rounds"),
    ({"dyna.wm_lr": -1.0}, "dyna.wm_lr"),
])
def test_dyna_config_errors_name_the_field(change, message):
  c = policy_configs.get_config("tiny")
  for k, v in change.items():
    node = c
    *path, last = k.split(".")
    for part in path:
      node = node[part]
    node[last] = v
  if "stages" not in change:
    c.stages = "bc,dyna"
  with pytest.raises(ValueError, match=message):
    policy_config.check(c)
