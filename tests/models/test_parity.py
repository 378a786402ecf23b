"""Our Flax ports against transformers' PyTorch models of the same config and weights.

Tolerance (fp32): |ours - torch| <= 1e-5 * max|torch| + 1e-5 * |torch| elementwise, on every real
(non-padding) position of a left-padded batch, for logits and every layer's o_proj output.
"""

import numpy as np
import pytest

from soo_jax.models import forward_with_activations
from soo_jax.models.loader import from_pretrained
from tests.models.hf_reference import (TINY_CONFIGS, assert_close_on_mask, left_padded_batch, make_tiny_checkpoint,
                                       torch_forward)

RTOL = 1e-5
LENGTHS = [12, 9, 4]  # longer than the sliding windows (5), with 0, 3 and 8 pads


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_logits_and_o_proj_match_transformers(name, tmp_path):
    torch_model = make_tiny_checkpoint(name, tmp_path)
    model = from_pretrained(tmp_path, dtype="float32")
    layers = list(range(model.config.num_layers))
    tokens, mask = left_padded_batch(model.config.vocab_size, LENGTHS)

    ref_logits, ref_o_proj = torch_forward(torch_model, tokens, mask, o_proj_layers=layers)
    logits, acts = forward_with_activations(model, tokens, mask, sites=("o_proj",), layers=layers)

    assert_close_on_mask(logits, ref_logits, mask, f"{name}: logits", RTOL)
    assert sorted(acts["o_proj"]) == layers
    for layer in layers:
        assert_close_on_mask(acts["o_proj"][layer], ref_o_proj[layer], mask, f"{name}: o_proj layer {layer}", RTOL)


def test_padding_does_not_change_real_positions(tmp_path):
    """A left-padded row gives the same logits as the same sequence alone."""
    make_tiny_checkpoint("qwen2", tmp_path)
    model = from_pretrained(tmp_path)
    tokens, mask = left_padded_batch(model.config.vocab_size, [10, 6])
    batched, _ = model(tokens, mask)
    alone, _ = model(tokens[1:, -6:], mask[1:, -6:])
    np.testing.assert_allclose(np.asarray(batched)[1, -6:], np.asarray(alone)[0], rtol=1e-5, atol=1e-5)
