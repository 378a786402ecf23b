"""Latent SOO: how close a model's activations are for self- and other-referencing prompts.

The authors' measure (docs/paper_notes.md §3.6, `measure_mse.py`): for each of the 52 probe
pairs, the MSE between the self and the other activations of every linear module (q, k, v, o,
gate, up, down in every layer, and the LM head), averaged over modules; the model's score is the
mean over pairs. They ran one unpadded prompt at a time.

Alignment here: the two prompts of a pair are left-padded to one length, i.e. end-aligned,
and compared on the positions real in both (`soo_jax.soo.per_pair_mse(pooling="full")`). Left
padding with position ids counted from each row's first real token leaves every real
position's activations as in an unpadded pass, so when self and other have equal length
(every pair, with Mistral's tokenizer) this is exactly the authors' number; when they differ
by k tokens, the longer prompt's first k tokens are left out. The result says how many pairs
differ in length.

Differences from the authors' hooks, both small: their LoRA'd q/v hooks saw the base layer's
output without the LoRA delta (PEFT wraps the Linear), ours see the adapted output; their LM
head hook is before Gemma-2's final soft-cap, our "logits" site after it.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from soo_jax.data.batching import PairBatch, batch_pairs, fixed_size_chunks
from soo_jax.data.pairs import PromptPair, latent_soo_pairs
from soo_jax.models.activations import forward_with_activations
from soo_jax.soo import per_pair_mse, split_pairs

__all__ = ["MODULE_GROUPS", "latent_soo", "compare_latent"]

# How the per-module values are grouped in reports (the arXiv paper reports attention and MLP
# separately). "logits" is the LM head's output.
MODULE_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
    "lm_head": ("logits",),
}
ALIGNMENT = ("end-aligned: self/other left-padded to one length, MSE over the positions real in "
             "both prompts and over the hidden dimension")


@functools.partial(jax.jit, static_argnames=("graphdef", "layer_sites", "layers", "with_logits",
                                             "soo_site", "soo_layer", "soo_pooling"))
def _pair_mse(graphdef, state, tokens, mask, *, layer_sites: tuple[str, ...],
              layers: tuple[int, ...], with_logits: bool, soo_site: str, soo_layer: int,
              soo_pooling: str):
    """Per-pair MSEs of one pair batch (rows interleaved, as `PairBatch`): ([len(layer_sites),
    len(layers), B], logits [B] or None, training site [B]). Activations are reduced here, inside
    the jit, so a large model never holds every module's activations outside it."""
    model = nnx.merge(graphdef, state)
    sites = tuple(dict.fromkeys((*layer_sites, soo_site, *(("logits",) if with_logits else ()))))
    capture_layers = tuple(sorted({*layers, soo_layer}))
    _, acts = forward_with_activations(model, tokens, mask, sites=sites, layers=capture_layers,
                                       logits="all" if with_logits else "none")
    half = tokens.shape[0] // 2
    mask_self, mask_other = split_pairs(mask)

    def mse(x, pooling="full"):
        return per_pair_mse(*split_pairs(x), mask_self, mask_other, pooling)

    table = jnp.stack([jnp.stack([mse(acts[site][layer]) for layer in layers])
                       for site in layer_sites]) if layer_sites else jnp.zeros((0, 0, half))
    logits = mse(acts["logits"][None]) if with_logits else None
    training_site = mse(acts[soo_site][soo_layer], soo_pooling)
    return table, logits, training_site


def _rows(batch: PairBatch, pair_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = batch.rows_of(pair_index)
    return batch.tokens[rows], batch.mask[rows]


def latent_soo(model, tokenizer, pairs: Sequence[PromptPair] | None = None, *,
               sites: Sequence[str] = (*MODULE_GROUPS["attention"], *MODULE_GROUPS["mlp"],
                                       "logits"),
               layers: Sequence[int] | None = None, chat_template: bool = False,
               soo_site: str = "o_proj", soo_layer: int = 0, soo_pooling: str = "full",
               batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> dict:
    """The latent-SOO measurement of `model` on `pairs` (default: the 52 probe pairs).

    Returns a JSON-ready dict:
      score          mean over pairs of the mean over modules (the authors' number)
      per_pair       that per-pair mean, in pair order
      groups         {"attention", "mlp", "lm_head"}: mean over the group's modules and pairs
      per_layer      {site: [mean over pairs, one per layer]} with `layers` listing the layers
      training_site  {"site", "layer", "pooling", "value"}: mean over pairs of
                     `per_pair_mse(..., pooling)` at one layer's `soo_site` (the SOO loss site)
      num_pairs, num_modules, unequal_length_pairs, alignment, chat_template

    `progress(pairs done, pairs total)` is called after each batch of pairs.
    """
    pairs = list(latent_soo_pairs() if pairs is None else pairs)
    if not pairs:
        raise ValueError("no prompt pairs")
    num_layers = model.config.num_layers
    layers = tuple(range(num_layers)) if layers is None else tuple(int(i) for i in layers)
    for layer in (*layers, soo_layer):
        if not 0 <= layer < num_layers:
            raise ValueError(f"layer {layer} out of range for a {num_layers}-layer model")
    layer_sites = tuple(s for s in sites if s != "logits")
    with_logits = "logits" in sites
    if not layer_sites and not with_logits:
        raise ValueError("no sites to measure")

    batch = batch_pairs(tokenizer, pairs, use_chat_template=chat_template)
    graphdef, state = nnx.split(model)
    tables, logits_mse, site_mse = [], [], []
    for index in fixed_size_chunks(len(pairs), min(batch_size, len(pairs))):
        tokens, mask = _rows(batch, index)
        table, logits, training_site = _pair_mse(
            graphdef, state, jnp.asarray(tokens), jnp.asarray(mask), layer_sites=layer_sites,
            layers=layers, with_logits=with_logits, soo_site=soo_site, soo_layer=soo_layer,
            soo_pooling=soo_pooling)
        keep = np.unique(index, return_index=True)[1]  # first occurrence of each pair
        tables.append(np.asarray(table)[..., keep])
        site_mse.append(np.asarray(training_site)[keep])
        if with_logits:
            logits_mse.append(np.asarray(logits)[keep])
        if progress is not None:
            progress(min(int(index[-1]) + 1, len(pairs)), len(pairs))
    # [sites, layers, pairs] and [pairs]
    table = np.concatenate(tables, axis=-1).astype(np.float64)
    modules = [table.reshape(-1, len(pairs))]
    if with_logits:
        modules.append(np.concatenate(logits_mse)[None].astype(np.float64))
    per_module = np.concatenate(modules)  # [modules, pairs]
    per_pair = per_module.mean(axis=0)

    groups = {}
    for group, members in MODULE_GROUPS.items():
        rows = [table[layer_sites.index(s)] for s in members if s in layer_sites]
        if "logits" in members and with_logits:
            rows.append(per_module[-1][None])
        if rows:
            groups[group] = float(np.concatenate(rows).mean())
    self_lengths, other_lengths = (side.lengths for side in batch.split())
    return {
        "score": float(per_pair.mean()),
        "per_pair": [float(v) for v in per_pair],
        "groups": groups,
        "per_layer": {"layers": list(layers),
                      **{site: [float(v) for v in table[i].mean(axis=-1)]
                         for i, site in enumerate(layer_sites)}},
        "training_site": {"site": soo_site, "layer": soo_layer, "pooling": soo_pooling,
                          "value": float(np.concatenate(site_mse).astype(np.float64).mean())},
        "num_pairs": len(pairs),
        "num_modules": int(per_module.shape[0]),
        "unequal_length_pairs": int(np.sum(self_lengths != other_lengths)),
        "alignment": ALIGNMENT,
        "chat_template": chat_template,
    }


def compare_latent(before: dict, after: dict) -> dict:
    """Before/after fine-tuning: the headline numbers and their change (after - before)."""
    def headline(result: dict) -> dict[str, float]:
        return {"score": result["score"], **{f"{k}": v for k, v in result["groups"].items()},
                "training_site": result["training_site"]["value"]}

    b, a = headline(before), headline(after)
    return {"before": b, "after": a, "change": {k: a[k] - b[k] for k in b if k in a}}
