"""The resumable training loop every stage shares: restore, step, log, evaluate, checkpoint.

A stage hands over its initial state (a pytree with an integer `step` field), a jitted step
`(state, batch) -> (state, metrics)`, a `WindowLoader` (or None for a stage that makes its own data, such
as PPO: its batch is then None), and an evaluation `state -> metrics`. Resuming restores the state AND the
loader's position from the latest checkpoint, so the batches, and therefore the losses, after a resume are
those of an uninterrupted run. A damaged latest checkpoint is moved aside and the previous kept one resumed
(rsr/train/checkpoint.py): the same batches follow, so the metrics match an undamaged run's.

A non-finite `loss` stops the stage with a FloatingPointError before anything is logged or saved, and a
checkpoint is saved only when every value in it is finite: so every kept checkpoint was saved after a run
of steps whose losses were all finite. Finite is not sound, though: a run that diverges passes through
huge finite values first, so the error names the kept steps and their losses rather than calling the
latest one good.

With a `mesh` (rsr/train/sharding.py) the state is placed on it (replicated, or FSDP-sharded on `model`),
the loader assembles every batch as a global array split over all devices from each process's own part,
and a restore lands on the same shardings. Every process runs the loop (orbax saves from all of them);
metrics, TensorBoard and the progress bar are process 0's.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import numpy as np
from tqdm.auto import tqdm

from data_pipelines.loader import LoaderState
from rsr.train import sharding
from rsr.train.checkpoint import Checkpointer
from rsr.train.metrics import MetricsWriter


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When a stage stops and what it does on the way, in steps: it logs every `log_every`, evaluates every
  `eval_every` and saves every `checkpoint_every`, and does all three at the last step."""

  steps: int
  eval_every: int
  checkpoint_every: int
  log_every: int = 10


def run(stage: str, workdir: str, state: Any, step_fn: Callable, evaluate: Callable[[Any], Mapping[str, float]],
        schedule: Schedule, compat: Mapping[str, Any], *, loader=None,
        batch_fn: Callable[[dict], Any] = lambda b: b, progress: bool = True,
        max_steps_this_run: int | None = None, mesh=None, fsdp: bool = False) -> tuple[Any, dict, bool]:
  """Runs `stage` to `schedule.steps`; returns (state, last evaluation, finished). See the module docstring.

  Writes WORKDIR/checkpoints/STAGE (orbax), WORKDIR/tb/STAGE (TensorBoard) and `metrics.jsonl` lines
  {"stage": STAGE, "step", ...}.
  `max_steps_this_run` stops early as a kill would (tests of resume use it); then finished is False.
  """
  steps, eval_every, checkpoint_every, log_every = (schedule.steps, schedule.eval_every,
                                                    schedule.checkpoint_every, schedule.log_every)
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
    state, extra = ckpt.restore(state, fallback=True)
    loader_state = LoaderState(step=np.asarray(extra["loader_step"], np.int64))
  start = int(state.step)
  writer = MetricsWriter(workdir, stage, resume_step=start) if lead else _NoWriter()
  last: dict = {}
  losses: dict[int, float] = {}  # step -> loss since the last save (the NaN stop reports them)
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
        raise FloatingPointError(_diverged(stage, float(m["loss"]), done, ckpt, losses))
      if "loss" in m:
        losses[done] = float(m["loss"])
      if done % log_every == 0 or done == steps:
        m = {k: float(v) for k, v in m.items()}
        writer.write(done, {f"train/{k}": v for k, v in m.items()})
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(m.items())[:3]})
      if done % eval_every == 0 or done == steps:
        last = dict(evaluate(state))
        writer.write(done, last)
      if done % checkpoint_every == 0 or done == steps:
        ckpt.save(done, state, {"loader_step": int(loader_state.step), **({"loss": losses[done]} if done in losses
                                                                          else {})})
        losses = {}
      bar.update(1)
  finally:
    bar.close()
    it.close()
    ckpt.close()
    writer.close()
  if not last:  # nothing left to train: report on the restored final state
    last = dict(evaluate(state))
  return state, last, True


def _diverged(stage: str, loss: float, step: int, ckpt: Checkpointer, losses: Mapping[int, float]) -> str:
  """The NaN stop's message: where it stopped, what is kept (with the loss each step was saved at), what to
  do. The run is deterministic: resumed with the same config, it diverges again at the same step."""
  kept = ckpt.steps()
  head = f"{stage}: the loss is {loss} at step {step}; stopped without saving. "
  advice = "Lower the stage's learning rate or raise its gradient clipping, then re-run"
  if not kept:
    return head + f"No checkpoint was saved yet in {ckpt.directory}: a re-run starts the stage over. " + advice

  def saved_at(s: int) -> str:
    try:
      x = ckpt.read_extra(s).get("loss")
    except Exception:  # noqa: BLE001 - only for this message; a resume verifies the step anyway
      return ""
    return f" (loss {x:.4g})" if x is not None else ""

  last = f", last {losses[max(losses)]:.4g} at step {max(losses)}" if losses else ""
  return (head + f"Kept in {ckpt.directory}: " + ", ".join(f"step {s}{saved_at(s)}" for s in kept)
          + f"; the loss stayed finite from step {kept[-1]} to {step - 1}{last}, but a re-run with the same "
          f"config resumes from step {kept[-1]} and diverges the same way. " + advice
          + f" (to start from step {kept[0]} instead, move {os.path.join(ckpt.directory, str(kept[-1]))} away)"
          * (len(kept) > 1))


class _NoWriter:
  """Processes other than 0 write no metrics."""

  def write(self, step, metrics):
    del step, metrics

  def close(self):
    pass


class _NoData:
  """The loader of a stage without a dataset: batches are None, the position is the step."""

  def init_state(self):
    return LoaderState(step=np.asarray(0, np.int64))

  def iterate(self, state, sharding=None):  # noqa: ARG002 - the loaders' signature
    del sharding
    def gen():
      step = int(state.step)
      while True:
        step += 1
        yield None, LoaderState(step=np.asarray(step, np.int64))

    return gen()
