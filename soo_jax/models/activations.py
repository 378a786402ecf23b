"""One helper to run a model and collect its sown activations, keyed by site and layer.

Works inside `jax.jit` and `jax.grad`: the activations are ordinary traced arrays. The reading
of sown values lives in `soo_jax.models.capture` (the one file that calls `nnx.capture`).
"""

from __future__ import annotations

from typing import Iterable

import jax

from soo_jax.models.capture import Activations, Capture, capture_model
from soo_jax.models.transformer import CausalLM, LogitsMode

Array = jax.Array

__all__ = ["Activations", "forward_with_activations"]


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

    return capture_model(run, model)
