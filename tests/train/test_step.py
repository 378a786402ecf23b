"""The SOO loss and train step on one device."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from soo_jax.lora import LoRAConfig, apply_lora
from soo_jax.models.loader import from_pretrained
from soo_jax.soo import LossConfig, per_pair_mse, soo_loss
from soo_jax.train.step import (OptimizerConfig, SplitModel, init_train_state, jit_train_step, make_optimizer,
                                make_train_step)
from tests.models.hf_reference import make_tiny_checkpoint, torch_forward

SOO_LAYER = 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    torch_model = make_tiny_checkpoint("llama_tied", path)
    return path, torch_model


def pair_batch(vocab, n_pairs=3, seed=0):
    """Interleaved rows [self_0, other_0, ...]; every other prompt differs from its self prompt in 1-2 tokens
    and sometimes by one extra token (like "intend"/"intends")."""
    rng = np.random.default_rng(seed)
    width = 9
    tokens = np.zeros((2 * n_pairs, width), np.int32)
    mask = np.zeros((2 * n_pairs, width), np.int32)
    for i in range(n_pairs):
        n = int(rng.integers(5, 8))
        self_ids = rng.integers(1, vocab, n)
        other_ids = self_ids.copy()
        other_ids[0] = (other_ids[0] + 7) % (vocab - 1) + 1
        if i % 2:
            other_ids = np.concatenate([other_ids, [3]])
        for row, ids in ((2 * i, self_ids), (2 * i + 1, other_ids)):
            tokens[row, width - len(ids):] = ids
            mask[row, width - len(ids):] = 1
    return tokens, mask


def test_soo_loss_equals_numpy_on_torch_activations(tiny):
    """Our loss from our forward == NumPy MSE over transformers' hooked o_proj outputs."""
    path, torch_model = tiny
    model = from_pretrained(path)
    tokens, mask = pair_batch(model.config.vocab_size)
    _, hooked = torch_forward(torch_model, tokens, mask, o_proj_layers=[SOO_LAYER])
    acts = hooked[SOO_LAYER]
    half = len(tokens) // 2
    expected = []
    for i in range(half):
        both = (mask[2 * i] * mask[2 * i + 1]).astype(bool)
        expected.append(np.mean((acts[2 * i][both] - acts[2 * i + 1][both]) ** 2))
    expected = float(np.mean(expected))

    for pooling in ("full",):
        loss, metrics = soo_loss(model, tokens, mask, LossConfig(layers=(SOO_LAYER,), pooling=pooling))
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
        assert float(metrics["soo"]) == float(loss)

    last = float(np.mean([np.mean((acts[2 * i][-1] - acts[2 * i + 1][-1]) ** 2) for i in range(half)]))
    loss, _ = soo_loss(model, tokens, mask, LossConfig(layers=(SOO_LAYER,), pooling="last"))
    np.testing.assert_allclose(float(loss), last, rtol=1e-5)


def test_pooling_modes_are_zero_for_identical_prompts():
    acts = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 4)), jnp.float32)
    mask = jnp.asarray([[0, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    for pooling in ("full", "mean", "last"):
        assert float(jnp.max(per_pair_mse(acts, acts, mask, mask, pooling))) == 0.0


def make_trainer(path, layer=SOO_LAYER, lr=1e-2, seed=0):
    model = from_pretrained(path)
    apply_lora(model, LoRAConfig(rank=4, alpha=8, dropout=0.1), rngs=nnx.Rngs(seed))
    split = SplitModel(model)
    optimizer = make_optimizer(OptimizerConfig(learning_rate=lr, total_steps=20))
    step = jit_train_step(make_train_step(split, LossConfig(layers=(layer,)), optimizer), None)
    return split, optimizer, step


def test_gradient_flows_only_into_lora_at_or_below_the_soo_layer(tiny):
    path, _ = tiny
    model = from_pretrained(path)
    apply_lora(model, LoRAConfig(rank=4, alpha=8, dropout=0.0), rngs=nnx.Rngs(0))
    split = SplitModel(model)
    tokens, mask = pair_batch(model.config.vocab_size)

    def loss_of(lora):
        return soo_loss(split.merge(lora), tokens, mask, LossConfig(layers=(SOO_LAYER,)))[0]

    grads = jax.grad(loss_of)(split.initial_lora)
    assert set(grads) == set(split.initial_lora)  # gradients exist for LoRA parameters only
    for name, g in grads.items():
        assert name.startswith("layers/") and g.shape[0] == model.config.num_layers, name  # stacked
        for layer in range(g.shape[0]):
            if layer > SOO_LAYER or name.endswith("/a"):
                # Above the SOO site nothing depends on the adapter; dL/dA = 0 while B = 0.
                assert not np.asarray(g[layer]).any(), (name, layer)
            else:
                assert np.abs(np.asarray(g[layer])).max() > 0, (name, layer)


def test_train_steps_lower_soo_and_leave_the_base_bit_identical(tiny):
    path, _ = tiny
    split, optimizer, step = make_trainer(path)
    frozen_before = jax.tree.map(np.array, split.frozen)
    state = init_train_state(split, optimizer)
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(optimizer.init(split.initial_lora))
    tokens, mask = pair_batch(split.config.vocab_size)
    batch = (tokens[None], mask[None])
    losses = []
    for _ in range(12):
        state, metrics = step(split.frozen, state, *batch)
        assert bool(metrics["finite"])
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 12
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, split.frozen), frozen_before)
    # Optimizer moments exist for LoRA parameters and nothing else.
    opt_leaves = [x for x in jax.tree.leaves(state.opt_state) if getattr(x, "ndim", 0) > 0]
    assert sum(x.size for x in opt_leaves) == 2 * sum(x.size for x in state.lora.values())


def test_gradient_accumulation_equals_the_large_batch(tiny):
    """Two microbatches of 2 pairs == one batch of 4 pairs (no dropout, so the same gradient)."""
    path, _ = tiny
    model = from_pretrained(path)
    apply_lora(model, LoRAConfig(rank=4, alpha=8, dropout=0.0), rngs=nnx.Rngs(0))
    split = SplitModel(model)
    optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-2, total_steps=5, max_grad_norm=None))
    step = jax.jit(make_train_step(split, LossConfig(layers=(SOO_LAYER,), pooling="full"), optimizer))
    tokens, mask = pair_batch(split.config.vocab_size, n_pairs=4)
    # Pre-train B a little so the gradient is not trivially sparse.
    state = init_train_state(split, optimizer)
    state, _ = step(split.frozen, state, tokens[None], mask[None])
    micro_tokens, micro_mask = tokens.reshape(2, 4, -1), mask.reshape(2, 4, -1)  # pairs (0, 1) and (2, 3)
    one, m_one = step(split.frozen, state, tokens[None], mask[None])
    two, m_two = step(split.frozen, state, micro_tokens, micro_mask)
    np.testing.assert_allclose(float(m_one["loss"]), float(m_two["loss"]), rtol=1e-5)
    for name in one.lora:
        np.testing.assert_allclose(np.asarray(one.lora[name]), np.asarray(two.lora[name]), rtol=1e-4, atol=1e-7)


def test_a_lora_on_some_layers_trains_as_its_adapted_layers_alone(tiny):
    """LoRA on layers (0, 2) of the 3-layer model: in the stacked train state the row of layer 1
    stays exactly zero, and the adapted rows follow a per-layer computation (one parameter per
    adapted layer and module, stacked with zeros for the model), clipping and weight decay included."""
    path, _ = tiny
    model = from_pretrained(path)
    adapted = (0, 2)
    apply_lora(model, LoRAConfig(rank=4, alpha=8, dropout=0.0, layers=adapted), rngs=nnx.Rngs(0))
    split = SplitModel(model)
    assert {k: m.tolist() for k, m in split.layer_masks.items()} == {k: [True, False, True] for k in split.initial_lora}
    loss_config = LossConfig(layers=(2,))
    optimizer_config = OptimizerConfig(learning_rate=1e-2, total_steps=20, weight_decay=0.1, max_grad_norm=1e-3)
    optimizer = make_optimizer(optimizer_config)
    step = jit_train_step(make_train_step(split, loss_config, optimizer), None)
    state = init_train_state(split, optimizer)
    tokens, mask = pair_batch(split.config.vocab_size)

    per_layer = {(k, i): v[i] for k, v in split.initial_lora.items() for i in adapted}

    def stacked(params):
        return {k: jnp.stack([params[k, i] if i in adapted else jnp.zeros_like(v[i]) for i in range(v.shape[0])])
                for k, v in split.initial_lora.items()}

    reference_optimizer = make_optimizer(optimizer_config)

    @jax.jit
    def reference_step(params, opt_state):
        loss, grads = jax.value_and_grad(
            lambda p: soo_loss(split.merge(stacked(p)), tokens, mask, loss_config)[0])(params)
        updates, opt_state = reference_optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

    reference_state = reference_optimizer.init(per_layer)
    for _ in range(6):
        state, metrics = step(split.frozen, state, tokens[None], mask[None])
        per_layer, reference_state, loss, grad_norm = reference_step(per_layer, reference_state)
        np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5)
        np.testing.assert_allclose(float(metrics["grad_norm"]), float(grad_norm), rtol=1e-5)
    for k, v in state.lora.items():
        v = np.asarray(v)
        assert not v[1].any(), k  # no adapter on layer 1: exactly zero
        for i in adapted:
            np.testing.assert_allclose(v[i], np.asarray(per_layer[k, i]), rtol=1e-5, atol=1e-7, err_msg=f"{k}[{i}]")
    assert np.abs(np.asarray(state.lora["layers/self_attn/q_proj/lora/b"])[2]).max() > 1e-3  # it trained


def test_non_finite_step_keeps_the_state(tiny):
    path, _ = tiny
    split, optimizer, step = make_trainer(path)
    state = init_train_state(split, optimizer)
    tokens, mask = pair_batch(split.config.vocab_size)
    bad_frozen = jax.tree.map(lambda x: x, split.frozen)
    kernel = bad_frozen["layers"]["self_attn"]["q_proj"]["kernel"]  # stacked [L, in, out]
    kernel.set_value(kernel.get_value().at[0, 0, 0].set(jnp.nan))
    before = jax.tree.map(np.array, state.lora)
    new_state, metrics = step(bad_frozen, state, tokens[None], mask[None])
    assert not bool(metrics["finite"])
    assert int(new_state.step) == 0
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, new_state.lora), before)


def test_dropout_masks_follow_the_step_and_seed(tiny):
    """Dropout is drawn from (seed, step, microbatch): the same state at another step, or another
    seed, sees other masks (so the loss differs); the same (seed, step) repeats exactly."""
    path, _ = tiny
    losses = {}
    for seed in (0, 1):
        model = from_pretrained(path)
        apply_lora(model, LoRAConfig(rank=4, alpha=8, dropout=0.1), rngs=nnx.Rngs(seed))
        split = SplitModel(model)
        optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-2, total_steps=20))
        # Not donating: the probes below reuse the state's arrays.
        step = jax.jit(make_train_step(split, LossConfig(layers=(SOO_LAYER,)), optimizer))
        state = init_train_state(split, optimizer, dropout_seed=seed)
        tokens, mask = pair_batch(split.config.vocab_size)
        for at_step in (0, 5):
            # B = 0 at init would hide dropout; give the adapter weight first.
            lora = {k: (v + 0.05 if k.endswith("/b") else v) for k, v in state.lora.items()}
            probe = state.replace(step=jnp.asarray(at_step, jnp.int32), lora=lora)
            _, metrics = step(split.frozen, probe, tokens[None], mask[None])
            losses[seed, at_step] = float(metrics["loss"])
            _, again = step(split.frozen, state.replace(step=jnp.asarray(at_step, jnp.int32), lora=lora),
                            tokens[None], mask[None])
            assert float(again["loss"]) == losses[seed, at_step]
    assert losses[0, 0] != losses[0, 5]
    assert losses[0, 0] != losses[1, 0]


def test_lm_control_objective_is_the_next_token_loss_of_transformers(tiny):
    """objective "lm": the loss is the mean next-token cross-entropy over the real positions of
    every row (self and other prompts alike), computed from transformers' logits here; the SOO
    value at the site is still reported, equal to the MSE objective's, and not trained."""
    import torch

    path, torch_model = tiny
    model = from_pretrained(path)
    tokens, mask = pair_batch(model.config.vocab_size)
    logits, _ = torch_forward(torch_model, tokens, mask)
    targets = torch.tensor(tokens[:, 1:], dtype=torch.long)
    nll = torch.nn.functional.cross_entropy(torch.tensor(logits[:, :-1]).permute(0, 2, 1), targets,
                                            reduction="none").numpy()
    both = (mask[:, :-1] * mask[:, 1:]).astype(bool)
    expected = float(nll[both].mean())

    lm = LossConfig(objective="lm", layers=(SOO_LAYER,))
    loss, metrics = soo_loss(model, jnp.asarray(tokens), jnp.asarray(mask), lm)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["lm"]), expected, rtol=1e-5)
    _, mse_metrics = soo_loss(model, jnp.asarray(tokens), jnp.asarray(mask), LossConfig(layers=(SOO_LAYER,)))
    np.testing.assert_allclose(float(metrics["soo"]), float(mse_metrics["soo"]), rtol=1e-6)


def test_lm_control_trains_every_adapter_and_lowers_its_loss(tiny):
    path, _ = tiny
    model = from_pretrained(path)
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0, dropout=0.0, targets=("q_proj", "v_proj")), rngs=nnx.Rngs(0))
    split = SplitModel(model)
    loss_config = LossConfig(objective="lm", layers=(SOO_LAYER,))
    optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-2))
    step = jit_train_step(make_train_step(split, loss_config, optimizer), None)
    state = init_train_state(split, optimizer)
    tokens, mask = pair_batch(model.config.vocab_size)
    tokens, mask = jnp.asarray(tokens)[None], jnp.asarray(mask)[None]
    losses = []
    for _ in range(5):
        state, metrics = step(split.frozen, state, tokens, mask)
        assert set(metrics) == {"loss", "grad_norm", "finite", "soo", "lm"}
        losses.append(float(metrics["lm"]))
    assert losses[-1] < losses[0]
    # Unlike the SOO loss at layer 1, the next-token loss reaches the adapters of the last layer.
    last = [np.asarray(v)[-1] for k, v in state.lora.items() if k.startswith("layers/") and k.endswith("/b")]
    assert last and all(np.any(b) for b in last)
