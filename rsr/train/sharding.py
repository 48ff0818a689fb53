"""Devices: one `jax.sharding.Mesh` with axes `data` and `model`, used by every trainer.

    mesh = make_mesh(model=1)                    # every visible device (all processes): data x model
    batch = put(batch, mesh, batch_size)         # leaves with the batch leading -> sharded, others replicated
    params = replicate(params, mesh)             # or:
    state = shard_state(state, mesh, fsdp=True)  # FSDP: big arrays split on `model`, the rest replicated
    constrain = batch_constraint(mesh, batch_size)   # inside jit: keep batched arrays sharded

Batches are split over EVERY device (both axes): with `model` = 1 that is plain data parallelism; with
`model` > 1 and `fsdp`, each parameter and optimizer-state array is also split along its largest axis
divisible by the `model` size (ZeRO-3 / FSDP: XLA all-gathers a layer's weights where it is used and
reduce-scatters its gradient), so per-device memory for the model shrinks by the `model` size. The
partitioning is XLA's (SPMD); the same global batch gives the same numbers on any mesh.

Multi-host: `initialize(coordinator_address, num_processes, process_id)` calls `jax.distributed.initialize`
before anything touches a device (absent flags: JAX reads the cluster's own environment, e.g. SLURM or TPU
metadata); the mesh then spans every process's devices. CPU tests fake devices with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
MODEL = "model"
BATCH_AXES = (DATA, MODEL)  # a batch is split over every device
FSDP_MIN_SIZE = 2 ** 14  # arrays smaller than this stay replicated (norms, biases: not worth a gather)


def cluster_processes() -> int:
  """Processes the cluster's environment announces (SLURM, Open MPI, a multi-host TPU slice); 1 if none."""
  import os

  env = os.environ
  if env.get("TPU_WORKER_HOSTNAMES"):
    return len(env["TPU_WORKER_HOSTNAMES"].split(","))
  for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if env.get(k, "").isdigit():
      return int(env[k])
  return 1


def lead() -> bool:
  """Whether this process writes the run's files (metrics, tables, videos, config and compat records): process
  0. Every process computes the same results from global arrays; one writes them."""
  return jax.process_index() == 0


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
  """jax.distributed.initialize for a multi-process run. Without flags, a cluster's environment lets JAX
  find the coordinator itself; otherwise there is one process and nothing to do."""
  if coordinator_address or num_processes > 1:
    kwargs = {}
    if coordinator_address:
      kwargs["coordinator_address"] = coordinator_address
    if num_processes:
      kwargs["num_processes"] = num_processes
    if process_id >= 0:
      kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)
  elif cluster_processes() > 1:
    jax.distributed.initialize()


def make_mesh(num_devices: int | None = None, model: int = 1) -> Mesh:
  """A (data, model) mesh over the first `num_devices` devices (default: all, across processes);
  data = num_devices / model."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise ValueError(f"{num_devices} devices requested, {len(devices)} visible")
    devices = devices[:num_devices]
  if model < 1 or len(devices) % model:
    raise ValueError(f"model axis size {model} does not divide the {len(devices)} devices")
  return Mesh(np.asarray(devices).reshape(len(devices) // model, model), BATCH_AXES)


def config_mesh(config) -> tuple[Mesh, bool]:
  """A trainer's (mesh, fsdp) from its config's optional `mesh` group (model axis size, fsdp)."""
  m = config.get("mesh", None) or {}
  return make_mesh(model=m.get("model", 1)), bool(m.get("fsdp", False))


def _size(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def _spec(x: Any, n: int, batch_size: int) -> P:
  shape = getattr(x, "shape", ())
  if len(shape) and shape[0] == batch_size and batch_size % n == 0:
    return P(BATCH_AXES)
  return P()


def param_spec(x: Any, mesh: Mesh, fsdp: bool) -> P:
  """FSDP's rule for one parameter / optimizer-state array: its largest axis divisible by the `model`
  size is split on `model` (arrays under FSDP_MIN_SIZE elements, and everything without fsdp, replicated)."""
  shape, m = tuple(getattr(x, "shape", ())), mesh.shape[MODEL]
  if not fsdp or m == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return P()
  axes = [i for i in np.argsort(shape)[::-1] if shape[i] % m == 0]
  if not axes:
    return P()
  spec = [None] * len(shape)
  spec[axes[0]] = MODEL
  return P(*spec)


def state_shardings(tree: Any, mesh: Mesh, fsdp: bool) -> Any:
  """NamedShardings of a train state (parameters, optimizer state, step, RNG) under param_spec."""
  return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, param_spec(x, mesh, fsdp)), tree)


def place(tree: Any, shardings: Any) -> Any:
  """Puts every leaf on its sharding (a matching tree of Shardings). With several processes a value held
  by one process's device cannot be device_put onto other hosts' devices; every process holds the same
  value here (same seed, same computation), so each builds its own shards from it."""
  def one(x, s):
    if jax.process_count() > 1 and getattr(x, "is_fully_addressable", False) and not _on(x, s):
      host = np.asarray(x)
      return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])
    return jax.device_put(x, s)

  return jax.tree_util.tree_map(one, tree, shardings)


def _on(x: Any, s: jax.sharding.Sharding) -> bool:
  return getattr(x, "sharding", None) == s


def shard_state(tree: Any, mesh: Mesh, fsdp: bool) -> Any:
  """Places a train state with state_shardings (replicated without fsdp)."""
  return place(tree, state_shardings(tree, mesh, fsdp))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The sharding of a batch's leading axis (for WindowLoader.iterate)."""
  return NamedSharding(mesh, P(BATCH_AXES))


def bytes_per_device(tree: Any, shardings: Any = None) -> int:
  """Bytes of `tree` that one device holds: from each array's own sharding, or for abstract arrays
  (jax.ShapeDtypeStruct, e.g. from jax.eval_shape) from `shardings`, a matching tree of Shardings. Every
  sharding here splits evenly, so each device holds the same amount."""
  leaves = jax.tree_util.tree_leaves(tree)
  shards = (jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
            if shardings is not None else [x.sharding for x in leaves])
  return int(sum(np.prod(sh.shard_shape(x.shape), dtype=np.int64) * np.dtype(x.dtype).itemsize
                 for x, sh in zip(leaves, shards, strict=True)))


def put(tree: Any, mesh: Mesh, batch_size: int) -> Any:
  """device_put every leaf: leading axis == batch_size -> split over every device, everything else
  replicated."""
  n = _size(mesh)
  if batch_size % n:
    raise ValueError(f"batch {batch_size} does not divide over the mesh's {n} devices")
  return place(tree, jax.tree_util.tree_map(lambda x: NamedSharding(mesh, _spec(x, n, batch_size)), tree))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """device_put every leaf replicated over the mesh (parameters, optimizer state, RNG)."""
  return place(tree, jax.tree_util.tree_map(lambda x: NamedSharding(mesh, P()), tree))


def batch_constraint(mesh: Mesh | None, batch_size: int) -> Callable[[Any], Any]:
  """A function for use inside jit: arrays with the batch leading stay split over the devices."""
  if mesh is None:
    return lambda x: x
  n = _size(mesh)

  def constrain(x):
    spec = _spec(x, n, batch_size)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec)) if spec != P() else x

  return constrain
