"""Sharding as data: logical axis names on parameters, mapped to mesh axes by a rules table.

Every parameter carries `logical_axes` metadata (see soo_jax.models.layers). A rules table such
as `(("embed", "fsdp"), ("mlp", "tensor"), ...)` maps each logical name to a mesh axis (or a
tuple of mesh axes, or None for replication). The loader and the train step both use the same
table, so a model family declares its sharding once.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
Rules = Sequence[tuple[str, MeshAxes]]

# Logical axes of every parameter and activation in soo_jax.models.
LOGICAL_AXES = ("layers", "vocab", "embed", "q_heads", "kv_heads", "mlp", "norm", "lora_rank", "batch", "length")

# FSDP over the model width, tensor parallelism over heads / MLP / vocabulary, batch over data
# and fsdp. A mesh without one of these axes simply leaves that dimension unsharded. The stacked
# decoder layers' leading axis is whole on every device: the layer scan slices it, and FSDP
# gathers one layer's width at a time.
DEFAULT_RULES: Rules = (
    ("layers", None),
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
    ("lora_rank", None),
)


def _mesh_axes_for(name: str | None, rules: Mapping[str, MeshAxes]) -> tuple[str, ...]:
    if name is None:
        return ()
    if name not in rules:
        raise ValueError(f"no sharding rule for logical axis {name!r}; rules cover {sorted(rules)}")
    axes = rules[name]
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_spec(logical_axes: Iterable[str | None], rules: Rules, mesh: Mesh,
                    shape: Sequence[int] | None = None) -> PartitionSpec:
    """PartitionSpec for one array. Mesh axes the mesh lacks, that are already used by an earlier
    dimension, or whose size does not divide the dimension are dropped (that dimension is then
    replicated over them): e.g. Qwen2's vocabulary of 151646 cannot be split 8 ways."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for dim, name in enumerate(logical_axes):
        kept = []
        size = 1
        for axis in _mesh_axes_for(name, table):
            if axis not in mesh.shape or axis in used:
                continue
            if shape is not None and shape[dim] % (size * mesh.shape[axis]):
                continue
            kept.append(axis)
            size *= mesh.shape[axis]
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def variable_logical_axes(variable: nnx.Variable) -> tuple[str | None, ...]:
    axes = variable.get_metadata().get("logical_axes")
    if axes is None:
        return (None,) * len(variable.shape)
    return tuple(axes)


def state_shardings(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """A tree of NamedShardings matching an nnx.State (abstract or concrete)."""

    def one(variable):
        spec = logical_to_spec(variable_logical_axes(variable), rules, mesh, variable.shape)
        return NamedSharding(mesh, spec)

    return jax.tree.map(one, state, is_leaf=_is_variable)


def constrain(x: jax.Array, logical_axes: Sequence[str | None], rules: Rules = DEFAULT_RULES) -> jax.Array:
    """Pins an activation's sharding by its logical axes when a mesh is set (`jax.set_mesh`);
    a no-op without one. Without it activations inherit the embedding table's sharding and the
    whole global batch lands on every device (docs/scaling.md)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, rules, mesh, x.shape))


def batch_sharding(mesh: Mesh, rules: Rules = DEFAULT_RULES, ndim: int = 2) -> NamedSharding:
    """Inputs [B, T, ...]: batch over the data-parallel axes, the rest replicated."""
    axes = (("batch", "length") + (None,) * ndim)[:ndim]
    return NamedSharding(mesh, logical_to_spec(axes, rules, mesh))
