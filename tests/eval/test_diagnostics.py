"""The world model's held-out reports as one table (rsr/stages/diagnostics.py)."""

from __future__ import annotations

import json

from rsr.stages import diagnostics


def test_table_reads_every_stage_and_marks_what_is_missing(tmp_path):
  (tmp_path / "tables").mkdir()
  reports = {"tokenizer": {"steps": 10, "val/psnr": 29.747, "ood_all/psnr": 20.8},
             "tokenize": {"val/token_stability": 0.8263, "val/patch_stability": 0.8541},
             "dynamics": {"val/gain_over_copy": 0.0176, "val/gain_over_copy_ci95": 0.0627,
                          "ood_all/gain_over_copy": -6.6, "val/gain_over_copy_anchored": -0.028,
                          "val/gain_over_shuffled": 0.0834, "val/ce": 2.4561, "val/changed_acc": 0.1234,
                          "val/done_auc": 0.9647,
                          "val/tokens_changed": 0.0024, "val/tokens_changed_real": 0.1681,
                          "val/probe_gripper_imagined_final": 14.44, "val/probe_gripper_copy_final": 14.3,
                          "val/probe_cube_a_imagined_final": 14.35, "val/guard_auc": 0.872,
                          "val/probe_gripper_gain_over_shuffled_final": 2.335,
                          "val/probe_gripper_gain_over_shuffled_ci95_final": 1.104,
                          "val/guard_auc_horizon": 0.838, "val/guard_auc_within": 0.757,
                          "val/done_open_loop_false_imagined": 0.31, "val/done_open_loop_false_real": 0.02,
                          "val/done_open_loop_recall_real": 0.9},
             "reward": {"val/align_spearman_within": 0.712, "ood_all/imagined_reward_spearman_within": -0.453}}
  for stage, r in reports.items():
    (tmp_path / "tables" / f"{stage}.json").write_text(json.dumps(r))
  loaded = diagnostics.load(str(tmp_path))
  assert loaded == reports and diagnostics.splits(loaded) == ["val", "ood_all"]
  lines = diagnostics.markdown(loaded).splitlines()
  assert lines[0] == "| world model, held out | val | ood_all |"
  assert lines[2:] == [
      "| tokenizer PSNR (dB) | 29.75 | 20.80 |",
      "| token / patch stability | 0.826 / 0.854 | n/a |",
      "| held-out loss / changed-token accuracy | 2.456 / 0.123 | n/a |",
      "| open-loop gain over copy-last-frame (dB) | +0.02 ± 0.06 | -6.60 |",
      "| same, anchored frames (dB) | -0.03 | n/a |",
      "| gain over shuffled actions (dB) | +0.083 | n/a |",
      "| tokens changed per step, imagined / real | 0.002 / 0.168 | n/a |",
      "| gripper error, imagined / copy (cm) | 14.4 / 14.3 | n/a |",
      "| cube error, imagined / copy (cm) | n/a | n/a |",  # one of the pair missing: not half a cell
      "| gripper closer than with shuffled actions (cm) | +2.3 ± 1.10 | n/a |",
      "| guard AUC: surprise / step count / within a step | 0.87 / 0.84 / 0.76 | n/a |",
      "| done AUC | 0.965 | n/a |",
      "| done fires without success, imagined / real frames | 0.31 / 0.02 | n/a |",
      "| done fires with success, imagined / real frames | n/a | n/a |",
      "| endogenous alignment ~ task, real frames | +0.71 | n/a |",
      "| endogenous reward ~ task, imagined frames | n/a | -0.45 |",
      "| learned reward head ~ task, real frames | n/a | n/a |",
  ]
  assert len(lines) == 2 + len(diagnostics.ROWS)


def test_no_reports_no_table(tmp_path):
  assert diagnostics.load(str(tmp_path)) == {} and diagnostics.markdown({}) is None
