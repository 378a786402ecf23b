"""Which activations a forward sows, and the one place that reads sown values back (`nnx.capture`).

Decoder blocks `sow` their sites (see layers.LAYER_SITES): the project's design exposes
activations through Flax's `sow`, so a model returns (logits, cache) and not a typed output with
activations in it, as gemma's `gm/nn` does; what that would buy (no read-back) is had here by
reading back in this one file. The layer loop
runs each block on its slice of the stacked parameters inside `capture_block`, collects the
sown arrays as ordinary outputs (a `lax.scan` stacks them per layer), and the model sows the
whole `{site: {layer: array}}` dict once, under LAYER_ACTIVATIONS; `forward_with_activations`
reads it back with `by_site_and_layer`. So a change in Flax's capture API touches this file only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from flax import nnx

from soo_jax.models.layers import LAYER_SITES

Array = jax.Array
Activations = dict[str, dict[int | None, Array]]

MODEL_SITES = ("logits",)
# The model-level name under which the layer loop sows {site: {layer: array}}.
LAYER_ACTIVATIONS = "layer_activations"


@dataclasses.dataclass(frozen=True)
class Capture:
    """Which activations to sow: sites (see layers.LAYER_SITES, plus "logits") at which layers.

    Only requested sites are kept, so asking for one layer's o_proj of a 78B model holds one
    [B, T, D] array, not every layer's activations.
    """

    sites: tuple[str, ...] = ("o_proj",)
    layers: tuple[int, ...] | None = None  # None: every layer

    def __post_init__(self):
        unknown = set(self.sites) - set(LAYER_SITES) - set(MODEL_SITES)
        if unknown:
            raise ValueError(f"unknown activation sites {sorted(unknown)}; "
                             f"known: {list(LAYER_SITES) + list(MODEL_SITES)}")
        object.__setattr__(self, "sites", tuple(self.sites))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    def sites_at(self, layer: int) -> frozenset[str]:
        if self.layers is not None and layer not in self.layers:
            return frozenset()
        return frozenset(self.sites) & frozenset(LAYER_SITES)

    def deepest_layer(self, num_layers: int) -> int:
        if not frozenset(self.sites) & frozenset(LAYER_SITES):
            return num_layers - 1
        return num_layers - 1 if self.layers is None else max(self.layers)

    def segments(self, num_layers: int) -> list[tuple[int, int, frozenset[str]]]:
        """Layers 0..num_layers-1 as maximal runs [start, stop) that sow the same sites: one scan
        each. SOO at layer 19 of 32 gives [0, 19) sowing nothing, [19, 20) sowing o_proj, and
        [20, 32) when the logits are needed; a capture of every layer gives one run."""
        runs: list[tuple[int, int, frozenset[str]]] = []
        for layer in range(num_layers):
            sites = self.sites_at(layer)
            if runs and runs[-1][2] == sites:
                runs[-1] = (runs[-1][0], layer + 1, sites)
            else:
                runs.append((layer, layer + 1, sites))
        return runs


def capture_block(call: Callable[[nnx.Module], Any], block: nnx.Module) -> tuple[Any, dict[str, Array]]:
    """(call(block), {site: array}) for the sites the block sowed during the call."""
    out, intermediates = nnx.capture(call, nnx.Intermediate)(block)
    sown = {}
    for path, value in nnx.to_flat_state(intermediates):
        # ('self_attn', 'o_proj', 'activation') for a linear map's output, ('residual',) for the block's.
        site = path[-2] if path[-1] == "activation" else path[-1]
        sown[site] = _last(value)
    return out, sown


def capture_model(call: Callable[[nnx.Module], Any], model: nnx.Module) -> tuple[Any, Activations]:
    """(call(model), {site: {layer: activation}}); model-level sites ("logits") under layer None."""
    out, intermediates = nnx.capture(call, nnx.Intermediate)(model)
    return out, by_site_and_layer(intermediates)


def by_site_and_layer(intermediates) -> Activations:
    activations: Activations = {}
    for path, value in nnx.to_flat_state(intermediates):
        value = _last(value)
        if path[-1] == LAYER_ACTIVATIONS:
            for site, per_layer in value.items():
                activations.setdefault(site, {}).update(per_layer)
        else:  # ('logits',)
            activations.setdefault(path[-1], {})[None] = value
    return activations


def _last(value):
    """A sown value: `sow` appends each call's value to a tuple; the latest call's is the result."""
    value = value.get_value() if hasattr(value, "get_value") else value.value
    return value[-1] if isinstance(value, tuple) else value
