"""The paper's in-domain vs out-of-domain comparison, end to end and resumable (experiments.reproduce).

    run(config, "runs/reproduce")      # config: experiments/configs/reproduce.py

Every sub-run is a normal workdir of its own binary (re-running that binary on it resumes it):

    WORKDIR/config.json                      the resolved reproduce config
    WORKDIR/data/                            experiments.collect (unless config.data_dir names one)
    WORKDIR/world_model/                     experiments.train_world_model, every stage the methods need
                                             (unless config.world_model_dir names one)
    WORKDIR/bc/seed_S/                       experiments.train_policy, stage bc: the ONE behaviour-cloning
                                             initialisation of seed S (one task-conditioned policy, all tasks)
    WORKDIR/runs/METHOD/TASK/seed_S/         experiments.train_policy: bc copied from bc/seed_S, then ppo
    WORKDIR/eval/METHOD/TASK/seed_S/         results.json (as `experiments.evaluate --out`), videos/*.gif
    WORKDIR/tables/                          results.md, results.csv, improvement.csv, results.tex,
                                             results.png, runs.json (rsr/eval/tables.py); world_model.md
                                             (the world model's held-out reports, rsr/stages/diagnostics.py)

Methods (METHODS), all from the same BC weights of a seed and with the same budget of PPO updates
(config.policy.ppo.updates): `bc` (the BC checkpoint itself), `ppo_sim` (PPO in the simulator, handcrafted
reward, id scenes), `ppo_wm_learned` (PPO in the world model, the learned reward head), `roboscape_r` (PPO
in the world model, endogenous reward), `roboscape_r_dyna` (beyond the paper: roboscape_r in rounds, the
world model fine-tuned between them on the policy's own real episodes; the table states each method's real
interaction). Evaluation: the mean action in the real simulator, on
config.eval.splits, scenes from seed eval.seed + S (the same scenes for every method of seed S).

What is done is skipped: the dataset by its manifest, the world model, BC and PPO runs by a DONE.json
written when they finish (holding the config they finished with: a changed config is refused, naming the
fields, rather than silently mixed), an evaluation by its results.json (redone if its settings changed).
Killed anywhere, the same command continues: the stages resume from their checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable

import ml_collections

from data_pipelines import collect as collect_lib
from data_pipelines import dataset as dataset_lib
from data_pipelines import open_dataset
from rsr import stages as stages_lib
from rsr.envs import SPLITS, TASK_NAMES
from rsr.envs.tabletop.tasks import TASKS
from rsr.eval import cost
from rsr.eval import evaluate as ev
from rsr.eval import tables as tables_lib
from rsr.stages import bc as stage_bc
from rsr.stages import diagnostics, policy_config
from rsr.stages import dyna as stage_dyna
from rsr.stages import ppo as stage_ppo
from rsr.stages import reward as stage_reward
from rsr.stages import tokenizer as stage_tokenizer
from rsr.stages import trained as trained_lib
from rsr.stages import world_model as wm_stages
from rsr.utils import checks, media
from rsr.utils import configs as configs_lib

# method -> (env, reward) of its PPO stage; None: behaviour cloning only.
METHODS: dict[str, tuple[str, str] | None] = {
    "bc": None,
    "ppo_sim": ("sim", "handcrafted"),
    "ppo_wm_learned": ("world_model", "learned"),
    "roboscape_r": ("world_model", "endogenous"),
    "roboscape_r_dyna": ("world_model", "endogenous"),
}
# The policy stage after BC of each PPO method: "dyna" refines the world model between rounds of PPO on the
# policy's own real episodes (rsr/stages/dyna.py); every other method runs one PPO stage.
_POLICY_STAGE = {"roboscape_r_dyna": "dyna"}
DONE = "DONE.json"
# Paths differ when a reproduce directory moves; they do not make a finished run another run.
_PATH_FIELDS = ("data_dir", "world_model_dir")
# What the shared BC run depends on (a new PPO budget, say, keeps it).
_BC_FIELDS = ("agent", "bc", "seed")


@dataclasses.dataclass(frozen=True)
class Plan:
  """The grid, validated, and where everything goes."""

  workdir: str
  methods: list[str]
  tasks: list[str]
  seeds: list[int]
  splits: list[str]
  data_dir: str
  world_model_dir: str
  own_data: bool  # collected here (False: config.data_dir, used as it is)
  own_world_model: bool
  world_model_stages: list[str]  # [] when no method needs the world model

  def bc_dir(self, seed: int) -> str:
    return os.path.join(self.workdir, "bc", f"seed_{seed}")

  def run_dir(self, method: str, task: str, seed: int) -> str:
    """The train_policy workdir whose checkpoint `method` evaluates (bc: the shared BC run)."""
    if METHODS[method] is None:
      return self.bc_dir(seed)
    return os.path.join(self.workdir, "runs", method, task, f"seed_{seed}")

  def eval_dir(self, method: str, task: str, seed: int) -> str:
    return os.path.join(self.workdir, "eval", method, task, f"seed_{seed}")

  @property
  def tables_dir(self) -> str:
    return os.path.join(self.workdir, "tables")


def _names(value: str, valid, what: str) -> list[str]:
  names = checks.expand(value, valid, what)
  if len(set(names)) != len(names):
    raise ValueError(f"{what}s: {value!r} names one twice")
  return names


def plan(config: ml_collections.ConfigDict, workdir: str) -> Plan:
  """Validates the whole grid before anything runs or compiles.

  Raises:
    ValueError: naming the config field (methods, tasks, seeds, eval.*, the stages' own fields, ...).
  """

  methods = _names(config.methods, METHODS, "method")
  tasks = _names(config.tasks, TASK_NAMES, "task")
  try:
    seeds = [int(s) for s in str(config.seeds).split(",") if s.strip()]
  except ValueError:
    raise ValueError(f"seeds must be a comma list of integers, got {config.seeds!r}") from None
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise ValueError(f"seeds must be distinct non-negative integers, got {config.seeds!r}")
  splits = _names(config.eval.splits, SPLITS, "split")
  if "id" not in splits:
    raise ValueError(f"eval.splits must include 'id' (the in-domain column), got {config.eval.splits!r}")
  e = config.eval
  for name in ("episodes", "batch_size"):
    if e[name] <= 0:
      raise ValueError(f"eval.{name} must be positive, got {e[name]}")
  if not 0 <= e.videos <= e.episodes:
    raise ValueError(f"eval.videos must be in [0, eval.episodes={e.episodes}], got {e.videos}")
  workdir = os.path.abspath(workdir)
  data_dir = os.path.abspath(config.data_dir) if config.data_dir else os.path.join(workdir, "data")
  wm_dir = os.path.abspath(config.world_model_dir) if config.world_model_dir else os.path.join(workdir, "world_model")
  if config.data_dir and not os.path.isdir(data_dir):
    raise ValueError(f"data_dir: {data_dir} does not exist")
  ds = None
  if config.data_dir:
    ds = dataset_lib.open_dataset(data_dir, verify="none")  # the manifest only: the stages verify the shards
    spec = ds.spec
  else:
    spec = collect_lib.CollectConfig.from_config(_collect_config(config, tasks)).spec()

  needs_wm = any(METHODS[m] and METHODS[m][0] == "world_model" for m in methods)
  stages: list[str] = []
  if needs_wm:
    stages = stages_lib.parse(config.world_model.stages, stages_lib.WORLD_MODEL)
    need = {"tokenizer", "tokenize", "dynamics"} | ({"goal"} if config.policy.wm_env.goal == "model" else set())
    need |= {"reward"} if "ppo_wm_learned" in methods else set()
    missing = [s for s in stages_lib.WORLD_MODEL if s in need and s not in stages]
    if missing and not config.world_model_dir:
      raise ValueError(f"world_model.stages lacks {', '.join(missing)}, which the methods need")
    if config.world_model_dir and not os.path.isfile(os.path.join(wm_dir, "config.json")):
      raise ValueError(f"world_model_dir: no {os.path.join(wm_dir, 'config.json')} (a train_world_model workdir)")
    if not config.world_model_dir:
      with _fields_of(config, "world_model"):
        wm_stages.check(world_model_config_for(config, data_dir), stages, spec)
  p = Plan(workdir=workdir, methods=methods, tasks=tasks, seeds=seeds, splits=splits, data_dir=data_dir,
           world_model_dir=wm_dir, own_data=not config.data_dir, own_world_model=not config.world_model_dir,
           world_model_stages=stages)
  for m in methods:  # with the dataset in hand, a given world model is checked against it too
    with _fields_of(config, "policy"):
      policy_config.check(run_config(config, p, m, tasks[0], seeds[0]), ds=ds if config.world_model_dir else None)
  return p


@contextlib.contextmanager
def _fields_of(config, section: str):
  """A sub-config's ValueError naming one of its fields (`ppo.num_envs must be ...`) names it as the user
  sets it here (`policy.ppo.num_envs must be ...`)."""
  try:
    yield
  except ValueError as e:
    message = str(e)
    head = message.split(" ", 1)[0].rstrip(":,")
    group = config[section]
    if "." in head and isinstance(group.get(head.split(".", 1)[0]), ml_collections.ConfigDict):
      raise ValueError(f"{section}.{message}") from None
    raise


def _collect_config(config, tasks: list[str]) -> ml_collections.ConfigDict:
  c = copy.deepcopy(config.collect)
  c.tasks = ",".join(tasks)
  return c


def world_model_config(config, p: Plan) -> ml_collections.ConfigDict:
  return world_model_config_for(config, p.data_dir)


def world_model_config_for(config, data_dir: str) -> ml_collections.ConfigDict:
  c = copy.deepcopy(config.world_model)
  c.data_dir = data_dir
  return c


def run_config(config, p: Plan, method: str, task: str, seed: int) -> ml_collections.ConfigDict:
  """The train_policy config of one sub-run (the shared BC run for method `bc`)."""
  c = copy.deepcopy(config.policy)
  c.data_dir, c.world_model_dir, c.seed = p.data_dir, p.world_model_dir, seed
  if METHODS[method] is None:
    c.stages = "bc"
  else:
    c.task = task
    c.env, c.reward = METHODS[method]
    # bc is the copied shared initialisation: found finished, never retrained
    c.stages = "bc," + _POLICY_STAGE.get(method, "ppo")
  return c


# ---- done markers -----------------------------------------------------------------------------------

def _comparable(config: ml_collections.ConfigDict, fields: tuple[str, ...] | None = None) -> dict:
  d = configs_lib.plain(config.to_dict())
  if isinstance(d.get("ppo"), dict):  # a policy sub-run: how its work is computed is not what it did
    d = policy_config.without_speed_fields(d)
  return {k: v for k, v in d.items() if k not in _PATH_FIELDS and (fields is None or k in fields)}


def _done(workdir: str, config: ml_collections.ConfigDict, fields: tuple[str, ...] | None = None) -> dict | None:
  """The DONE.json of a finished sub-run (None if unfinished); a different config (in `fields`, default
  all but paths) is a ValueError naming the fields."""
  path = os.path.join(workdir, DONE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    done = json.load(f)
  # Read as the binaries read a stored config: fields added since it finished take their old values.
  if "ppo" in config:
    stored = policy_config.without_speed_fields(configs_lib.migrate(done["config"], "policy"))
  else:
    stored = configs_lib.migrate(done["config"], "world_model")
  stored = {k: v for k, v in stored.items() if fields is None or k in fields}
  bad = [f"{k}: done with {a!r}, config has {b!r}"
         for k, a, b in configs_lib.differences(stored, _comparable(config, fields))]
  if bad:
    raise ValueError(f"{workdir} finished with another config ({'; '.join(bad)[:600]}); delete it to redo it, "
                     "or restore the config")
  return done


def _mark_done(workdir: str, config: ml_collections.ConfigDict, summary: dict) -> None:
  media.write_json(os.path.join(workdir, DONE), {"config": _comparable(config), "summary": summary,
                                                 "finished": time.strftime("%Y-%m-%d %H:%M:%S")})


def _write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  os.makedirs(workdir, exist_ok=True)
  media.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2) + "\n")


# ---- the stages -------------------------------------------------------------------------------------

def _world_model(wcfg, workdir: str, ds, stages: list[str], progress: bool,
                 timed: Callable[[str], Any] = lambda s: contextlib.nullcontext()) -> dict:
  """The stages of experiments.train_world_model, in its order, in this process; `timed(stage)` is a
  context around each trained stage (the tokenize pass counts with the tokenizer's)."""

  out = {}
  with timed("tokenizer") if "tokenizer" in stages else contextlib.nullcontext():
    if "tokenizer" in stages:
      out["tokenizer"] = stage_tokenizer.run(wcfg, workdir, ds, progress=progress)
    tok_ds = wm_stages.tokenize_stage(wcfg, workdir, ds, progress=progress)
  for stage in ("dynamics", "goal"):
    if stage in stages:
      with timed(stage):
        out[stage] = wm_stages.dynamics_stage(wcfg, workdir, ds, tok_ds, progress=progress, stage=stage)
  if "reward" in stages:
    with timed("reward"):
      align, imagine = stage_reward.for_world_model(wcfg, workdir, ds, tok_ds)
      out["reward"] = stage_reward.run(wcfg, workdir, tok_ds, progress=progress, align=align, imagine=imagine)
  return out


def _copy_bc(bc_dir: str, run_dir: str) -> None:
  """Starts a method's run from the seed's shared BC run (checkpoint, metrics, TensorBoard), by one rename."""
  if os.path.isdir(os.path.join(run_dir, "checkpoints", "bc")):
    return
  tmp = run_dir + ".copying"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(bc_dir, tmp, ignore=shutil.ignore_patterns(DONE, "config.json"))
  if os.path.isdir(run_dir):  # a run dir without bc (someone removed it): complete it in place
    shutil.copytree(tmp, run_dir, dirs_exist_ok=True)
    shutil.rmtree(tmp)
  else:
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    os.replace(tmp, run_dir)


def _check_tasks(ds, tasks: list[str]) -> None:
  for split in ("train", "val"):
    have = set(int(t) for t in ds.index(split)["task_id"])
    missing = [t for t in tasks if TASKS[t].task_id not in have]
    if missing:
      raise ValueError(f"the dataset at {ds.path} has no {split} episodes of {', '.join(missing)}")


class _Evaluators:
  """One compiled rollout per task, shared by every method and seed (the weights are an argument)."""

  def __init__(self, config):
    self.config = config
    self._by_key: dict[Any, ev.TaskEvaluator] = {}

  def get(self, task: str, trained: trained_lib.TrainedPolicy) -> ev.TaskEvaluator:
    key = (task, trained.image_size, json.dumps(trained.config.agent.to_dict(), sort_keys=True, default=str))
    if key not in self._by_key:
      e = self.config.eval
      self._by_key[key] = ev.TaskEvaluator(task, ev.trained_spec(trained), batch_size=min(e.batch_size, e.episodes),
                                           record=e.videos > 0)
    return self._by_key[key]


def _evaluate(config, p: Plan, evaluators: _Evaluators, method: str, task: str, seed: int,
              on_batch: Callable[[int], None]) -> dict:
  """Evaluates one run (or returns its results.json when done with the same settings)."""
  e = config.eval
  out_dir = p.eval_dir(method, task, seed)
  path = os.path.join(out_dir, "results.json")
  trained = trained_lib.load(p.run_dir(method, task, seed))
  settings = {"splits": p.splits, "episodes": e.episodes, "batch_size": min(e.batch_size, e.episodes),
              "seed": e.seed + seed, "stage": trained.stage, "step": trained.step}
  if os.path.isfile(path):
    with open(path) as f:
      done = json.load(f)
    if done.get("settings") == settings:
      on_batch(len(p.splits) * e.episodes)
      return done
  evaluator = evaluators.get(task, trained)
  videos = e.videos if seed == p.seeds[0] else 0
  cells, written = [], []
  for split in p.splits:
    cell, frames = evaluator.evaluate(split, e.episodes, e.seed + seed, params=trained.params, videos=videos,
                                      on_batch=on_batch)
    cells.append(cell)
    if frames is not None:
      written.append(media.write_gif(os.path.join(out_dir, "videos", f"{task}_{split}.gif"),
                                     ev.episode_video(frames, cell), fps=8))
  summary = ev.summary(cells)
  summary.update(trained.describe(), seed=e.seed + seed, method=method, task=task, settings=settings,
                 videos=written)
  media.write_json(path, summary)
  return summary


def enable_compilation_cache(directory: str) -> None:
  """JAX's persistent compilation cache: sub-runs (and re-runs) compile the same programs once."""
  import jax

  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)


def budgets(config: ml_collections.ConfigDict) -> dict[str, str]:
  """method -> the real interaction one run uses beyond the demonstrations (the table states it, so that
  methods are compared with what each was given)."""
  pol = config.policy
  sim_steps = pol.ppo.updates * pol.ppo.num_envs * pol.ppo.rollout_len
  return {"bc": "none", "ppo_sim": f"{sim_steps:,} simulator steps with the handcrafted reward",
          "ppo_wm_learned": "none", "roboscape_r": "none",
          "roboscape_r_dyna": f"{stage_dyna.real_episodes(pol)} real episodes, no reward "
                              f"({pol.dyna.rounds - 1} rounds of {pol.dyna.episodes})"}


def jobs(config: ml_collections.ConfigDict, p: Plan) -> list[tuple[cost.Job, bool]]:
  """Every sub-run of the grid in the order `run` takes them, each with whether it is still to run."""
  wm, pol, col = config.world_model, config.policy, config.collect
  out = []
  if p.own_data:
    per_task = col.train_episodes + col.val_episodes + col.ood_episodes * len(col.ood_splits)
    try:
      open_dataset(p.data_dir, verify="none")
      pending = False
    except dataset_lib.DatasetError:
      pending = True
    out.append((cost.Job("collect", "collect", cost.shape_key("collect", col),
                         sum(per_task * cost.horizon(t) for t in p.tasks)), pending))
  if p.world_model_stages and p.own_world_model:
    pending = _done(p.world_model_dir, world_model_config(config, p)) is None
    units = {"tokenizer": wm.tokenizer_train.steps, "dynamics": wm.dynamics_train.steps,
             "goal": wm.dynamics_train.steps, "reward": wm.reward_head.steps}
    sections = {"tokenizer": (wm.tokenizer, wm.tokenizer_train, col.image_size),
                "dynamics": (wm.tokenizer, wm.dynamics, wm.dynamics_train),
                "goal": (wm.tokenizer, wm.dynamics, wm.dynamics_train),
                "reward": (wm.tokenizer, wm.reward_head)}
    out += [(cost.Job(f"world model: {s}", s, cost.shape_key(s, *sections[s]), units[s]), pending)
            for s in p.world_model_stages if s in units]
  ppo_methods = [m for m in p.methods if METHODS[m] is not None]
  for seed in p.seeds:
    pending = _done(p.bc_dir(seed), run_config(config, p, "bc", p.tasks[0], seed), _BC_FIELDS) is None
    out.append((cost.Job(f"bc seed {seed}", "bc", cost.shape_key("bc", pol.agent, pol.bc, col.image_size),
                         pol.bc.steps), pending))
    for task in p.tasks:
      for m in ppo_methods:
        env, reward = METHODS[m]
        kind = _POLICY_STAGE.get(m, "ppo_wm" if env == "world_model" else "ppo_sim")
        sections = (pol.agent, pol.ppo, pol.eval, col.image_size, reward)
        if kind != "ppo_sim":
          sections += (pol.wm_env, pol.rewards, wm.tokenizer, wm.dynamics, wm.generate)
        if kind == "dyna":
          sections += (pol.dyna,)
        pending = _done(p.run_dir(m, task, seed), run_config(config, p, m, task, seed)) is None
        out.append((cost.Job(f"{m} {task} seed {seed}", kind, cost.shape_key(kind, *sections), pol.ppo.updates),
                    pending))
  for s in p.seeds:
    for t in p.tasks:
      for m in p.methods:
        done = os.path.isfile(os.path.join(p.eval_dir(m, t, s), "results.json"))
        out.append((cost.Job(f"evaluate {m} {t} seed {s}", "evaluate",
                             cost.shape_key("evaluate", config.eval, pol.agent, col.image_size),
                             config.eval.episodes * len(p.splits) * cost.horizon(t)), not done))
  return out


@contextlib.contextmanager
def _timed(bar: cost.GridBar, job: cost.Job, fresh: bool):
  """Runs one job under the grid bar; its wall time is a measure only when it ran from its start."""
  bar.start(job)
  t0 = time.perf_counter()
  yield
  bar.finish(job, time.perf_counter() - t0 if fresh else None)


def _fresh(workdir: str, stage: str) -> bool:
  return not os.path.isdir(os.path.join(workdir, "checkpoints", stage))


def run(config: ml_collections.ConfigDict, workdir: str, progress: bool = True,
        log: Callable[[str], None] | None = None, speeds: cost.Speeds | None = None) -> dict:
  """Runs (or resumes) the whole chain; returns {"table": Table, "files": {kind: path}, "plan": Plan,
  "estimate": the line printed first}. `log` gets that estimate, then one line per sub-run started (default:
  printed above the progress bars); `speeds`: where this machine's measured speeds are kept (cost.Speeds)."""
  from tqdm.auto import tqdm

  log = log or tqdm.write

  p = plan(config, workdir)
  os.makedirs(p.workdir, exist_ok=True)
  _write_config(p.workdir, config)
  cache = config.compilation_cache_dir
  if cache != "none":
    enable_compilation_cache(os.path.abspath(cache) if cache else os.path.join(p.workdir, ".jax_cache"))

  from absl import logging

  logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO
  speeds = speeds or cost.Speeds()
  pending = [j for j, todo in jobs(config, p) if todo]
  estimate = "reproduce: " + cost.describe(pending, speeds)
  log(estimate)
  by_name = {j.name: j for j in pending}
  bar = cost.GridBar(pending, speeds, progress, desc="reproduce")

  def stage(name: str, what: str, fresh: bool):
    log(f"reproduce: {what}")
    job = by_name.get(name)
    return _timed(bar, job, fresh) if job else contextlib.nullcontext()

  ppo_methods = [m for m in p.methods if METHODS[m] is not None]
  grid = [(m, t, s) for s in p.seeds for t in p.tasks for m in p.methods]
  try:
    with stage("collect", f"data -> {p.data_dir}", fresh=not os.path.isdir(os.path.join(p.workdir, "data"))):
      if p.own_data:
        collect_lib.collect(_collect_config(config, p.tasks), os.path.join(p.workdir, "data"), progress=progress)
    ds = open_dataset(p.data_dir, verify="size")
    _check_tasks(ds, p.tasks)

    if p.world_model_stages and p.own_world_model:
      wcfg = world_model_config(config, p)
      if _done(p.world_model_dir, wcfg) is None:
        log(f"reproduce: world model ({', '.join(p.world_model_stages)}) -> {p.world_model_dir}")
        _write_config(p.world_model_dir, wcfg)
        timed = lambda s: stage(f"world model: {s}", f"world model: {s}",  # noqa: E731
                                fresh=_fresh(p.world_model_dir, s))
        _mark_done(p.world_model_dir, wcfg, _world_model(wcfg, p.world_model_dir, ds, p.world_model_stages,
                                                         progress, timed))

    for seed in p.seeds:
      pc = run_config(config, p, "bc", p.tasks[0], seed)
      if _done(p.bc_dir(seed), pc, _BC_FIELDS) is None:
        with stage(f"bc seed {seed}", f"behaviour cloning, seed {seed} -> {p.bc_dir(seed)}",
                   fresh=_fresh(p.bc_dir(seed), "bc")):
          _write_config(p.bc_dir(seed), pc)
          _mark_done(p.bc_dir(seed), pc, stage_bc.run(pc, p.bc_dir(seed), ds, progress=progress))
      for task in p.tasks:
        for m in ppo_methods:
          pc = run_config(config, p, m, task, seed)
          run_dir = p.run_dir(m, task, seed)
          if _done(run_dir, pc) is None:
            dyna = _POLICY_STAGE.get(m) == "dyna"
            with stage(f"{m} {task} seed {seed}", f"{m} {task} seed {seed} -> {run_dir}",
                       fresh=not os.path.isdir(os.path.join(run_dir, "dyna")) if dyna else _fresh(run_dir, "ppo")):
              _copy_bc(p.bc_dir(seed), run_dir)
              _write_config(run_dir, pc)
              summary = (stage_dyna if dyna else stage_ppo).run(pc, run_dir, ds, progress=progress)
              if not summary:
                raise RuntimeError(f"the {'dyna' if dyna else 'PPO'} stage in {run_dir} did not finish")
              _mark_done(run_dir, pc, summary)

    evaluators = _Evaluators(config)
    rows = []
    total = len(grid) * len(p.splits) * config.eval.episodes
    with tqdm(total=total, desc="evaluate", unit="ep", disable=not progress, dynamic_ncols=True,
              position=1, leave=False) as ebar:
      for m, t, s in grid:
        name = f"evaluate {m} {t} seed {s}"
        with (_timed(bar, by_name[name], fresh=True) if name in by_name else contextlib.nullcontext()):
          res = _evaluate(config, p, evaluators, m, t, s, ebar.update)
        rows += [tables_lib.RunResult(method=m, task=t, seed=s, split=c["split"], success_rate=c["success_rate"],
                                      episodes=c["episodes"]) for c in res["results"]]
  finally:
    bar.close()
  table = tables_lib.build(rows, budgets=budgets(config))
  files = tables_lib.write(table, p.tables_dir)
  if p.world_model_stages:  # which stage limits the result: the world model's own held-out reports
    md = diagnostics.markdown(diagnostics.load(p.world_model_dir))
    if md:
      files["world_model"] = media.write_text(os.path.join(p.tables_dir, "world_model.md"), md)
  return {"table": table, "files": files, "plan": p, "estimate": estimate}


def outputs(p: Plan) -> list[tuple[str, str]]:
  """(what, path) of everything the chain wrote, for the closing summary."""
  out = [("resolved config", os.path.join(p.workdir, "config.json")), ("dataset (collect workdir)", p.data_dir)]
  if p.world_model_stages:
    out.append(("world model (train_world_model workdir)", p.world_model_dir))
  out += [(f"behaviour cloning, seed {s}", p.bc_dir(s)) for s in p.seeds]
  if any(METHODS[m] for m in p.methods):
    out.append(("PPO runs (train_policy workdirs)", os.path.join(p.workdir, "runs", "METHOD", "TASK", "seed_S")))
  out.append(("evaluations (results.json, videos/)", os.path.join(p.workdir, "eval", "METHOD", "TASK", "seed_S")))
  return out
