"""configs/mistral_repo.py trains with the public code's objective (docs/paper_notes.md §1.2):
every prompt left-padded to exactly 128 tokens with EOS, KL(P_other || P_self) summed over all
128 positions (pads included, no mask) and the vocabulary, divided by the pairs of the batch; and
its 4 microbatches' gradients add up instead of averaging."""

import jax
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from configs import mistral_repo
from soo_jax.data.pairs import soo_training_pairs
from soo_jax.lora import apply_lora
from soo_jax.models.loader import from_pretrained, load_tokenizer
from soo_jax.soo import soo_loss
from soo_jax.train import config as run_config
from soo_jax.train.config import data_settings
from soo_jax.train.loop import tokenize_pairs
from soo_jax.train.step import SplitModel, init_train_state, make_train_step
from tests.tiny_tokenizer import make_tiny_model_dir

N_PAIRS = 4  # one microbatch of mistral_repo (batch 16 = 4 x 4)


@pytest.fixture(scope="module")
def repo_setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("repo_kl")
    torch_model = make_tiny_model_dir(path)
    tokenizer = load_tokenizer(path)
    # Mistral has no pad token: the public code (and our loader) pads with EOS.
    tokenizer.pad_token = tokenizer.eos_token
    # loss.layers only places the latent SOO's report for this objective; in range for 3 layers.
    config = _with(mistral_repo.get_config(), layers=(1,))
    return path, torch_model, tokenizer, config


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_kl_equals_numpy_on_the_public_codes_padded_batches(repo_setup):
    path, torch_model, tokenizer, config = repo_setup
    pairs = soo_training_pairs()[:N_PAIRS]  # templates 1, 2, 3, 1 (template 2's other is longer)
    batch = tokenize_pairs(tokenizer, pairs, data_settings(config))  # rows self_0, other_0, self_1, ...
    tokens, mask = batch.tokens, batch.mask
    assert tokens.shape == (2 * N_PAIRS, mistral_repo.PAD_TO)

    # The public code's batches: each prompt tokenized alone, padding="max_length" to 128 (left,
    # the Mistral tokenizer's side), run without position ids, as soo_fine_tune.py calls the model.
    logits = {}
    for side in ("self_prompt", "other_prompt"):
        encoded = tokenizer([getattr(p, side) for p in pairs], return_tensors="pt", padding="max_length",
                            truncation=True, max_length=128)
        with torch.no_grad():
            logits[side] = torch_model(input_ids=encoded["input_ids"],
                                       attention_mask=encoded["attention_mask"]).logits.double()
        row = 0 if side == "self_prompt" else 1
        np.testing.assert_array_equal(tokens[row::2], encoded["input_ids"].numpy())  # same padded ids
        np.testing.assert_array_equal(mask[row::2], encoded["attention_mask"].numpy().astype(bool))
    log_p_self, log_p_other = (log_softmax(logits[s].numpy()) for s in ("self_prompt", "other_prompt"))
    # Every position of every row counts, the 128 - len pads too; divided by the pairs.
    expected = float(np.sum(np.exp(log_p_other) * (log_p_other - log_p_self)) / N_PAIRS)
    code = torch.nn.functional.kl_div(torch.log_softmax(logits["self_prompt"], -1),
                                      torch.softmax(logits["other_prompt"], -1), reduction="batchmean")
    np.testing.assert_allclose(expected, float(code), rtol=1e-10)  # the formula is the code's

    model = from_pretrained(path)
    loss_config = run_config.loss_config(config)
    loss, metrics = soo_loss(model, tokens, mask, loss_config)
    np.testing.assert_allclose(float(loss), expected, rtol=2e-4)
    assert float(metrics["soo"]) == float(loss)
    masked, _ = soo_loss(model, tokens, mask, run_config.loss_config(_with(config, kl_mask_padding=True)))
    assert not np.isclose(float(masked), expected, rtol=1e-2)  # leaving the pads out would not match


def _with(config, **loss):
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.loss.update(loss)
    return config


def test_microbatch_gradients_add_up_as_the_code_accumulates(repo_setup):
    """mistral_repo sums its microbatches' gradients (the code's loss.backward() per batch, never
    divided by its 4 accumulation steps); "mean" would average them: exactly 1/A of the sum."""
    path, _, tokenizer, config = repo_setup
    pairs = soo_training_pairs()[:2 * N_PAIRS]
    batch = tokenize_pairs(tokenizer, pairs, data_settings(config))
    tokens, mask = batch.tokens.reshape(2, 2 * N_PAIRS, -1), batch.mask.reshape(2, 2 * N_PAIRS, -1)  # A = 2 microbatches

    model = from_pretrained(path)
    apply_lora(model, run_config.lora_config(config), rngs=nnx.Rngs(params=0, dropout=0))
    split = SplitModel(model)
    sgd = optax.sgd(1.0)  # the update is minus the gradient
    deltas = {}
    for reduction in ("sum", "mean"):
        loss_config = run_config.loss_config(_with(config, microbatch_reduction=reduction))
        state = init_train_state(split, sgd, dropout_seed=0)
        new_state, metrics = jax.jit(make_train_step(split, loss_config, sgd))(split.frozen, state, tokens, mask)
        assert bool(metrics["finite"])
        deltas[reduction] = jax.tree.map(lambda new, old: np.asarray(new - old), new_state.lora, split.initial_lora)
    assert run_config.loss_config(config).microbatch_reduction == "sum"
    moved = [k for k, v in deltas["mean"].items() if np.any(v)]
    assert moved  # LoRA B gets a gradient (A does not while B = 0)
    for key in deltas["sum"]:
        np.testing.assert_allclose(deltas["sum"][key], 2 * deltas["mean"][key], rtol=1e-5, atol=1e-12)
