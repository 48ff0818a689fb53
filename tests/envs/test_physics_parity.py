"""MJX physics against C MuJoCo (the oracle): the cubes follow the same trajectories under the expert,
clean and with the action noise data collection uses.

Each task is reset in a batch of scenes (splits cycled): EPISODES_PER_LEVEL of the clean expert and as
many for each noise level in NOISE_LEVELS, whose Gaussian noise is added to every expert action as
`data_pipelines/behaviour.py` does. A C twin of every environment is built right after the reset
(`oracle.to_mujoco`). Then, for N_STEPS control steps, the expert picks actions from the MJX states; MJX
steps with them (`env.step`, vmapped), and each C twin steps with the same action, mapped to servo
targets by `action_to_ctrl` from the twin's own joint positions (`rsr/envs/tabletop/parity.py`).

At most MAX_PARTED of a task's episodes may let a cube part from its twin by more than TOL within N_STEPS.
Not none: a cube dropped on an edge goes one way or the other on a hair (C MuJoCo started 0.1 mm apart
from itself splits so in a few noisy episodes of a hundred), and a paddle that meets a cube's vertical
edge head-on pushes it through a box-box contact that MJX resolves with its lower point counted three
times (docs/decisions.md), which turns the cube the other way in about 1 clean push of 30. Which episodes
part moves with the machine's floating point (another CPU parts other episodes), so the bound is binomial:
at PART_RATE per episode, more than MAX_PARTED parted episodes happen in under 1% of runs, while a real
loss of fidelity (1 episode in 5 parting) exceeds it in most.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import stats

from rsr.envs import TASK_NAMES
from rsr.envs.tabletop import parity
from tests.conftest import BATCH_SPLITS

N_STEPS = 50
TOL = 0.01  # m
MIN_TRAVEL = 0.03  # m: the clean expert must move a cube this far, or the comparison says little
NOISE_LEVELS = (0.0, 0.1, 0.3)  # the clean expert and the collection presets' noisy levels
EPISODES_PER_LEVEL = 2 * len(BATCH_SPLITS)
PART_RATE = 0.05  # push_cube, the worst task, over two machines: 4 of 84 episodes (docs/decisions.md)
MAX_PARTED = int(stats.binom.isf(0.01, EPISODES_PER_LEVEL * len(NOISE_LEVELS), PART_RATE))


@pytest.mark.parametrize("task", TASK_NAMES)
def test_cube_trajectories_match_c_mujoco(task, batched_env):
  be = batched_env(task)
  noise = np.repeat(np.asarray(NOISE_LEVELS), EPISODES_PER_LEVEL)
  drift = parity.compare(be.env, be.reset, be.step, be.expert, noise, BATCH_SPLITS, jax.random.PRNGKey(1),
                         steps=N_STEPS)
  worst = drift.mjx_vs_c.max(axis=0)
  per_level = {s: f"{np.sum(worst[noise == s] <= TOL)}/{np.sum(noise == s)}" for s in NOISE_LEVELS}
  apart = {f"{drift.split[i]}, noise {noise[i]}": f"{worst[i] * 1e3:.1f}" for i in np.flatnonzero(worst > TOL)}
  print(f"{task}: episodes within {TOL * 1e3:.0f} mm per noise level {per_level}; apart (max mm) {apart}")
  clean = noise == 0
  assert np.all(drift.travel[clean] > MIN_TRAVEL), (
      f"{task}: the expert moved no cube far enough: {drift.travel[clean] * 1e3} mm")
  parted = int(np.sum(worst > TOL))
  assert parted <= MAX_PARTED, (
      f"{task}: {parted} of the expert's {worst.size} episodes let MJX and C MuJoCo part by more than "
      f"{TOL * 1e3:.0f} mm within {N_STEPS} steps (at most {MAX_PARTED}; per noise level {per_level}; "
      f"apart (max mm) {apart})")
