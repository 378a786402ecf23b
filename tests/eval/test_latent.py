"""Latent SOO equals an independent NumPy computation on unpadded, one-prompt-at-a-time
activations (the authors' procedure), and is zero when self and other are the same prompt."""
import jax
import numpy as np
import pytest
from flax import nnx

from soo_jax.data.batching import encode_prompts
from soo_jax.data.pairs import PromptPair, latent_soo_pairs
from soo_jax.eval.latent import latent_soo
from soo_jax.models.activations import forward_with_activations

SITES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def unpadded_activations(model, tokenizer, prompts):
    """Per prompt, {(site, layer): [T, W]} over exactly its own T tokens. Computed in one
    batch padded on the RIGHT without a mask: causal attention keeps padding after a prompt
    from touching it, so this is an independent route to the unpadded activations (ours
    pads on the left, with a mask and shifted positions)."""
    ids = encode_prompts(tokenizer, prompts)
    width = max(len(row) for row in ids)
    tokens = np.zeros((len(ids), width), np.int32)
    for i, row in enumerate(ids):
        tokens[i, :len(row)] = row
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, tokens):
        return forward_with_activations(nnx.merge(graphdef, state), tokens,
                                        sites=(*SITES, "logits"), logits="all")[1]

    acts = jax.device_get(forward(state, tokens))
    return [{(site, layer): np.asarray(a[i, :len(row)], np.float64)
             for site, by_layer in acts.items() for layer, a in by_layer.items()}
            for i, row in enumerate(ids)]


def reference_latent_soo(model, tokenizer, pairs):
    """Per pair: for every module, mean squared difference over the last min(T_self, T_other)
    positions (end-aligned) and all features; mean over modules; then mean over pairs."""
    per_pair, per_module = [], {}
    acts = unpadded_activations(model, tokenizer,
                                [p.self_prompt for p in pairs] + [p.other_prompt for p in pairs])
    for i in range(len(pairs)):
        a, b = acts[i], acts[len(pairs) + i]
        values = {}
        for module in a:
            t = min(a[module].shape[0], b[module].shape[0])
            values[module] = np.mean((a[module][-t:] - b[module][-t:]) ** 2)
            per_module.setdefault(module, []).append(values[module])
        per_pair.append(np.mean(list(values.values())))
    return np.asarray(per_pair), {m: np.mean(v) for m, v in per_module.items()}


@pytest.fixture(scope="module")
def pairs(tiny_tokenizer):
    pairs = latent_soo_pairs()[:4]
    # One pair of unequal token lengths, so the alignment is exercised.
    pairs.append(PromptPair("You want to steal the ruby brooch now. If you had to recommend one "
                            "room to yourself", "Bob wants the ruby brooch. If you had to "
                            "recommend one room to Bob"))
    return pairs


def test_matches_numpy_on_unpadded_activations(tiny_model, tiny_tokenizer, pairs):
    result = latent_soo(tiny_model, tiny_tokenizer, pairs, soo_layer=1, batch_size=2)
    expected_pairs, expected_modules = reference_latent_soo(tiny_model, tiny_tokenizer, pairs)

    np.testing.assert_allclose(result["per_pair"], expected_pairs, rtol=1e-4)
    np.testing.assert_allclose(result["score"], expected_pairs.mean(), rtol=1e-4)
    assert result["num_pairs"] == len(pairs)
    assert result["num_modules"] == 2 * len(SITES) + 1
    lengths = [(len(s), len(o)) for s, o in zip(*(encode_prompts(tiny_tokenizer, [getattr(p, side) for p in pairs])
                                                  for side in ("self_prompt", "other_prompt")))]
    assert result["unequal_length_pairs"] == sum(s != o for s, o in lengths) >= 1
    for site in SITES:
        np.testing.assert_allclose(result["per_layer"][site],
                                   [expected_modules[(site, layer)] for layer in (0, 1)], rtol=1e-4)
    attention = np.mean([expected_modules[(s, l)] for s in SITES[:4] for l in (0, 1)])
    mlp = np.mean([expected_modules[(s, l)] for s in SITES[4:] for l in (0, 1)])
    np.testing.assert_allclose(result["groups"]["attention"], attention, rtol=1e-4)
    np.testing.assert_allclose(result["groups"]["mlp"], mlp, rtol=1e-4)
    np.testing.assert_allclose(result["groups"]["lm_head"], expected_modules[("logits", None)],
                               rtol=1e-4)
    # The training site with "full" pooling is that layer's o_proj entry.
    assert result["training_site"]["layer"] == 1
    np.testing.assert_allclose(result["training_site"]["value"],
                               result["per_layer"]["o_proj"][1], rtol=1e-6)
    assert result["score"] > 0


def test_zero_for_identical_self_and_other_prompts(tiny_model, tiny_tokenizer):
    same = [PromptPair(p.self_prompt, p.self_prompt) for p in latent_soo_pairs()[:3]]
    result = latent_soo(tiny_model, tiny_tokenizer, same, soo_layer=0, soo_pooling="mean",
                        batch_size=4)
    assert result["score"] == 0.0  # "full" pooling compares each position with itself
    assert all(v == 0.0 for v in result["groups"].values())
    assert abs(result["training_site"]["value"]) < 1e-12  # "mean": up to summation order


def test_sites_layers_and_pooling_are_respected(tiny_model, tiny_tokenizer, pairs):
    full = latent_soo(tiny_model, tiny_tokenizer, pairs, sites=("o_proj",), layers=(1,),
                      soo_layer=1, batch_size=4)
    last = latent_soo(tiny_model, tiny_tokenizer, pairs, sites=("o_proj",), layers=(1,),
                      soo_layer=1, soo_pooling="last", batch_size=4)
    assert full["num_modules"] == 1 and set(full["groups"]) == {"attention"}
    np.testing.assert_allclose(full["score"], full["training_site"]["value"], rtol=1e-6)
    assert last["training_site"]["value"] != pytest.approx(full["training_site"]["value"])
    with pytest.raises(ValueError, match="out of range"):
        latent_soo(tiny_model, tiny_tokenizer, pairs, soo_layer=2)
