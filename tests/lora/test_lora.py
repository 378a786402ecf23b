"""LoRA: PEFT semantics, zero-init identity, merging, target selection."""

import jax
import numpy as np
import pytest
from flax import nnx
from transformers import LlamaConfig

from soo_jax.lora import LoRAConfig, adapter_slices, apply_lora, lora_linears, lora_state, merge_lora, set_dropout
from soo_jax.models import build_model, from_hf_config
from tests.lora.lora_fixtures import randomise_lora_b

CONFIG = from_hf_config(LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                    num_attention_heads=4, num_key_value_heads=2))
TOKENS = np.array([[0, 0, 5, 9, 11, 3], [4, 8, 15, 16, 23, 42 % 61]], np.int32)
MASK = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], np.int32)


def fresh_model(seed=0):
    return build_model(CONFIG, rngs=nnx.Rngs(seed))


def test_zero_b_gives_the_base_model_exactly():
    base = fresh_model()
    expected, _ = base(TOKENS, MASK)
    adapted = apply_lora(fresh_model(), LoRAConfig(rank=4, alpha=8, dropout=0.2), rngs=nnx.Rngs(1))
    set_dropout(adapted, True)  # even with dropout active, B = 0 adds exactly nothing
    got, _ = adapted(TOKENS, MASK)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_targets_layers_and_init_follow_peft():
    config = LoRAConfig(rank=4, alpha=16, dropout=0.0, targets=("q_proj", "v_proj"), layers=(0, 2))
    model = apply_lora(fresh_model(), config, rngs=nnx.Rngs(1))
    adapted = {(s.path[1], s.path[-1]) for s in adapter_slices(model)}
    assert adapted == {(0, "q_proj"), (0, "v_proj"), (2, "q_proj"), (2, "v_proj")}
    for adapter in adapter_slices(model):
        a, b = np.asarray(adapter.get("a")), np.asarray(adapter.get("b"))
        fan_in = a.shape[0]
        assert a.shape == (CONFIG.hidden_size, 4) and b.shape[0] == 4
        assert np.abs(a).max() <= 1 / np.sqrt(fan_in) and np.abs(a).max() > 0.5 / np.sqrt(fan_in)
        assert not b.any()
        assert adapter.lora.scaling == 4.0
    # Stacked over the 3 layers; layer 1 has no adapter: A = B = 0 there, which adds exactly zero.
    q_lora = model.layers.self_attn.q_proj.lora
    assert q_lora.a.shape == (3, CONFIG.hidden_size, 4) and q_lora.adapted_layers == (0, 2)
    assert not np.asarray(q_lora.a[...])[1].any() and not np.asarray(q_lora.b[...])[1].any()
    assert q_lora.a.get_metadata()["logical_axes"] == ("layers", "embed", "lora_rank")
    assert all(isinstance(v, nnx.LoRAParam) for v in jax.tree.leaves(
        lora_state(model), is_leaf=lambda x: isinstance(x, nnx.Variable)))


def test_merged_weights_equal_the_unmerged_forward():
    model = apply_lora(fresh_model(), LoRAConfig(rank=4, alpha=32, dropout=0.2,
                                                 targets=("q_proj", "v_proj", "down_proj")), rngs=nnx.Rngs(1))
    randomise_lora_b(model)
    set_dropout(model, False)
    unmerged, _ = model(TOKENS, MASK)
    base, _ = fresh_model()(TOKENS, MASK)
    assert np.abs(np.asarray(unmerged) - np.asarray(base)).max() > 1e-3  # the adapter does something
    merged, _ = merge_lora(model)(TOKENS, MASK)
    assert all(linear.lora is None for _, linear in lora_linears(model))
    np.testing.assert_allclose(np.asarray(merged), np.asarray(unmerged), rtol=1e-5, atol=1e-5)


def test_dropout_is_active_only_in_training_mode():
    model = apply_lora(fresh_model(), LoRAConfig(rank=4, alpha=32, dropout=0.5), rngs=nnx.Rngs(1))
    randomise_lora_b(model)
    set_dropout(model, True)
    first, _ = model(TOKENS, MASK)
    second, _ = model(TOKENS, MASK)
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > 0
    set_dropout(model, False)
    third, _ = model(TOKENS, MASK)
    fourth, _ = model(TOKENS, MASK)
    np.testing.assert_array_equal(np.asarray(third), np.asarray(fourth))


def test_bad_lora_configs_are_rejected():
    with pytest.raises(ValueError, match="unknown LoRA target"):
        LoRAConfig(targets=("query",))
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="no linear layer matched"):
        apply_lora(fresh_model(), LoRAConfig(layers=(7,)), rngs=nnx.Rngs(0))
