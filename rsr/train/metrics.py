"""Metric writing: one JSON object per line in WORKDIR/metrics.jsonl, {"stage", "step", metrics...}, and
the same scalars as TensorBoard events in WORKDIR/tb/STAGE (tensorboardX: no TensorFlow needed).

A resumed stage continues the same file; its lines past the step it resumes from (logged by the killed run
after its last checkpoint) are dropped first, so the file never holds two histories of one stage; the
TensorBoard writer purges those steps the same way (`purge_step`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np


def _plain(v: Any):
  v = np.asarray(v)
  return v.item() if v.ndim == 0 else v.tolist()


class MetricsWriter:
  def __init__(self, workdir: str, stage: str, resume_step: int = 0, filename: str = "metrics.jsonl"):
    self.stage = stage
    self.path = os.path.join(workdir, filename)
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      # Keep only what the checkpoint we resume from had already seen (a killed run may have logged more).
      with open(self.path) as f:
        lines = [ln for ln in f if ln.strip()]
      keep = []
      for ln in lines:
        try:
          rec = json.loads(ln)
        except json.JSONDecodeError:  # a line cut by a kill
          continue
        if rec.get("stage") != stage or rec.get("step", 0) <= resume_step:
          keep.append(json.dumps(rec) + "\n")
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, self.path)

    from tensorboardX import SummaryWriter

    self._tb = SummaryWriter(os.path.join(workdir, "tb", stage), purge_step=resume_step + 1)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    rec = {"stage": self.stage, "step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(rec) + "\n")
    for k, v in rec.items():
      if k not in ("stage", "step") and isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, int(step))
    self._tb.flush()

  def close(self) -> None:
    self._tb.close()
