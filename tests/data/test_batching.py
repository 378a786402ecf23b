import numpy as np
import pytest

from soo_jax.data import batching as B
from soo_jax.data.pairs import PromptPair, latent_soo_pairs, soo_training_pairs

PAIRS = soo_training_pairs()[:5]  # templates 1, 2, 3, 1, 2: lengths differ within and across


def _real_tokens(batch, row):
    return batch.tokens[row][batch.mask[row]].tolist()


def _interleaved_prompts(pairs):
    """The rows a PairBatch must hold, written out: self_0, other_0, self_1, other_1, ..."""
    prompts = []
    for pair in pairs:
        prompts.append(pair.self_prompt)
        prompts.append(pair.other_prompt)
    return prompts


def test_pair_batch_layout_left_padding_and_mask(tiny_tokenizer):
    batch = B.batch_pairs(tiny_tokenizer, PAIRS)
    prompts = _interleaved_prompts(PAIRS)
    expected = [tiny_tokenizer(p)["input_ids"] for p in prompts]
    assert batch.num_pairs == 5
    assert batch.tokens.shape == batch.mask.shape == (10, max(map(len, expected)))
    assert batch.tokens.dtype == np.int32 and batch.mask.dtype == np.bool_
    assert len({len(e) for e in expected}) > 1  # the test needs padding to happen
    for row, ids in enumerate(expected):
        n_pad = batch.tokens.shape[1] - len(ids)
        assert not batch.mask[row, :n_pad].any() and batch.mask[row, n_pad:].all()
        assert _real_tokens(batch, row) == ids  # rows are [self_0, other_0, self_1, other_1, ...]
        assert (batch.tokens[row, :n_pad] == tiny_tokenizer.pad_token_id).all()
        assert batch.positions[row, n_pad:].tolist() == list(range(len(ids)))
    assert batch.lengths.tolist() == [len(e) for e in expected]


def test_decoding_gives_the_prompts_back_with_one_bos(tiny_tokenizer):
    batch = B.batch_pairs(tiny_tokenizer, PAIRS)
    prompts = _interleaved_prompts(PAIRS)
    bos = tiny_tokenizer.bos_token_id
    for row, prompt in enumerate(prompts):
        real = _real_tokens(batch, row)
        assert real[0] == bos and real.count(bos) == 1
        assert tiny_tokenizer.decode(real, skip_special_tokens=True) == prompt


def test_split_and_overlap_mask(tiny_tokenizer):
    batch = B.batch_pairs(tiny_tokenizer, PAIRS)
    selves, others = batch.split()
    # Padded to the batch's common length (that of all ten prompts), the self rows alone.
    all_prompts = B.batch_prompts(tiny_tokenizer, [p.self_prompt for p in PAIRS] + [p.other_prompt for p in PAIRS])
    assert np.array_equal(selves.tokens, all_prompts.tokens[:5])
    assert np.array_equal(others.tokens, all_prompts.tokens[5:])
    assert np.array_equal(selves.tokens, batch.tokens[[0, 2, 4, 6, 8]])
    assert np.array_equal(others.mask, batch.mask[[1, 3, 5, 7, 9]])
    for i, pair in enumerate(PAIRS):
        assert tiny_tokenizer.decode(_real_tokens(selves, i), skip_special_tokens=True) == \
            pair.self_prompt
        assert tiny_tokenizer.decode(_real_tokens(others, i), skip_special_tokens=True) == \
            pair.other_prompt
    overlap = batch.overlap_mask()
    assert overlap.shape == (5, batch.tokens.shape[1])
    assert overlap.sum(axis=1).tolist() == np.minimum(selves.lengths, others.lengths).tolist()
    assert overlap[:, -1].all()  # end-aligned: the last column is real in every row


def test_bucketing_and_max_length(tiny_tokenizer):
    longest = B.batch_pairs(tiny_tokenizer, PAIRS).tokens.shape[1]
    bucketed = B.batch_pairs(tiny_tokenizer, PAIRS, pad_to_multiple_of=16)
    assert bucketed.tokens.shape[1] % 16 == 0 and longest <= bucketed.tokens.shape[1] < longest + 16
    assert bucketed.mask.sum() == B.batch_pairs(tiny_tokenizer, PAIRS).mask.sum()
    capped = B.batch_pairs(tiny_tokenizer, PAIRS, pad_to_multiple_of=1000, max_length=longest + 1)
    assert capped.tokens.shape[1] == longest + 1
    assert B.batch_pairs(tiny_tokenizer, PAIRS, max_length=longest).tokens.shape[1] == longest
    with pytest.raises(ValueError, match="max_length"):
        B.batch_pairs(tiny_tokenizer, PAIRS, max_length=longest - 1)


def test_chat_template_option(tiny_tokenizer):
    prompts = [p.self_prompt for p in latent_soo_pairs()[:3]]
    raw = B.batch_prompts(tiny_tokenizer, prompts)
    chat = B.batch_prompts(tiny_tokenizer, prompts, use_chat_template=True)
    no_gen = B.batch_prompts(tiny_tokenizer, prompts, use_chat_template=True,
                             add_generation_prompt=False)
    bos = tiny_tokenizer.bos_token_id
    for row, prompt in enumerate(prompts):
        real = _real_tokens(chat, row)
        assert real[0] == bos and real.count(bos) == 1  # the template's BOS, not a second one
        assert tiny_tokenizer.decode(real) == f"<s>[INST] {prompt} [/INST] Answer:"
        assert tiny_tokenizer.decode(_real_tokens(no_gen, row)) == f"<s>[INST] {prompt} [/INST]"
        assert tiny_tokenizer.decode(_real_tokens(raw, row)) == f"<s>{prompt}"


def test_clear_errors(tiny_tokenizer):
    with pytest.raises(ValueError, match="no prompt pairs"):
        B.batch_pairs(tiny_tokenizer, [])
    with pytest.raises(ValueError, match="no prompts"):
        B.batch_prompts(tiny_tokenizer, [])
    with pytest.raises(TypeError):
        B.batch_prompts(tiny_tokenizer, "one string")
    with pytest.raises(ValueError, match=r"sequence 1 has 3 tokens, more than max_length=2"):
        B.left_pad([[1], [1, 2, 3]], pad_id=0, max_length=2)
    with pytest.raises(ValueError, match="empty"):
        B.left_pad([[1], []], pad_id=0)


def test_padding_falls_back_to_eos(tiny_tokenizer):
    class NoPad:
        pad_token_id = None
        eos_token_id = 2

    class Nothing:
        pad_token_id = None
        eos_token_id = None

    assert B.padding_id(tiny_tokenizer) == tiny_tokenizer.pad_token_id
    assert B.padding_id(NoPad()) == 2
    with pytest.raises(ValueError):
        B.padding_id(Nothing())


def test_left_pad_on_hand_made_rows():
    batch = B.left_pad([[5, 6, 7], [8]], pad_id=0, pad_to_multiple_of=4)
    assert batch.tokens.tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]
    assert batch.mask.tolist() == [[False, True, True, True], [False, False, False, True]]
    assert batch.positions.tolist() == [[0, 0, 1, 2], [0, 0, 0, 0]]
    pair = B.PairBatch(batch.tokens, batch.mask, batch.positions)
    assert pair.num_pairs == 1 and pair.overlap_mask().tolist() == [[False, False, False, True]]


def test_overlap_mask_pairs_adjacent_rows():
    # Rows self_0, other_0, self_1, other_1: pair 0 overlaps on 2 columns, pair 1 on 1.
    batch = B.left_pad([[1, 2, 3], [4, 5], [6], [7, 8, 9]], pad_id=0)
    pair = B.PairBatch(batch.tokens, batch.mask, batch.positions)
    assert pair.num_pairs == 2
    assert pair.overlap_mask().tolist() == [[False, True, True], [False, False, True]]
    selves, others = pair.split()
    assert selves.tokens.tolist() == [[1, 2, 3], [0, 0, 6]] and others.tokens.tolist() == [[0, 4, 5], [7, 8, 9]]


def test_rows_of_gives_each_pairs_self_and_other_row_in_pair_order():
    assert B.PairBatch.rows_of(np.array([3, 0, 5])).tolist() == [6, 7, 0, 1, 10, 11]
    assert B.PairBatch.rows_of(np.array([[2, 1], [0, 4]])).tolist() == [[4, 5, 2, 3], [0, 1, 8, 9]]


def test_single_pair(tiny_tokenizer):
    pair = PromptPair("You want it", "Bob wants it")
    batch = B.batch_pairs(tiny_tokenizer, [pair])
    assert batch.tokens.shape[0] == 2
    assert tiny_tokenizer.decode(_real_tokens(batch, 0), skip_special_tokens=True) == "You want it"
    assert tiny_tokenizer.decode(_real_tokens(batch, 1), skip_special_tokens=True) == "Bob wants it"


def test_fixed_size_chunks_cover_every_index_once_in_equal_shapes():
    import numpy as np

    from soo_jax.data.batching import fixed_size_chunks

    chunks = fixed_size_chunks(7, 3)
    assert [c.tolist() for c in chunks] == [[0, 1, 2], [3, 4, 5], [6, 6, 6]]
    assert {len(c) for c in fixed_size_chunks(8, 4)} == {4} and len(fixed_size_chunks(8, 4)) == 2
    real = np.concatenate([c[:min(3, 7 - 3 * i)] for i, c in enumerate(chunks)])
    assert real.tolist() == list(range(7))
