"""The dataset card: what a dataset holds (episodes, success, lengths, behaviours) and what it costs on disk."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from rsr.envs.tabletop.tasks import TASKS


def make_card(manifest: Mapping[str, Any], version_dir: str, config: Mapping[str, Any],
              seconds: Mapping[str, float]) -> dict:
  """Counts per task x split, success rates, episode lengths, behaviour mix, size and timing."""
  names = {t.task_id: name for name, t in TASKS.items()}
  rows = []
  for split, s in manifest["splits"].items():
    e = {k: np.asarray(v) for k, v in s["episodes"].items()}
    for tid in sorted(set(e["task_id"].tolist())):
      m = e["task_id"] == tid
      lengths = e["length"][m]
      rows.append({
          "task": names[tid], "split": split, "episodes": int(m.sum()),
          "success_rate": float(e["success"][m].mean()),
          "expert_success_rate": _rate(e["success"][m & ~e["explore"]]),
          "explore_episodes": int((m & e["explore"]).sum()),
          "noise_levels": {f"{lv:g}": int((m & ~e["explore"] & (e["noise"] == lv)).sum())
                           for lv in sorted(set(e["noise"][m & ~e["explore"]].tolist()))},
          "length_mean": float(lengths.mean()), "length_min": int(lengths.min()),
          "length_max": int(lengths.max()), "steps": int(lengths.sum()),
      })
  size = sum(os.path.getsize(os.path.join(version_dir, f)) for f in os.listdir(version_dir)
             if os.path.isfile(os.path.join(version_dir, f)))
  spec = manifest["spec"]
  return {
      "name": manifest["name"], "version": manifest["version"],
      "episodes": sum(r["episodes"] for r in rows), "steps": sum(r["steps"] for r in rows),
      "bytes": size, "image": [spec["height"], spec["width"], 3], "cameras": spec["cameras"],
      "action_dim": spec["action_dim"], "splits": list(manifest["splits"]), "rows": rows,
      "seconds": dict(seconds), "config": dict(config),
  }


def _rate(x: np.ndarray) -> float | None:
  return float(x.mean()) if x.size else None


def markdown(card: Mapping[str, Any]) -> str:
  lines = [
      f"# {card['name']} {card['version']}",
      "",
      f"{card['episodes']} episodes, {card['steps']} steps, {card['bytes'] / 1e6:.1f} MB on disk; images "
      f"{'x'.join(map(str, card['image']))} from {', '.join(card['cameras'])}; actions {card['action_dim']}-D.",
      "Collection time: " + ", ".join(f"{k} {v:.0f} s" for k, v in card["seconds"].items()) + ".",
      "",
      "| task | split | episodes | success | expert success | explore | noise levels (episodes) | length mean [min, max] |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for r in card["rows"]:
    exp = "-" if r["expert_success_rate"] is None else f"{100 * r['expert_success_rate']:.1f}%"
    noise = ", ".join(f"{k}: {v}" for k, v in r["noise_levels"].items())
    lines.append(f"| {r['task']} | {r['split']} | {r['episodes']} | {100 * r['success_rate']:.1f}% | {exp} | "
                 f"{r['explore_episodes']} | {noise} | {r['length_mean']:.1f} [{r['length_min']}, "
                 f"{r['length_max']}] |")
  return "\n".join(lines) + "\n"
