"""Device mesh and multi-host helpers."""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding

AXES = ("data", "fsdp", "tensor")


def make_mesh(*, data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    if any(s == 0 or s < -1 for s in sizes.values()) or list(sizes.values()).count(-1) > 1:
        raise ValueError(f"impossible mesh {sizes}: sizes must be positive, with at most one -1")
    known = int(np.prod([s for s in sizes.values() if s != -1]))
    if -1 in sizes.values():
        if len(devices) % known:
            raise ValueError(f"impossible mesh {sizes}: {len(devices)} devices do not divide by {known}")
        sizes = {k: (len(devices) // known if v == -1 else v) for k, v in sizes.items()}
    if int(np.prod(list(sizes.values()))) != len(devices):
        raise ValueError(f"impossible mesh {sizes}: it needs {int(np.prod(list(sizes.values())))} devices, "
                         f"{len(devices)} are present")
    return jax.make_mesh(tuple(sizes[a] for a in AXES), AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def initialize_distributed() -> None:
    if jax.process_count() > 1 or int(os.environ.get("JAX_NUM_PROCESSES", "1")) <= 1:
        return
    jax.distributed.initialize()


def host_row_range(rows_per_microbatch: int) -> tuple[int, int] | None:
    if jax.process_count() == 1:
        return None
    per_host = rows_per_microbatch // jax.process_count()
    return jax.process_index() * per_host, (jax.process_index() + 1) * per_host


def global_batch_from_host_slices(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    return jax.make_array_from_process_local_data(sharding, local)
