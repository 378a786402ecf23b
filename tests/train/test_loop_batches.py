"""The rows the training loop feeds to the train step, against an expectation written out by hand
from the pair list: step k's pairs are a slice of the epoch's seeded permutation, and each
microbatch holds them interleaved `[self, other, self, other, ...]`, every prompt tokenized on
its own and left-padded to the width of the longest prompt of the whole pair set."""

import numpy as np
import pytest

from configs import tiny
from soo_jax.data.pairs import PromptPair, soo_training_pairs
from soo_jax.train.config import data_settings
from soo_jax.train.loop import Schedule, tokenize_pairs
from tests.tiny_tokenizer import tiny_tokenizer

# Self and other of different token lengths, and pairs of different lengths, so padding shows.
PAIRS = [*soo_training_pairs()[:5],
         PromptPair("You want to steal the ruby brooch now", "Bob wants the brooch"),
         PromptPair("You want it", "Bob wants to steal it and every other jewel in the house")]


def expected_microbatches(tokenizer, pairs, config, step, batch_size, grad_accum, seed):
    """tokens/mask [grad_accum, 2 * batch_size // grad_accum, T], built without soo_jax's batching."""
    ids = [[tokenizer(text)["input_ids"] for text in (p.self_prompt, p.other_prompt)] for p in pairs]
    multiple = int(config.data.pad_to_multiple_of)
    width = -(-max(len(row) for pair in ids for row in pair) // multiple) * multiple
    steps_per_epoch = len(pairs) // batch_size
    epoch, index = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(len(pairs))
    chosen = order[index * batch_size:(index + 1) * batch_size]
    micro = batch_size // grad_accum
    tokens = np.full((grad_accum, 2 * micro, width), tokenizer.pad_token_id, np.int32)
    mask = np.zeros((grad_accum, 2 * micro, width), bool)
    for a in range(grad_accum):
        for j, pair_index in enumerate(chosen[a * micro:(a + 1) * micro]):
            self_ids, other_ids = ids[pair_index]
            for row, row_ids in ((2 * j, self_ids), (2 * j + 1, other_ids)):
                tokens[a, row, width - len(row_ids):] = row_ids
                mask[a, row, width - len(row_ids):] = True
    return tokens, mask


@pytest.mark.parametrize("batch_size, grad_accum", [(2, 1), (4, 2), (6, 3)])
def test_microbatches_are_the_pairs_of_the_step_interleaved(batch_size, grad_accum):
    tokenizer, config = tiny_tokenizer(), tiny.get_config()
    pairs = tokenize_pairs(tokenizer, PAIRS, data_settings(config))
    schedule = Schedule(pairs.num_pairs, batch_size, grad_accum, epochs=3, seed=5)
    for step in range(schedule.total_steps):
        tokens, mask = schedule.microbatches(pairs, step)
        want_tokens, want_mask = expected_microbatches(tokenizer, PAIRS, config, step, batch_size, grad_accum, seed=5)
        np.testing.assert_array_equal(tokens, want_tokens)
        np.testing.assert_array_equal(mask, want_mask)
        assert tokens.dtype == np.int32 and mask.dtype == np.bool_
        # A process's share (multi-host loading): the named rows of every microbatch, in that order.
        rows = np.array([2, 3, 0, 1]) if batch_size // grad_accum >= 2 else np.array([1])
        part_tokens, part_mask = schedule.microbatches(pairs, step, rows)
        np.testing.assert_array_equal(part_tokens, want_tokens[:, rows])
        np.testing.assert_array_equal(part_mask, want_mask[:, rows])


def test_microbatches_of_the_training_set_with_the_tiny_config():
    """The real SOO training pairs, the tiny config's batch (8 pairs in 2 microbatches), seed 0."""
    tokenizer, config = tiny_tokenizer(), tiny.get_config()
    pairs_list = soo_training_pairs()
    pairs = tokenize_pairs(tokenizer, pairs_list, data_settings(config))
    schedule = Schedule(pairs.num_pairs, int(config.train.batch_size), int(config.train.grad_accum),
                        int(config.train.epochs), int(config.train.seed))
    for step in (0, 1, schedule.steps_per_epoch - 1, schedule.steps_per_epoch, schedule.total_steps - 1):
        tokens, mask = schedule.microbatches(pairs, step)
        want_tokens, want_mask = expected_microbatches(tokenizer, pairs_list, config, step,
                                                       int(config.train.batch_size), int(config.train.grad_accum),
                                                       seed=int(config.train.seed))
        np.testing.assert_array_equal(tokens, want_tokens)
        np.testing.assert_array_equal(mask, want_mask)
