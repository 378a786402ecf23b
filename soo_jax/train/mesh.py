"""The device mesh, multi-process start-up and per-process batch loading.

One `jax.sharding.Mesh` with named axes ("data", "fsdp", "tensor") serves every run, from one
CPU to a TPU pod: the logical-axis rules in `soo_jax.sharding` say which parameter dimension is
split over which axis, so changing the parallelism is a change of axis sizes, never of code.

Multi-process runs (TPU pods, SLURM/MPI GPU clusters, or explicit `JAX_*` variables) call
`initialize_distributed()` once, before anything touches a device. Each process then builds only
its own rows of the global pair batch (`process_batch_rows`) and assembles the global array with
`global_batch_from_host_slices`, so no host ever holds another host's batch on its devices.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import math
import os
from typing import Literal, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding

from soo_jax.sharding import DEFAULT_RULES, Rules, logical_to_spec

MESH_AXES = ("data", "fsdp", "tensor")


# --- Mesh ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Axis sizes of the (data, fsdp, tensor) mesh; at most one may be -1, meaning "every device
    the other axes leave". The default puts every device on fsdp: with the scanned layers and
    remat it holds the least per device (one gathered layer at a time), but the global batch
    must then split over every device. For the paper's models and small SOO batches
    docs/scaling.md recommends instead, and configs/{mistral,gemma2,calmerys}.py use, the frozen
    weights over `tensor`, the batch over `data`, fsdp = 1 and model.remat = "full"."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1

    def __post_init__(self):
        sizes = self.sizes()
        bad = {name: size for name, size in sizes.items() if size == 0 or size < -1}
        if bad:
            raise ValueError(f"mesh axis sizes must be positive (or -1 for 'the rest'): got {_fmt(sizes)}")
        if sum(size == -1 for size in sizes.values()) > 1:
            raise ValueError(f"at most one mesh axis may be -1 ('the rest'): got {_fmt(sizes)}")

    def sizes(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in MESH_AXES}

    def resolve(self, num_devices: int) -> dict[str, int]:
        """Concrete axis sizes for `num_devices` devices; raises if they cannot tile them."""
        sizes = self.sizes()
        known = math.prod(size for size in sizes.values() if size != -1)
        rest = [name for name, size in sizes.items() if size == -1]
        if rest:
            if num_devices % known:
                raise ValueError(
                    f"mesh {_fmt(sizes)} cannot use {num_devices} devices: the fixed axes multiply to "
                    f"{known}, which does not divide {num_devices}")
            sizes[rest[0]] = num_devices // known
        elif known != num_devices:
            raise ValueError(
                f"mesh {_fmt(sizes)} has {known} devices but there are {num_devices}: the axis sizes must "
                f"multiply to the device count (or set one axis to -1)")
        return sizes


def _fmt(sizes: Mapping[str, int]) -> str:
    return "(" + ", ".join(f"{name}={size}" for name, size in sizes.items()) + ")"


def make_mesh(config: MeshConfig = MeshConfig(), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: every device of every process).

    Axes are `AxisType.Auto`: shardings come from the jit's in/out shardings and the compiler
    propagates them (jax.make_mesh would otherwise default to explicit-sharding axes, under
    which every op must be told its output sharding). `jax.make_mesh` orders devices so that the
    innermost axis (tensor) spans the most tightly connected devices (same host / ICI ring).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = config.resolve(len(devices))
    shape = tuple(sizes[name] for name in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def batch_shards(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
    """How many ways the rows of a batch are split (data x fsdp under the default rules)."""
    spec = logical_to_spec(("batch",), rules, mesh)
    axes = spec[0] if spec else None
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[axis] for axis in axes)


def check_global_batch(mesh: Mesh, num_pairs: int, rules: Rules = DEFAULT_RULES) -> None:
    """Raises unless a global batch of `num_pairs` pairs (2 x num_pairs rows, interleaved)
    splits evenly over the mesh's batch axes."""
    shards = batch_shards(mesh, rules)
    if num_pairs < 1:
        raise ValueError(f"a global batch needs at least one pair, got {num_pairs}")
    if (2 * num_pairs) % shards:
        axes = {name: mesh.shape[name] for name in mesh.axis_names}
        raise ValueError(
            f"a global batch of {num_pairs} pairs ({2 * num_pairs} rows) cannot be split over the "
            f"{shards} batch shards (data x fsdp) of mesh {_fmt(axes)} on {mesh.size} devices: "
            f"2 x pairs must be a multiple of {shards}")


# --- Multi-process start-up ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DistributedEnv:
    """How this process was launched. `method` "explicit" takes coordinator, process count and
    id from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID; the others let
    `jax.distributed.initialize()` detect them (SLURM, Open MPI, Cloud TPU)."""

    method: Literal["explicit", "slurm", "ompi", "tpu"]
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def _int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _on_cloud_tpu_vm() -> bool:
    # libtpu installed and TPU chips attached (/dev/accel* on v2-v4, /dev/vfio/N on v5e and later).
    # Checked without importing a backend: distributed start-up must precede backend start-up.
    if importlib.util.find_spec("libtpu") is None:
        return False
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def detect_distributed(environ: Mapping[str, str] | None = None, *,
                       on_tpu_vm: bool | None = None) -> DistributedEnv | None:
    """The multi-process launch this process belongs to, or None for a lone process.

    A pure function of the environment (and whether this is a Cloud TPU VM), so it can be tested
    without starting anything. On a TPU VM we always initialise: jax's own cluster detection
    works out the host count (one host is fine), and a pod host must not skip it.
    """
    environ = os.environ if environ is None else environ
    num_processes = _int(environ, "JAX_NUM_PROCESSES")
    if num_processes is not None:
        if num_processes < 1:
            raise ValueError(f"JAX_NUM_PROCESSES must be >= 1, got {num_processes}")
        if num_processes == 1:
            return None
        address, process_id = environ.get("JAX_COORDINATOR_ADDRESS"), _int(environ, "JAX_PROCESS_ID")
        if not address or process_id is None:
            raise ValueError(
                f"JAX_NUM_PROCESSES={num_processes} also needs JAX_COORDINATOR_ADDRESS (host:port of process 0) "
                f"and JAX_PROCESS_ID (0..{num_processes - 1}); got address={address!r}, id={process_id}")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"JAX_PROCESS_ID={process_id} is outside 0..{num_processes - 1}")
        return DistributedEnv("explicit", address, num_processes, process_id)
    if (_int(environ, "SLURM_NTASKS") or 1) > 1:
        return DistributedEnv("slurm")
    if (_int(environ, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return DistributedEnv("ompi")
    if on_tpu_vm if on_tpu_vm is not None else _on_cloud_tpu_vm():
        return DistributedEnv("tpu")
    return None


def initialize_distributed(environ: Mapping[str, str] | None = None) -> DistributedEnv | None:
    """Starts jax.distributed when this process is one of several; a no-op for a lone process.

    Call once at program start, before any array is created. Calling it again (or after someone
    else initialised jax.distributed) does nothing. Returns what was detected (None: single
    process).
    """
    env = detect_distributed(environ)
    if env is None or jax.distributed.is_initialized():
        return env
    if env.method == "explicit":
        jax.distributed.initialize(coordinator_address=env.coordinator_address,
                                   num_processes=env.num_processes, process_id=env.process_id)
    else:
        jax.distributed.initialize()
    return env


# --- Per-process batch loading ---------------------------------------------------------------

def process_batch_rows(sharding: NamedSharding, global_shape: Sequence[int], *, axis: int = 1,
                       process_index: int | None = None) -> np.ndarray:
    """Indices of the global batch's rows (along `axis`) that `process_index` (default: this
    process) must load, in the order its local slice must hold them.

    For a pair batch [A, 2B, T] the rows are interleaved [self_0, other_0, self_1, other_1, ...]
    (as `soo_jax.data.batching.PairBatch` builds them and the loss reads them), so an even block of
    rows always holds whole pairs. Every process
    gets the same number of rows; processes whose devices hold the same rows (replicas along
    tensor, say) get the same rows.
    """
    process_index = jax.process_index() if process_index is None else process_index
    global_shape = tuple(global_shape)
    starts, size = set(), None
    for device, index in sharding.devices_indices_map(global_shape).items():
        if device.process_index != process_index:
            continue
        block = range(*index[axis].indices(global_shape[axis]))
        if size is not None and len(block) != size:
            raise ValueError(f"uneven shards along axis {axis} of {global_shape}: {len(block)} vs {size} rows")
        size = len(block)
        starts.add(block.start)
    if size is None:
        raise ValueError(f"process {process_index} has no device in the mesh of {sharding}")
    return np.concatenate([np.arange(start, start + size) for start in sorted(starts)])


def _row_shards(sharding: NamedSharding, local_shape: Sequence[int], axis: int) -> tuple[int, int]:
    """(how many blocks the row axis is split into, how many of them this process holds)."""
    entry = sharding.spec[axis] if axis < len(sharding.spec) else None
    names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    blocks = math.prod(sharding.mesh.shape[name] for name in names)
    one_row_per_block = list(local_shape)
    one_row_per_block[axis] = blocks
    return blocks, len(process_batch_rows(sharding, one_row_per_block, axis=axis))


def global_batch_from_host_slices(local_tokens: np.ndarray, local_mask: np.ndarray, sharding: NamedSharding,
                                  *, global_rows: int | None = None, axis: int = 1) -> tuple[jax.Array, jax.Array]:
    """Global (tokens, mask) arrays on `sharding` from this process's rows of them.

    `local_*` hold the rows `process_batch_rows` names for this process, in that order.
    `global_rows` (the global size of the row axis) is checked when given; it is implied by the
    sharding and the local row count anyway.
    """
    local_tokens, local_mask = np.asarray(local_tokens), np.asarray(local_mask)
    if local_tokens.shape != local_mask.shape:
        raise ValueError(f"tokens {local_tokens.shape} and mask {local_mask.shape} differ in shape")
    blocks, local_blocks = _row_shards(sharding, local_tokens.shape, axis)
    local_rows = local_tokens.shape[axis]
    if local_rows == 0 or local_rows % local_blocks:
        raise ValueError(
            f"this process holds {local_blocks} of the {blocks} batch shards ({sharding.spec}) of mesh "
            f"{_fmt(sharding.mesh.shape)}, so its {local_rows} local rows must be a positive multiple of "
            f"{local_blocks}")
    implied = local_rows // local_blocks * blocks
    if global_rows is not None and global_rows != implied:
        raise ValueError(
            f"a global batch of {global_rows} rows puts {global_rows / blocks:g} rows on each of the {blocks} "
            f"batch shards, so this process should load {global_rows / blocks * local_blocks:g} rows, "
            f"but it got {local_rows}")
    global_shape = list(local_tokens.shape)
    global_shape[axis] = implied
    global_shape = tuple(global_shape)
    tokens = jax.make_array_from_process_local_data(sharding, local_tokens, global_shape)
    mask = jax.make_array_from_process_local_data(sharding, local_mask, global_shape)
    return tokens, mask
