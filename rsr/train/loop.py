"""The resumable training loop every stage shares: restore, step, log, evaluate, checkpoint.

A stage hands over its initial state (a pytree with an integer `step` field), a jitted step
`(state, batch) -> (state, metrics)`, a `WindowLoader` (or None for a stage that makes its own data, such
as PPO: its batch is then None), and an evaluation `state -> metrics`. Resuming restores the state AND the
loader's position from the latest checkpoint, so the batches, and therefore the losses, after a resume are
those of an uninterrupted run. A non-finite `loss` stops the stage with an error before anything is logged
or saved, so the latest checkpoint is always the last good state.

With a `mesh` (rsr/train/sharding.py) the state is placed on it (replicated, or FSDP-sharded on `model`),
the loader assembles every batch as a global array split over all devices from each process's own part,
and a restore lands on the same shardings. Every process runs the loop (orbax saves from all of them);
metrics, TensorBoard and the progress bar are process 0's.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np
from tqdm.auto import tqdm

from rsr.train.checkpoint import Checkpointer
from rsr.train.metrics import MetricsWriter


def run(stage: str, workdir: str, state: Any, loader, step_fn: Callable, steps: int,
        evaluate: Callable[[Any], Mapping[str, float]], eval_every: int, checkpoint_every: int,
        compat: Mapping[str, Any], batch_fn: Callable[[dict], Any] = lambda b: b, log_every: int = 10,
        progress: bool = True, max_steps_this_run: int | None = None, mesh=None,
        fsdp: bool = False) -> tuple[Any, dict, bool]:
  """Runs `stage` to `steps`; returns (state, last evaluation, finished). See the module docstring.

  Writes WORKDIR/checkpoints/STAGE (orbax), WORKDIR/tb/STAGE (TensorBoard) and `metrics.jsonl` lines {"stage": STAGE, "step", ...}.
  `max_steps_this_run` stops early as a kill would (tests of resume use it); then finished is False.
  """
  from data_pipelines.loader import LoaderState
  from rsr.train import sharding

  lead = sharding.lead()
  batch_sharding, placed = None, None
  if mesh is not None:
    placed = sharding.state_shardings(state, mesh, fsdp)
    state = sharding.place(state, placed)
    batch_sharding = sharding.batch_sharding(mesh)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints", stage), compat=compat)
  loader = loader if loader is not None else _NoData()
  loader_state = loader.init_state()
  if ckpt.latest_step() is not None:
    state, extra = ckpt.restore(state)
    loader_state = LoaderState(step=np.asarray(extra["loader_step"], np.int64))
  start = int(state.step)
  writer = MetricsWriter(workdir, stage, resume_step=start) if lead else _NoWriter()
  last: dict = {}
  it = loader.iterate(loader_state, sharding=batch_sharding)
  bar = tqdm(total=steps, initial=start, desc=stage, unit="step", disable=not (progress and lead),
             dynamic_ncols=True)
  try:
    for s in range(start, steps):
      if max_steps_this_run is not None and s - start >= max_steps_this_run:
        return state, last, False
      batch, loader_state = next(it)
      state, m = step_fn(state, batch_fn(batch))
      if placed is not None:  # XLA may pick other shardings for some outputs: keep one layout (one compile)
        state = sharding.place(state, placed)
      done = s + 1
      if "loss" in m and not np.isfinite(float(m["loss"])):
        raise FloatingPointError(
            f"{stage}: the loss is {float(m['loss'])} at step {done}; stopped without saving. The latest "
            f"checkpoint in {ckpt.directory} (step {ckpt.latest_step()}) is the last good state")
      if done % log_every == 0 or done == steps:
        m = {k: float(v) for k, v in m.items()}
        writer.write(done, {f"train/{k}": v for k, v in m.items()})
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(m.items())[:3]})
      if done % eval_every == 0 or done == steps:
        last = dict(evaluate(state))
        writer.write(done, last)
      if done % checkpoint_every == 0 or done == steps:
        ckpt.save(done, state, {"loader_step": int(loader_state.step)})
      bar.update(1)
  finally:
    bar.close()
    it.close()
    ckpt.close()
    writer.close()
  if not last:  # nothing left to train: report on the restored final state
    last = dict(evaluate(state))
  return state, last, True


class _NoWriter:
  """Processes other than 0 write no metrics."""

  def write(self, step, metrics):
    del step, metrics

  def close(self):
    pass


class _NoData:
  """The loader of a stage without a dataset: batches are None, the position is the step."""

  def init_state(self):
    from data_pipelines.loader import LoaderState
    return LoaderState(step=np.asarray(0, np.int64))

  def iterate(self, state, sharding=None):
    from data_pipelines.loader import LoaderState

    del sharding
    def gen():
      step = int(state.step)
      while True:
        step += 1
        yield None, LoaderState(step=np.asarray(step, np.int64))

    return gen()
