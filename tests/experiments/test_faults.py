"""Fault injection (issue 24): every failure a clear message, and nothing lost.

Each case injects one fault a careful user could meet and asserts what they see: the exit code, that the
message names the file, field or step, that a bad setting fails before anything compiles (JAX's compile
log, JAX_LOG_COMPILES=1, stays empty), and that a damaged checkpoint falls back to the previous kept step
and resumes with the metrics of an undamaged run.

The checkpoint cases train a toy state through the real stage loop (rsr/train/loop.py: the one every
trainer resumes through), so they compile one tiny step; the settings and collect cases run the binaries on
the session's tiny dataset (tests/conftest.py).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from rsr.train import loop
from rsr.train.checkpoint import Checkpointer, CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args, timeout=600):
  """A binary as a user runs it, with JAX's compile log on; (result, seconds)."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_LOG_COMPILES="1")
  env.pop("RSR_VERBOSE", None)
  t0 = time.time()
  r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=timeout)
  return r, time.time() - t0


def _error_lines(stderr: str) -> list[str]:
  """The lines the error surface printed (absl/JAX log lines and progress bars aside)."""
  return [ln for ln in stderr.splitlines() if ln.startswith("error: ") or ln.startswith("(the traceback")]


def _compiles(stderr: str) -> list[str]:
  return [ln for ln in stderr.splitlines() if "Compiling " in ln]


# ---- checkpoints: verified on restore, the previous kept step when the latest is damaged ----------------

@struct.dataclass
class _Toy:
  step: jax.Array
  w: jax.Array


def _step(state, _):
  w = state.w * 0.9 + 1.0
  return _Toy(step=state.step + 1, w=w), {"loss": w.sum()}


_INIT = _Toy(step=jnp.zeros((), jnp.int32), w=jnp.zeros((4,)))


def _train(workdir: str, steps: int, step_fn=_step):
  """The toy stage to `steps`, a checkpoint every 2 steps (2 kept), every loss logged."""
  return loop.run("toy", workdir, _INIT, step_fn, lambda s: {}, loop.Schedule(steps, 100, 2, log_every=1),
                  {"toy": 1}, progress=False)


def _losses(workdir: str) -> list[tuple[int, float]]:
  lines = [json.loads(ln) for ln in open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()]
  return [(ln["step"], ln["train/loss"]) for ln in lines if "train/loss" in ln]


def _data_file(step_dir: str) -> str:
  """The file that holds the arrays' bytes (orbax's OCDBT data directory of the merged checkpoint)."""
  files = sorted(glob.glob(os.path.join(step_dir, "state", "d", "*")))
  assert files, os.listdir(os.path.join(step_dir, "state"))
  return files[0]


def _delete_data(step_dir):
  path = _data_file(step_dir)
  os.remove(path)
  return os.path.basename(path)


def _truncate_data(step_dir):
  path = _data_file(step_dir)
  with open(path, "r+b") as f:
    f.truncate(10)
  return os.path.basename(path)


def _flip_data_byte(step_dir):
  path = _data_file(step_dir)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))
  return os.path.join("4", "state")  # a checksum mismatch names the step's state; a decode error the file


def _remove_metadata(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))
  return "_METADATA"


def _remove_extra(step_dir):
  shutil.rmtree(os.path.join(step_dir, "extra"))
  return os.path.join("4", "extra")


DAMAGE = {"data_file_deleted": _delete_data, "data_file_truncated": _truncate_data,
          "data_byte_flipped": _flip_data_byte, "metadata_removed": _remove_metadata, "extra_removed": _remove_extra}


@pytest.fixture(scope="module")
def straight_losses(tmp_path_factory) -> list[tuple[int, float]]:
  workdir = str(tmp_path_factory.mktemp("straight"))
  _train(workdir, 6)
  return _losses(workdir)


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_latest_checkpoint_falls_back(case, straight_losses, tmp_path, capsys):
  workdir = str(tmp_path)
  _train(workdir, 4)  # keeps steps 2 and 4
  directory = os.path.join(workdir, "checkpoints", "toy")
  named = DAMAGE[case](os.path.join(directory, "4"))
  capsys.readouterr()
  t0 = time.time()
  _train(workdir, 6)  # the same command again, to a later step: resumes
  seconds = time.time() - t0
  err = capsys.readouterr().err
  lines = [ln for ln in err.splitlines() if ln.startswith("checkpoint: ")]
  assert len(lines) == 1, err
  assert f"step 4 in {directory} is damaged" in lines[0] and named in lines[0], lines[0]
  assert "resuming from step 2" in lines[0] and "tensorstore_spec" not in lines[0], lines[0]
  assert os.path.isdir(os.path.join(directory, "damaged", "4"))  # kept for inspection, out of orbax's view
  assert _losses(workdir) == straight_losses  # steps 3 and 4 again, then 5 and 6: as if nothing happened
  print(f"{case}: {seconds:.2f}s: {lines[0]}")


def test_binary_resumes_past_a_damaged_checkpoint(tiny_dataset, tmp_path):
  """A real stage as a user runs it (the tiny tokenizer, checkpoints at 4, 8, 12): _METADATA of the
  finished step 12 removed, the same command again resumes from step 8 and ends with the same metrics."""
  workdir = tmp_path / "wm"
  cmd = ("experiments.train_world_model", "--config=experiments/configs/world_model.py:tiny",
         f"--config.data_dir={tiny_dataset}", "--config.stages=tokenizer", f"--workdir={workdir}")
  r, _ = _run(*cmd, timeout=1200)
  assert r.returncode == 0, r.stderr[-3000:]
  before, result = (workdir / "metrics.jsonl").read_text(), r.stdout
  directory = workdir / "checkpoints" / "tokenizer"
  assert sorted(int(d) for d in os.listdir(directory) if d.isdigit()) == [8, 12]
  os.remove(directory / "12" / "state" / "_METADATA")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  t0 = time.time()
  proc = subprocess.Popen([sys.executable, "-m", *cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  seen = None
  for line in proc.stderr:  # the moment the user is told
    if line.startswith("checkpoint: ") and seen is None:
      seen = (time.time() - t0, line.strip())
  out = proc.stdout.read()
  assert proc.wait(timeout=1200) == 0
  assert seen is not None
  assert seen[1] == (f"checkpoint: step 12 in {directory} is damaged: {directory}/12/state/_METADATA is missing; "
                     f"moved it to {directory}/damaged/12 and resuming from step 8"), seen[1]
  assert (workdir / "metrics.jsonl").read_text() == before
  assert [ln for ln in out.splitlines() if ln.startswith("tokenizer:")] == \
      [ln for ln in result.splitlines() if ln.startswith("tokenizer:")]
  print(f"train_world_model, step 12 _METADATA removed: told after {seen[0]:.1f}s: {seen[1]}")


def test_damaged_checkpoint_without_fallback_is_named(tmp_path):
  """A direct restore (evaluation, a later stage's load) does not move anything: it names step and file."""
  workdir = str(tmp_path)
  _train(workdir, 4)
  directory = os.path.join(workdir, "checkpoints", "toy")
  _remove_metadata(os.path.join(directory, "4"))
  ckpt = Checkpointer(directory, compat={"toy": 1})
  try:
    with pytest.raises(CheckpointError, match=r"step 4 in .* is damaged: .*_METADATA is missing.*from step 2"):
      ckpt.restore(_INIT)
    state, _ = ckpt.restore(_INIT, step=2)  # the earlier step is untouched and good
  finally:
    ckpt.close()
  assert int(state.step) == 2 and os.path.isdir(os.path.join(directory, "4"))


def test_every_kept_step_damaged(tmp_path):
  workdir = str(tmp_path)
  _train(workdir, 4)
  directory = os.path.join(workdir, "checkpoints", "toy")
  for step in ("2", "4"):
    _delete_data(os.path.join(directory, step))
  with pytest.raises(CheckpointError, match=r"every kept step in .* is damaged \(4, 2.*move .* away"):
    _train(workdir, 6)


# ---- nothing non-finite is ever saved -----------------------------------------------------------------

def test_non_finite_state_is_never_saved(tmp_path):
  directory = str(tmp_path / "ckpt")
  ckpt = Checkpointer(directory, compat={"toy": 1})
  try:
    bad = _Toy(step=jnp.asarray(2, jnp.int32), w=jnp.asarray([1.0, jnp.inf, 0.0, 0.0]))
    with pytest.raises(FloatingPointError, match=r"step 2 holds non-finite values in w; nothing was saved"):
      ckpt.save(2, bad, {"loader_step": 2})
    assert ckpt.latest_step() is None
  finally:
    ckpt.close()
  assert not glob.glob(os.path.join(directory, "*tmp*"))


def test_finite_loss_but_diverged_state_stops_unsaved(tmp_path):
  """The loss stays finite while a parameter overflows: the save at step 4 refuses, step 2 stays latest."""
  def step_fn(state, _):
    w = jnp.where(state.step >= 2, jnp.inf, state.w + 1.0)
    return _Toy(step=state.step + 1, w=w), {"loss": jnp.float32(1.0)}

  with pytest.raises(FloatingPointError, match=r"step 4 holds non-finite values in w; nothing was saved"):
    _train(str(tmp_path), 6, step_fn)
  ckpt = Checkpointer(str(tmp_path / "checkpoints" / "toy"), compat={"toy": 1})
  try:
    assert ckpt.steps() == [2]
    state, _ = ckpt.restore(_INIT)
  finally:
    ckpt.close()
  assert np.isfinite(np.asarray(state.w)).all()


def test_nan_loss_before_any_checkpoint_says_so(tmp_path):
  def step_fn(state, _):
    return _Toy(step=state.step + 1, w=state.w), {"loss": jnp.float32(jnp.nan)}

  with pytest.raises(FloatingPointError) as e:
    _train(str(tmp_path), 6, step_fn)
  message = str(e.value)
  assert "loss is nan at step 1" in message and "No checkpoint was saved yet" in message
  assert "step None" not in message


def test_disk_full_during_save_leaves_nothing_behind(tmp_path, monkeypatch):
  """A save that fails part-way (here: the disk fills while orbax writes) removes its temporary directory,
  keeps the previous step, and reads as one line at the binaries' error surface."""
  import errno

  from experiments import common

  directory = str(tmp_path / "ckpt")
  ckpt = Checkpointer(directory, compat={"toy": 1})
  try:
    ckpt.save(2, _INIT.replace(step=jnp.asarray(2, jnp.int32)), {"loader_step": 2})

    def full(step, args):
      os.makedirs(os.path.join(directory, f"{step}.orbax-checkpoint-tmp-1234", "state"))
      raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt._manager, "save", full)
    with pytest.raises(OSError) as e:
      ckpt.save(4, _INIT.replace(step=jnp.asarray(4, jnp.int32)), {"loader_step": 4})
    assert ckpt.latest_step() == 2
  finally:
    ckpt.close()
  assert e.value.errno == errno.ENOSPC and "while saving step 4" in str(e.value) and "latest kept step is 2" in str(e.value)
  assert not glob.glob(os.path.join(directory, "*tmp*"))
  message = common.describe(e.value)
  assert "no space left on the device while saving step 4" in message and "free space" in message, message


# ---- bad settings: one line naming the field, before anything compiles --------------------------------

def _tiny_spec():
  from data_pipelines import collect as collect_lib
  from tests.conftest import tiny_collect_config

  return collect_lib.CollectConfig.from_config(tiny_collect_config()).spec()


@pytest.mark.parametrize("field,value", [
    ("dynamics_train.batch_size", -4), ("tokenizer_train.steps", -5), ("dynamics_train.steps", 0),
    ("tokenizer_train.lr", float("nan")), ("dynamics.heads", -1), ("reward_head.batch_size", -2),
])
def test_world_model_check_names_the_field(field, value):
  """The validation every world-model command runs first, for every stage it will run."""
  from experiments.configs import world_model as presets
  from rsr.stages import world_model as wm_stages

  c = presets.get_config("tiny")
  section, name = field.split(".")
  if section == "reward_head" and section not in c:
    pytest.skip("the tiny preset has no reward_head section")
  c[section][name] = value
  with pytest.raises(ValueError, match=rf"^{field}\b"):
    wm_stages.check(c, ("tokenizer", "tokenize", "dynamics", "goal", "reward"), _tiny_spec())
  wm_stages.check(presets.get_config("tiny"), ("tokenizer", "tokenize", "dynamics", "goal", "reward"), _tiny_spec())


@pytest.mark.parametrize("field,value", [("bc.batch_size", -16), ("ppo.num_envs", -8), ("ppo.gamma", 1.5),
                                         ("ppo.rollout_len", 0)])
def test_policy_check_names_the_field(field, value):
  from experiments.configs import policy as presets
  from rsr.stages import policy_config

  c = presets.get_config("tiny")
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=rf"^{field}\b"):
    policy_config.check(c, ["bc", "ppo"])
  policy_config.check(presets.get_config("tiny"), ["bc", "ppo"])


@pytest.mark.parametrize("binary,args,named", [
    ("train_world_model", ("--config.dynamics_train.batch_size=-4",), "dynamics_train.batch_size must be"),
    ("train_world_model", ("--config.tokenizer_train.steps=-5",), "tokenizer_train.steps must be"),
    ("train_policy", ("--config.ppo.num_envs=-8",), "ppo.num_envs must be"),
    ("train_policy", ("--config.bc.batch_size=-16",), "bc.batch_size must be"),
    ("train_policy", ("--config.world_model_dir={tmp}/no_such_world_model",), "no_such_world_model does not exist"),
    ("train_policy", ("--config.world_model_dir={data}",), "is a collect workdir (a dataset)"),
])
def test_bad_setting_fails_before_compiling(binary, args, named, tiny_dataset, tmp_path):
  preset = {"train_world_model": "world_model", "train_policy": "policy"}[binary]
  args = [a.format(tmp=tmp_path, data=tiny_dataset) for a in args]
  r, seconds = _run(f"experiments.{binary}", f"--config=experiments/configs/{preset}.py:tiny",
                    f"--config.data_dir={tiny_dataset}", *args, f"--workdir={tmp_path / 'work'}")
  lines = _error_lines(r.stderr)
  assert r.returncode != 0 and lines and named in lines[0], r.stderr[-3000:]
  assert len(lines) <= 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert not _compiles(r.stderr), _compiles(r.stderr)[:3]
  assert not os.path.exists(tmp_path / "work" / "checkpoints")
  print(f"{binary} {' '.join(args)}: rc {r.returncode}, {seconds:.1f}s: {lines[0]}")


@pytest.mark.parametrize("args,named", [
    (("--config.world_model.dynamics_train.batch_size=-4",), "world_model.dynamics_train.batch_size must be"),
    (("--config.world_model.tokenizer_train.steps=-5",), "world_model.tokenizer_train.steps must be"),
    (("--config.policy.ppo.num_envs=-8",), "policy.ppo.num_envs must be"),
])
def test_reproduce_checks_every_stage_first(args, named, tmp_path):
  """The whole chain's settings (world model, then a policy per method) before it collects anything."""
  r, seconds = _run("experiments.reproduce", "--config=experiments/configs/reproduce.py:tiny", *args,
                    f"--workdir={tmp_path}")
  lines = _error_lines(r.stderr)
  assert r.returncode == 1 and lines and lines[0].startswith(f"error: {named}"), r.stderr[-3000:]
  assert not _compiles(r.stderr) and not os.path.exists(tmp_path / "data")
  print(f"reproduce {' '.join(args)}: rc {r.returncode}, {seconds:.1f}s: {lines[0]}")


@pytest.mark.parametrize("args,named", [
    (("--config=experiments/configs/world_model.py:huge",), "unknown preset 'huge'; valid presets: tiny"),
    (("--config=experiments/configs/world_model.py:tiny", "--config.dynamics_train.batchsize=4"),
     "--config.dynamics_train.batchsize=4: the config has no field 'batchsize'; did you mean \"batch_size\""),
    (("--config=experiments/configs/world_model.py:tiny", "--config.dynamics_train.batch_size=abc"),
     "error: --config.dynamics_train.batch_size=abc: invalid literal for int()"),
])
def test_bad_flag_is_one_line(args, named, tmp_path):
  """Presets and field typos: no ml_collections traceback, no usage text."""
  r, seconds = _run("experiments.train_world_model", *args, f"--workdir={tmp_path}")
  lines = _error_lines(r.stderr)
  assert r.returncode == 2 and lines and named in lines[0], r.stderr[-3000:]
  assert len([ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]) == 2, r.stderr
  print(f"{' '.join(args)}: rc {r.returncode}, {seconds:.1f}s: {lines[0]}")


def test_verbose_shows_the_traceback(tiny_dataset, tmp_path):
  r, _ = _run("experiments.train_world_model", "--config=experiments/configs/world_model.py:tiny",
              f"--config.data_dir={tiny_dataset}", "--config.tokenizer_train.steps=-5", "--verbose",
              f"--workdir={tmp_path}")
  assert r.returncode != 0 and "Traceback" in r.stderr and "tokenizer_train.steps must be" in r.stderr


# ---- collect: a finished workdir is verified by content; resume hints work as printed -------------------

def test_collect_rerun_detects_an_altered_shard(tiny_dataset, tmp_path):
  from data_pipelines import dataset as dataset_lib

  workdir = tmp_path / "collect"
  shutil.copytree(tiny_dataset, workdir)
  final = dataset_lib.dataset_dir(str(workdir))
  shards = sorted(p for p in glob.glob(os.path.join(final, "*")) if ".tfrecord" in p or ".array_record" in p)
  assert shards, os.listdir(final)
  shard = shards[0]
  data = bytearray(open(shard, "rb").read())
  data[len(data) // 2] ^= 0x01  # one bit, the size unchanged
  open(shard, "wb").write(bytes(data))
  r, seconds = _run("experiments.collect", "--config=experiments/configs/collect.py:tiny",
                    "--config.tasks=push_cube", "--config.ood_splits=('ood_color',)", "--config.ood_episodes=2",
                    f"--workdir={workdir}")
  lines = _error_lines(r.stderr)
  assert r.returncode != 0 and lines, r.stderr[-3000:]
  assert os.path.basename(shard) in lines[0] and "altered" in lines[0], lines[0]
  assert "Traceback" not in r.stderr and "dataset:" not in r.stdout
  print(f"collect re-run, altered shard: rc {r.returncode}, {seconds:.1f}s: {lines[0]}")


def test_unfinished_collection_hint_includes_the_config(tmp_path):
  from data_pipelines import dataset as dataset_lib
  from rsr.utils import configs, media
  from tests.conftest import tiny_collect_config

  workdir = str(tmp_path / "unfinished")
  media.write_json(os.path.join(workdir, ".collect", "config.json"), configs.plain(tiny_collect_config()))
  with pytest.raises(dataset_lib.DatasetError) as e:
    dataset_lib.find(workdir)
  message = str(e.value)
  assert "--config=experiments/configs/collect.py:tiny" in message, message
  assert "--config.tasks=push_cube" in message and "--config.ood_episodes=2" in message, message
  assert f"--workdir={workdir}" in message, message
