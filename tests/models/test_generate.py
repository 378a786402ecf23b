"""KV-cache generation: cached decoding equals uncached full forwards, and transformers' generate."""

import jax
import numpy as np
import pytest
import torch

from soo_jax.data.batching import left_pad
from soo_jax.models.generate import (SamplingConfig, generate_tokens, sample_token, shared_prefix_length,
                                    stop_token_sequences)
from soo_jax.models.loader import from_pretrained
from tests.models.hf_reference import left_padded_batch, make_tiny_checkpoint

NEW_TOKENS = 10


def greedy_without_cache(model, tokens, mask, steps):
    """Reference decoder: recompute the whole sequence every step, no cache."""
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    out = []
    for _ in range(steps):
        logits, _ = model(tokens, mask)
        nxt = np.asarray(logits)[:, -1].argmax(-1).astype(np.int32)
        out.append(nxt)
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones_like(nxt)[:, None]], axis=1)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("name", ["llama_tied", *(pytest.param(n, marks=pytest.mark.slow)
                                                   for n in ("mistral_window", "gemma2_27b_style", "qwen2"))])
def test_cached_greedy_equals_uncached_and_transformers(name, tmp_path):
    torch_model = make_tiny_checkpoint(name, tmp_path)
    model = from_pretrained(tmp_path)
    tokens, mask = left_padded_batch(model.config.vocab_size, [7, 3, 5], seed=1)

    ours, lengths = generate_tokens(model, tokens, mask, SamplingConfig(max_new_tokens=NEW_TOKENS))
    assert (lengths == NEW_TOKENS).all()  # no EOS configured: full length
    np.testing.assert_array_equal(ours, greedy_without_cache(model, tokens, mask, NEW_TOKENS))

    with torch.no_grad():
        ref = torch_model.generate(input_ids=torch.tensor(tokens, dtype=torch.long),
                                   attention_mask=torch.tensor(mask, dtype=torch.long),
                                   max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                   pad_token_id=0, eos_token_id=None)
    np.testing.assert_array_equal(ours, ref[:, tokens.shape[1]:].numpy())


def test_stops_at_eos_and_pads_after(tmp_path):
    make_tiny_checkpoint("llama_tied", tmp_path)
    model = from_pretrained(tmp_path)
    tokens, mask = left_padded_batch(model.config.vocab_size, [6, 6], seed=2)
    free, _ = generate_tokens(model, tokens, mask, SamplingConfig(max_new_tokens=8))
    eos = int(free[0, 2])  # make row 0's third token the end-of-sequence token
    out, lengths = generate_tokens(model, tokens, mask, SamplingConfig(max_new_tokens=8, eos_token_ids=(eos,)),
                                   pad_id=-1)
    first = [int(np.argmax(free[r] == eos)) if (free[r] == eos).any() else 8 for r in range(2)]
    for row in range(2):
        stop = first[row] + 1 if first[row] < 8 else 8
        assert lengths[row] == stop
        np.testing.assert_array_equal(out[row, :stop], free[row, :stop])
        assert (out[row, stop:] == -1).all()


def test_sampling_respects_top_p_and_is_seeded():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    draws = [int(sample_token(logits, jax.random.key(i), 1.0, 0.7)[0]) for i in range(200)]
    assert set(draws) == {0, 1}  # 0.5 + 0.3 reaches 0.7: tokens 2 and 3 are cut
    frac_zero = draws.count(0) / len(draws)
    assert 0.5 < frac_zero < 0.75  # renormalised: 0.5 / 0.8 = 0.625
    again = [int(sample_token(logits, jax.random.key(i), 1.0, 0.7)[0]) for i in range(200)]
    assert draws == again
    assert int(sample_token(logits, jax.random.key(0), 0.0, 1.0)[0]) == 0


def test_rejects_right_padding(tmp_path):
    make_tiny_checkpoint("llama_tied", tmp_path)
    model = from_pretrained(tmp_path)
    tokens = np.array([[5, 6, 0]], np.int32)
    mask = np.array([[1, 1, 0]], np.int32)
    with pytest.raises(ValueError, match="left-padded"):
        generate_tokens(model, tokens, mask, SamplingConfig(max_new_tokens=2))


@pytest.mark.parametrize("name", ["llama_tied", "qwen2"])
def test_shared_prefix_gives_the_tokens_of_the_full_prompts(name, tmp_path):
    """A prefix prefilled once and broadcast (cache: prefix | padding | rest) decodes exactly
    like every row carrying the prefix itself."""
    make_tiny_checkpoint(name, tmp_path)
    model = from_pretrained(tmp_path)
    rng = np.random.default_rng(3)
    prefix = rng.integers(1, model.config.vocab_size, 6).tolist()
    rests = [rng.integers(1, model.config.vocab_size, n).tolist() for n in (4, 1, 7)]
    sampling = SamplingConfig(max_new_tokens=NEW_TOKENS)
    full = left_pad([prefix + r for r in rests], 0)
    expected, _ = generate_tokens(model, full.tokens, full.mask, sampling)
    rest = left_pad(rests, 0, pad_to_multiple_of=4)
    shared, lengths = generate_tokens(model, rest.tokens, rest.mask, sampling, prefix=np.array(prefix))
    np.testing.assert_array_equal(shared, expected)
    assert (lengths == NEW_TOKENS).all()


def test_shared_prefix_length():
    class Config:
        sliding_windows = (None, None)

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 7]], Config, 10) == 2
    # every prompt keeps at least one token outside the prefix
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]], Config, 10) == 2
    assert shared_prefix_length([[1], [1, 2]], Config, 10) == 0
    assert shared_prefix_length([[9, 2], [1, 2]], Config, 10) == 0
    Config.sliding_windows = (None, 8)  # the prompts + new tokens would reach the window
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5]], Config, 10) == 0
    Config.sliding_windows = (4096, None)
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5]], Config, 10) == 3


def test_stop_sequences_end_a_row_like_eos(tmp_path):
    make_tiny_checkpoint("llama_tied", tmp_path)
    model = from_pretrained(tmp_path)
    tokens, mask = left_padded_batch(model.config.vocab_size, [6, 4], seed=5)
    sampling = SamplingConfig(max_new_tokens=8)
    free, _ = generate_tokens(model, tokens, mask, sampling)
    stop = free[0, 2:4].tolist()  # row 0 generates this pair at steps 2-3
    never = [[model.config.vocab_size + 1]]  # a token no row generates
    out, lengths = generate_tokens(model, tokens, mask, sampling, pad_id=-1,
                                   stop_sequences=[[[99999, 99998], stop], never])
    first_end = next(i + 2 for i in range(7) if free[0, i:i + 2].tolist() == stop)
    assert lengths.tolist() == [first_end, 8]
    np.testing.assert_array_equal(out[0, :first_end], free[0, :first_end])
    assert (out[0, first_end:] == -1).all()
    np.testing.assert_array_equal(out[1], free[1])  # the other row runs to the end
    with pytest.raises(ValueError, match="empty stop sequence"):
        generate_tokens(model, tokens, mask, sampling, stop_sequences=[[[]], never])


def test_stop_token_sequences_decode_to_their_text():
    from tests.tiny_tokenizer import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    sequences = stop_token_sequences(tokenizer, ["attic", "living room"])
    assert sequences
    for ids in sequences:
        text = tokenizer.decode(ids).lower()
        assert "attic" in text or "living room" in text
    assert len(sequences) == len({tuple(s) for s in sequences})
