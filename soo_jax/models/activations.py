"""One helper to run a model and collect its sown activations, keyed by site and layer.

Hides `nnx.capture` so that a change in Flax's intermediate-capture API touches this file only.
Works inside `jax.jit` and `jax.grad`: the activations are ordinary traced arrays.
"""

from __future__ import annotations

from typing import Iterable

import jax
from flax import nnx

from soo_jax.models.transformer import Capture, CausalLM, LogitsMode

Array = jax.Array
Activations = dict[str, dict[int | None, Array]]


def forward_with_activations(model: CausalLM, tokens: Array, attention_mask: Array | None = None, *,
                             sites: Iterable[str] = ("o_proj",), layers: Iterable[int] | None = None,
                             positions: Array | None = None,
                             logits: LogitsMode = "all") -> tuple[Array | None, Activations]:
    """Returns (logits, {site: {layer: activation [B, T, width]}}).

    Model-level sites ("logits") are keyed by layer None. With `logits="none"` the forward stops at
    the deepest requested layer, which is all the SOO loss needs.
    """
    capture = Capture(sites=tuple(sites), layers=None if layers is None else tuple(layers))
    for layer in capture.layers or ():
        if not 0 <= layer < model.config.num_layers:
            raise ValueError(f"layer {layer} out of range for a {model.config.num_layers}-layer model")

    def run(m: CausalLM):
        out, _ = m(tokens, attention_mask, positions, capture=capture, logits=logits)
        return out

    out, intermediates = nnx.capture(run, nnx.Intermediate)(model)
    return out, _by_site_and_layer(intermediates)


def _by_site_and_layer(intermediates) -> Activations:
    activations: Activations = {}
    for path, value in nnx.to_flat_state(intermediates):
        # Paths look like ('layers', 3, 'self_attn', 'o_proj', 'activation'),
        # ('layers', 3, 'residual') or ('logits',).
        if path[0] == "layers":
            layer = int(path[1])
            site = path[-2] if path[-1] == "activation" else path[-1]
        else:
            layer, site = None, path[-1]
        array = value.get_value() if hasattr(value, "get_value") else value.value
        if isinstance(array, tuple):
            array = array[-1]
        activations.setdefault(site, {})[layer] = array
    return activations
