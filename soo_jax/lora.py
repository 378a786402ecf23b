"""LoRA adapters with PEFT semantics, attached to our Linear layers by graph surgery.

    y = W x + b + (alpha / r) * B(A(dropout(x)))

A is Kaiming-uniform (PEFT: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))),
B is zero, so a fresh adapter leaves the model's outputs unchanged. A and B are `nnx.LoRAParam`s
(a subclass of `nnx.Param`), which is how the train step tells trainable from frozen.

On the stacked decoder layers an adapter is stacked too: A [L, in, r], B [L, r, out], one
dropout stream per layer. Layers outside `LoRAConfig.layers` keep A = B = 0, which adds exactly
zero and gets exactly zero gradients; `adapter_slices` lists the real (layer, module) adapters,
named as PEFT names them (`layers.3.self_attn.q_proj`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from soo_jax.checks import field_indices, field_number
from soo_jax.models.layers import LINEAR_SITES, Linear, is_stacked, stacked
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
        # Each message starts with the field's name: a run config reports it as `config.lora.<field>: ...`.
        object.__setattr__(self, "rank", field_number("rank", self.rank, integer=True, low=1))
        object.__setattr__(self, "alpha", field_number("alpha", self.alpha, low=0, low_open=True))
        object.__setattr__(self, "dropout", field_number("dropout", self.dropout, low=0, high=1, high_open=True))
        unknown = set(self.targets) - set(LINEAR_SITES) - {"lm_head"}
        if unknown or not self.targets:
            raise ValueError(f"targets: unknown LoRA target modules {sorted(unknown) or self.targets}; "
                             f"choose from {list(LINEAR_SITES) + ['lm_head']}")
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.layers is not None:
            object.__setattr__(self, "layers", field_indices("layers", self.layers))

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
        # On a stacked linear: the layers whose slices are real adapters (the others stay zero).
        self.adapted_layers: tuple[int, ...] | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.a.dtype)
        if self.dropout is not None:
            x = self.dropout(x)
        return (x @ self.a[...] @ self.b[...]) * self.scaling


def lora_linears(model: CausalLM) -> Iterable[tuple[tuple, Linear]]:
    """(path, Linear) for every linear module, in graph order; a stacked decoder linear
    ('layers', 'self_attn', 'q_proj') is one module holding every layer's kernel."""
    for path, node in nnx.iter_graph(model):
        if isinstance(node, Linear):
            yield tuple(path), node


@dataclasses.dataclass(frozen=True)
class AdapterSlice:
    """One real adapter: one linear map of one layer. `path` names it as PEFT does (the layer
    index after 'layers'); `layer` indexes the stacked A/B (None for an unstacked adapter)."""

    path: tuple
    lora: LoRA
    layer: int | None

    def get(self, name: str) -> jax.Array:
        value = getattr(self.lora, name)[...]
        return value if self.layer is None else value[self.layer]

    def set(self, name: str, value) -> None:
        variable = getattr(self.lora, name)
        value = jnp.asarray(value, variable.dtype)
        variable[...] = value if self.layer is None else variable[...].at[self.layer].set(value)


def adapter_slices(model: CausalLM) -> Iterator[AdapterSlice]:
    """Every real adapter, layer by layer for stacked ones."""
    for path, linear in lora_linears(model):
        if linear.lora is None:
            continue
        if linear.lora.adapted_layers is None:
            yield AdapterSlice(path, linear.lora, None)
        else:
            for layer in linear.lora.adapted_layers:
                yield AdapterSlice((path[0], layer, *path[1:]), linear.lora, layer)


def apply_lora(model: CausalLM, config: LoRAConfig, *, rngs: nnx.Rngs) -> CausalLM:
    """Attaches a fresh adapter to every targeted Linear (in place); returns the model."""
    attached = 0
    num_layers = model.config.num_layers
    for _, linear in list(lora_linears(model)):
        if linear.site not in config.targets:
            continue
        axes = linear.kernel.get_metadata()["logical_axes"]
        if not is_stacked(linear.kernel):  # the untied LM head: in no layer
            if config.layers is None:
                linear.lora = LoRA(linear.in_features, linear.out_features, config, axes, rngs=rngs)
                attached += 1
            continue
        adapted = tuple(i for i in range(num_layers) if config.layers is None or i in config.layers)
        if not adapted:
            continue
        lora = stacked(lambda r: LoRA(linear.in_features, linear.out_features, config, axes[1:], rngs=r),
                       num_layers, rngs)
        keep = jnp.isin(jnp.arange(num_layers), jnp.asarray(adapted))[:, None, None]
        lora.a[...] = jnp.where(keep, lora.a[...], 0)
        lora.adapted_layers = adapted
        linear.lora = lora
        attached += len(adapted)
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
        # [in, r] @ [r, out], or per layer [L, in, r] @ [L, r, out] (zero where not adapted).
        delta = (lora.a[...].astype(jnp.float32) @ lora.b[...].astype(jnp.float32)) * lora.scaling
        kernel = linear.kernel[...]
        linear.kernel.set_value((kernel.astype(jnp.float32) + delta).astype(kernel.dtype))
        linear.lora = None
    return model


def lora_state(model: nnx.Module) -> nnx.State:
    return nnx.state(model, nnx.LoRAParam)
