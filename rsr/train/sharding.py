"""Devices: one `jax.sharding.Mesh` with a `data` axis; batches sharded on it, parameters replicated.

    mesh = make_mesh()                           # every visible device (all processes) on `data`
    batch = put(batch, mesh, batch_size)         # leaves with the batch leading -> sharded, others replicated
    params = replicate(params, mesh)
    constrain = batch_constraint(mesh, batch_size)   # inside jit: keep batched arrays sharded

Multi-host: `initialize(coordinator_address, num_processes, process_id)` calls `jax.distributed.initialize`
before anything touches a device (absent flags: JAX reads the cluster's own environment, e.g. SLURM or TPU
metadata); the mesh then spans every process's devices. CPU tests fake devices with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
  """jax.distributed.initialize for a multi-process run; a no-op for one process without flags."""
  if coordinator_address or num_processes > 1:
    kwargs = {}
    if coordinator_address:
      kwargs["coordinator_address"] = coordinator_address
    if num_processes:
      kwargs["num_processes"] = num_processes
    if process_id >= 0:
      kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (default: all, across processes)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise ValueError(f"{num_devices} devices requested, {len(devices)} visible")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA,))


def _spec(x: Any, n: int, batch_size: int) -> P:
  shape = getattr(x, "shape", ())
  if len(shape) and shape[0] == batch_size and batch_size % n == 0:
    return P(DATA)
  return P()


def put(tree: Any, mesh: Mesh, batch_size: int) -> Any:
  """device_put every leaf: leading axis == batch_size -> sharded on `data`, everything else replicated."""
  n = mesh.shape[DATA]
  if batch_size % n:
    raise ValueError(f"batch {batch_size} does not divide over {n} devices on the '{DATA}' axis")
  return jax.tree_util.tree_map(lambda x: jax.device_put(x, NamedSharding(mesh, _spec(x, n, batch_size))), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """device_put every leaf replicated over the mesh (parameters, optimizer state, RNG)."""
  return jax.tree_util.tree_map(lambda x: jax.device_put(x, NamedSharding(mesh, P())), tree)


def batch_constraint(mesh: Mesh | None, batch_size: int) -> Callable[[Any], Any]:
  """A function for use inside jit: arrays with the batch leading stay sharded on `data`."""
  if mesh is None:
    return lambda x: x
  n = mesh.shape[DATA]

  def constrain(x):
    spec = _spec(x, n, batch_size)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec)) if spec != P() else x

  return constrain
