"""LoRA adapters with PEFT semantics, attached to our Linear layers by graph surgery.

    y = W x + b + (alpha / r) * B(A(dropout(x)))

A is Kaiming-uniform (PEFT: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))),
B is zero, so a fresh adapter leaves the model's outputs unchanged. A and B are `nnx.LoRAParam`s
(a subclass of `nnx.Param`), which is how the train step tells trainable from frozen.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import jax
import jax.numpy as jnp
from flax import nnx

from soo_jax.models.layers import LINEAR_SITES, Linear
from soo_jax.models.transformer import CausalLM

# PEFT's default LoRA targets for Llama, Mistral, Qwen2 and Gemma-2 are the query and value
# projections; the paper used those defaults.
DEFAULT_TARGETS = ("q_proj", "v_proj")


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.2
    targets: tuple[str, ...] = DEFAULT_TARGETS
    layers: tuple[int, ...] | None = None  # None: every layer (PEFT's default)
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")
        unknown = set(self.targets) - set(LINEAR_SITES) - {"lm_head"}
        if unknown or not self.targets:
            raise ValueError(f"unknown LoRA target modules {sorted(unknown) or self.targets}; "
                             f"choose from {list(LINEAR_SITES) + ['lm_head']}")
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoRA(nnx.Module):
    def __init__(self, in_features: int, out_features: int, config: LoRAConfig,
                 axes: tuple[str | None, str | None], *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.param_dtype)
        bound = 1.0 / math.sqrt(in_features)
        a = jax.random.uniform(rngs.params(), (in_features, config.rank), dtype, -bound, bound)
        self.a = nnx.LoRAParam(a, logical_axes=(axes[0], "lora_rank"))
        self.b = nnx.LoRAParam(jnp.zeros((config.rank, out_features), dtype), logical_axes=("lora_rank", axes[1]))
        self.scaling = config.scaling
        # Its own "dropout" stream, whatever streams `rngs` has: the train step reseeds that stream
        # every step (nnx.reseed(model, dropout=...)), which a "default" stream would ignore.
        self.dropout = (nnx.Dropout(config.dropout, rngs=nnx.Rngs(dropout=rngs.dropout()))
                        if config.dropout > 0 else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.a.dtype)
        if self.dropout is not None:
            x = self.dropout(x)
        return (x @ self.a[...] @ self.b[...]) * self.scaling


def _layer_of(path: tuple) -> int | None:
    return int(path[1]) if len(path) > 1 and path[0] == "layers" else None


def lora_linears(model: CausalLM) -> Iterable[tuple[tuple, Linear]]:
    """(path, Linear) for every linear layer, in graph order."""
    for path, node in nnx.iter_graph(model):
        if isinstance(node, Linear):
            yield tuple(path), node


def apply_lora(model: CausalLM, config: LoRAConfig, *, rngs: nnx.Rngs) -> CausalLM:
    """Attaches a fresh adapter to every targeted Linear (in place); returns the model."""
    attached = 0
    for path, linear in list(lora_linears(model)):
        layer = _layer_of(path)
        if linear.site not in config.targets:
            continue
        if config.layers is not None and layer not in config.layers:
            continue
        axes = linear.kernel.get_metadata()["logical_axes"]
        linear.lora = LoRA(linear.in_features, linear.out_features, config, axes, rngs=rngs)
        attached += 1
    if attached == 0:
        raise ValueError(f"no linear layer matched LoRA targets {config.targets} and layers {config.layers}")
    return model


def set_dropout(model: nnx.Module, enabled: bool) -> None:
    """Switches every dropout in the model on (training) or off (evaluation)."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Dropout):
            node.deterministic = not enabled


def merge_lora(model: CausalLM) -> CausalLM:
    """Folds every adapter into its base kernel (W <- W + scaling * A B) and removes it, in place."""
    for _, linear in lora_linears(model):
        if linear.lora is None:
            continue
        lora = linear.lora
        delta = (lora.a[...].astype(jnp.float32) @ lora.b[...].astype(jnp.float32)) * lora.scaling
        kernel = linear.kernel[...]
        linear.kernel.set_value((kernel.astype(jnp.float32) + delta).astype(kernel.dtype))
        linear.lora = None
    return model


def lora_state(model: nnx.Module) -> nnx.State:
    return nnx.state(model, nnx.LoRAParam)


def count_parameters(state) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(state))
