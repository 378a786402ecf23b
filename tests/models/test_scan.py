"""The scanned layer stack (`scan_layers=True`, the default) against the unrolled Python loop over
the same stacked parameters, and every remat policy against none.

Tolerances (fp32): scanned vs unrolled 1e-5 of each quantity's scale (logits, every sown
activation, the SOO loss and its LoRA gradients); remat vs none 1e-6: rematerialisation
recomputes the same operations, it must change no number. Every family's tiny config runs,
Gemma-2 with its alternating sliding window shorter than the sequences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from soo_jax.lora import LoRAConfig, apply_lora, set_dropout
from soo_jax.models import build_model, forward_with_activations, from_hf_config, init_cache
from soo_jax.models.generate import SamplingConfig, generate_tokens
from soo_jax.models.layers import LAYER_SITES
from soo_jax.models.transformer import REMAT_POLICIES
from soo_jax.soo import LossConfig, soo_loss
from soo_jax.train.step import (OptimizerConfig, SplitModel, init_train_state, jit_train_step, make_optimizer,
                                make_train_step)
from tests.lora.lora_fixtures import randomise_lora_b
from tests.models.hf_reference import TINY_CONFIGS, left_padded_batch

RTOL = 1e-5
REMAT_RTOL = 1e-6
LENGTHS = [12, 9, 4]  # longer than the sliding windows (5), with 0, 3 and 8 pads


def tiny_model(name: str, *, scan_layers: bool = True, remat: str = "none", seed: int = 0):
    config = from_hf_config(TINY_CONFIGS[name]())
    return build_model(config, rngs=nnx.Rngs(seed), scan_layers=scan_layers, remat=remat)


def with_layer_loop(model, *, scan_layers: bool, remat: str = "none"):
    """The same parameters (shared buffers) run another way."""
    other = nnx.merge(*nnx.split(model))
    other.scan_layers, other.remat = scan_layers, remat
    return other


def assert_close(ours, ref, rtol, what):
    ours, ref = np.asarray(ours), np.asarray(ref)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * max(np.abs(ref).max(), 1e-30), err_msg=what)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_scanned_equals_unrolled_logits_and_every_sown_activation(name):
    model = tiny_model(name)
    tokens, mask = left_padded_batch(model.config.vocab_size, LENGTHS)
    sites = LAYER_SITES + ("logits",)
    scanned = jax.jit(lambda m: forward_with_activations(m, tokens, mask, sites=sites))(model)
    unrolled = jax.jit(lambda m: forward_with_activations(m, tokens, mask, sites=sites))(
        with_layer_loop(model, scan_layers=False))
    (logits, acts), (ref_logits, ref_acts) = scanned, unrolled
    assert_close(logits, ref_logits, RTOL, f"{name}: logits")
    layers = list(range(model.config.num_layers))
    assert set(acts) == set(ref_acts) == set(sites)
    for site in LAYER_SITES:
        assert sorted(acts[site]) == layers
        for layer in layers:
            assert acts[site][layer].shape[:2] == tokens.shape
            assert_close(acts[site][layer], ref_acts[site][layer], RTOL, f"{name}: {site} layer {layer}")


@pytest.mark.parametrize("scan_layers", [True, False])
def test_the_forward_stops_at_the_deepest_captured_layer(scan_layers):
    """Without logits, layers after the captured one never run: NaN weights there change nothing."""
    model = tiny_model("gemma2_27b_style", scan_layers=scan_layers)  # 4 layers
    tokens, mask = left_padded_batch(model.config.vocab_size, LENGTHS)
    _, clean = forward_with_activations(model, tokens, mask, sites=("o_proj",), layers=(1,), logits="none")
    kernel = model.layers.mlp.down_proj.kernel
    kernel[...] = kernel[...].at[2:].set(jnp.nan)
    _, acts = forward_with_activations(model, tokens, mask, sites=("o_proj",), layers=(1,), logits="none")
    assert sorted(acts["o_proj"]) == [1]
    np.testing.assert_array_equal(np.asarray(acts["o_proj"][1]), np.asarray(clean["o_proj"][1]))
    logits, _ = model(tokens, mask)
    assert np.isnan(np.asarray(logits)).all()  # with logits every layer runs


def lora_model(name: str, **kwargs):
    model = tiny_model(name, **kwargs)
    # A layer subset and every kind of target, dropout on: both paths must draw the same masks.
    config = LoRAConfig(rank=4, alpha=8, dropout=0.1, targets=("q_proj", "v_proj", "o_proj", "down_proj"),
                        layers=(0, 1))
    apply_lora(model, config, rngs=nnx.Rngs(params=1, dropout=2))
    return randomise_lora_b(model, seed=3, scale=0.1)


def loss_and_lora_grads(model, tokens, mask, loss_config):
    split = SplitModel(model)

    def loss_of(lora):
        m = split.merge(lora)
        nnx.reseed(m, dropout=jax.random.key(5), policy="match_shape")
        return soo_loss(m, tokens, mask, loss_config)[0]

    return jax.jit(jax.value_and_grad(loss_of))(split.initial_lora)


def pair_rows(vocab_size):
    tokens, mask = left_padded_batch(vocab_size, [12, 11, 9, 9], seed=4)
    return tokens, mask


def fast_first(*cases):
    """pytest params: the first case in the fast tier, the others only in the whole suite."""
    return [cases[0], *(pytest.param(*c, marks=pytest.mark.slow) for c in cases[1:])]


@pytest.mark.parametrize("name,logits", fast_first(
    ("llama_tied", False), ("llama_tied", True), ("qwen2", False), ("qwen2", True),
    ("gemma2_27b_style", False), ("gemma2_27b_style", True)))
def test_scanned_equals_unrolled_loss_and_lora_gradients(name, logits):
    """SOO loss at layer 1 (the forward stops there) or with a KL term on the logits (every layer runs)."""
    model = lora_model(name)
    tokens, mask = pair_rows(model.config.vocab_size)
    loss_config = LossConfig(layers=(1,), kl_to_base_weight=0.0) if not logits else LossConfig(
        objective="kl_logits", layers=(1,))
    loss, grads = loss_and_lora_grads(model, tokens, mask, loss_config)
    ref_loss, ref_grads = loss_and_lora_grads(with_layer_loop(model, scan_layers=False), tokens, mask, loss_config)
    assert_close(loss, ref_loss, RTOL, "loss")
    # The stacked train state: only the rows of the adapted layers 0 and 1 get gradients.
    for key in ref_grads:
        g = np.asarray(ref_grads[key])
        for layer in range(g.shape[0]):
            after_the_soo_site = not logits and layer == 1 and "/mlp/" in key  # gets no gradient
            assert (np.abs(g[layer]).max() > 0) == (layer in (0, 1) and not after_the_soo_site), (key, layer)
        assert_close(grads[key], ref_grads[key], RTOL, key)


@pytest.mark.parametrize("remat,scan_layers", fast_first(
    ("full", True), *((remat, scan) for remat in sorted(set(REMAT_POLICIES) - {"none"}) for scan in (True, False)
                      if (remat, scan) != ("full", True))))
def test_remat_changes_no_number(scan_layers, remat):
    model = lora_model("gemma2_27b_style", scan_layers=scan_layers)
    tokens, mask = pair_rows(model.config.vocab_size)
    loss_config = LossConfig(layers=(2,))
    ref_loss, ref_grads = loss_and_lora_grads(model, tokens, mask, loss_config)
    loss, grads = loss_and_lora_grads(with_layer_loop(model, scan_layers=scan_layers, remat=remat),
                                      tokens, mask, loss_config)
    assert_close(loss, ref_loss, REMAT_RTOL, "loss")
    for key in ref_grads:
        assert_close(grads[key], ref_grads[key], REMAT_RTOL, key)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_the_save_o_proj_policy_keeps_the_attention_output_and_full_keeps_none(scan_layers):
    """The SOO site is named (checkpoint_name) so that a policy can keep it: "save_o_proj" stores
    each layer's o_proj output [B, T, D] for the backward, which "full" recomputes."""
    import contextlib
    import io

    model = lora_model("llama_tied", scan_layers=scan_layers)
    tokens, mask = pair_rows(model.config.vocab_size)
    width = model.config.hidden_size

    def residuals(remat):
        split = SplitModel(with_layer_loop(model, scan_layers=scan_layers, remat=remat))

        def loss_of(lora):
            m = split.merge(lora)
            nnx.reseed(m, dropout=jax.random.key(5), policy="match_shape")
            return soo_loss(m, tokens, mask, LossConfig(layers=(1,)))[0]

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            jax.ad_checkpoint.print_saved_residuals(loss_of, split.initial_lora)
        return printed.getvalue().splitlines()

    def activations(lines):  # residuals shaped like a layer's output: [B, T, D], or [1, B, T, D] from a scan
        shapes = (f"[{len(tokens)},{tokens.shape[1]},{width}]", f"[1,{len(tokens)},{tokens.shape[1]},{width}]")
        return sum(any(shape in line for shape in shapes) and "argument" not in line for line in lines)

    # "full" keeps each layer's input; "save_o_proj" also keeps o_proj outputs (layer 1's, the SOO
    # site, leaves its step as the sown activation under either policy).
    saved, full = residuals("save_o_proj"), residuals("full")
    assert activations(saved) > activations(full)
    if not scan_layers:  # outside a scan the residual keeps its name
        assert any("named 'o_proj'" in line for line in saved) and not any("named" in line for line in full)


def test_the_remat_step_donates_its_state():
    model = lora_model("llama_tied", remat="full")
    split = SplitModel(model)
    optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-3, total_steps=4))
    step = jit_train_step(make_train_step(split, LossConfig(layers=(1,)), optimizer), None)
    state = init_train_state(split, optimizer)
    tokens, mask = pair_rows(model.config.vocab_size)
    new_state, metrics = step(split.frozen, state, tokens[None], mask[None])
    assert bool(metrics["finite"])
    assert all(x.is_deleted() for x in jax.tree.leaves(state.lora))  # donated, reused in place
    assert not any(x.is_deleted() for x in jax.tree.leaves(new_state.lora))


def test_bad_remat_policy_is_refused():
    with pytest.raises(ValueError, match="unknown remat policy 'some'"):
        tiny_model("llama_tied", remat="some")


@pytest.mark.parametrize("name", ["mistral_window", "gemma2_27b_style"])
def test_stacked_cache_generation_is_the_same_scanned_and_unrolled(name):
    model = tiny_model(name)
    cache = init_cache(model.config, 2, 7)
    config = model.config
    assert cache.keys.shape == (config.num_layers, 2, 7, config.num_kv_heads, config.head_dim)
    tokens, mask = left_padded_batch(model.config.vocab_size, [7, 3, 5], seed=1)
    sampling = SamplingConfig(max_new_tokens=8)
    scanned, _ = generate_tokens(model, tokens, mask, sampling)
    for scan_layers, remat in ((False, "none"), (False, "full"), (True, "full")):
        other, _ = generate_tokens(with_layer_loop(model, scan_layers=scan_layers, remat=remat), tokens, mask,
                                   sampling)
        np.testing.assert_array_equal(other, scanned, err_msg=f"scan_layers={scan_layers}, remat={remat}")


def test_a_model_with_switched_off_lora_dropout_generates():
    """Evaluation mode writes no RNG state, so a model built outside generation's jit and
    while_loop runs inside them (as launch/train.py's end-of-run evaluation does)."""
    model = lora_model("llama_tied")
    set_dropout(model, False)
    tokens, mask = left_padded_batch(model.config.vocab_size, [5, 3], seed=2)
    out, lengths = generate_tokens(model, tokens, mask, SamplingConfig(max_new_tokens=4))
    assert out.shape == (2, 4) and (lengths == 4).all()
