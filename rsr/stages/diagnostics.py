"""Which stage limits the result: the world model's own held-out reports as one table next to the results.

The results table says how each method did; this one says what the world model it trained in could do, per
held-out split (val: ID scenes, ood_*: the OOD ones), from WORLD_MODEL_DIR/tables/{tokenizer,tokenize,
dynamics,reward}.json:

    tokenizer PSNR                       how well frames survive the tokens
    token / patch stability              share of tokens equal between consecutive real frames, beside the
                                         share of token-sized pixel patches that did not change at all
    held-out loss / changed accuracy     dynamics: its training objective on held-out windows (beside
                                         train/ce in metrics.jsonl: the gap is memorisation) and its
                                         accuracy on the tokens that changed from the previous frame
    open-loop gain over copy-last-frame  dynamics: imagined PSNR minus copying the last real frame (dB, with
                                         the 95% half-width); below 0 the model is worse than standing still;
                                         "anchored": imagined frames drawn against the real last frame
    gain over shuffled actions           dynamics: does it listen to its actions (dB)
    tokens changed per step              share of tokens an imagined step changes, beside the real frames'
                                         (near 0: imagination stands still)
    gripper / cube error after H steps   the state probe on imagined frames (cm), beside copy-last-frame's;
                                         how much closer the true actions put the gripper than shuffled ones
    guard AUC                            does the rollout's summed surprise (-log frame confidence) flag the
                                         steps where imagination left the real episode (probe readings > 5 cm
                                         apart), beside the step count alone and within each step
    done AUC                             the done head that pays the success bonus
    done fires without / with success    along the state probe's open loops (held-out real actions): the
                                         share of windows whose real frames never (or do) reach success
                                         where the done head passes 0.9 on imagined frames, beside the same
                                         head on the real frames; the exploitation gap without a policy
    reward ~ task, real / imagined       Spearman of the endogenous reward with the handcrafted reward within
                                         episodes, on real and on imagined frames (rsr/rewards/quality.py)
    learned head ~ task                  the same for the exogenous baseline's head (real frames)

A report that a stage did not write (a world model trained without it, or before it existed) is "n/a".
"""

from __future__ import annotations

import json
import os

from rsr import stages

# (row label, stage table, key(s) after "SPLIT/", format); "ci" names a half-width shown after the value.
# Several keys fill one cell, formatted together.
ROWS = (
    ("tokenizer PSNR (dB)", "tokenizer", "psnr", "{:.2f}", None),
    ("token / patch stability", "tokenize", ("token_stability", "patch_stability"), "{:.3f} / {:.3f}", None),
    ("held-out loss / changed-token accuracy", "dynamics", ("ce", "changed_acc"), "{:.3f} / {:.3f}", None),
    ("open-loop gain over copy-last-frame (dB)", "dynamics", "gain_over_copy", "{:+.2f}", "gain_over_copy_ci95"),
    ("same, anchored frames (dB)", "dynamics", "gain_over_copy_anchored", "{:+.2f}", None),
    ("gain over shuffled actions (dB)", "dynamics", "gain_over_shuffled", "{:+.3f}", None),
    ("tokens changed per step, imagined / real", "dynamics", ("tokens_changed", "tokens_changed_real"),
     "{:.3f} / {:.3f}", None),
    ("gripper error, imagined / copy (cm)", "dynamics",
     ("probe_gripper_imagined_final", "probe_gripper_copy_final"), "{:.1f} / {:.1f}", None),
    ("cube error, imagined / copy (cm)", "dynamics",
     ("probe_cube_a_imagined_final", "probe_cube_a_copy_final"), "{:.1f} / {:.1f}", None),
    ("gripper closer than with shuffled actions (cm)", "dynamics", "probe_gripper_gain_over_shuffled_final",
     "{:+.1f}", "probe_gripper_gain_over_shuffled_ci95_final"),
    ("guard AUC: surprise / step count / within a step", "dynamics",
     ("guard_auc", "guard_auc_horizon", "guard_auc_within"), "{:.2f} / {:.2f} / {:.2f}", None),
    ("done AUC", "dynamics", "done_auc", "{:.3f}", None),
    ("done fires without success, imagined / real frames", "dynamics",
     ("done_open_loop_false_imagined", "done_open_loop_false_real"), "{:.2f} / {:.2f}", None),
    ("done fires with success, imagined / real frames", "dynamics",
     ("done_open_loop_recall_imagined", "done_open_loop_recall_real"), "{:.2f} / {:.2f}", None),
    ("endogenous alignment ~ task, real frames", "reward", "align_spearman_within", "{:+.2f}", None),
    ("endogenous reward ~ task, imagined frames", "reward", "imagined_reward_spearman_within", "{:+.2f}", None),
    ("learned reward head ~ task, real frames", "reward", "head_spearman_within", "{:+.2f}", None),
)


def load(world_model_dir: str) -> dict[str, dict]:
  """{stage: its tables/STAGE.json} for the stages that wrote one."""
  out = {}
  for stage in stages.WORLD_MODEL:
    path = os.path.join(world_model_dir, "tables", f"{stage}.json")
    if os.path.isfile(path):
      with open(path) as f:
        out[stage] = json.load(f)
  return out


def splits(reports: dict[str, dict]) -> list[str]:
  """The held-out splits any report covers: val first, then the OOD ones in name order."""
  found = {k.split("/", 1)[0] for r in reports.values() for k in r if "/" in k}
  return sorted(found, key=lambda s: (s != "val", s))


def markdown(reports: dict[str, dict]) -> str | None:
  """The table as markdown (None when there is no report at all)."""
  cols = splits(reports)
  if not cols:
    return None
  lines = ["| world model, held out | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
  for label, stage, key, fmt, ci in ROWS:
    cells, r = [], reports.get(stage, {})
    for split in cols:
      keys = key if isinstance(key, tuple) else (key,)
      values = [r.get(f"{split}/{k}") for k in keys]
      if any(v is None for v in values):
        cells.append("n/a")
        continue
      cell = fmt.format(*values)
      if ci and r.get(f"{split}/{ci}") is not None:
        cell += f" ± {r[f'{split}/{ci}']:.2f}"
      cells.append(cell)
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
