"""Tokenisation and left-padded batching of prompts and SOO prompt pairs.

Left padding end-aligns every row, so the last real token of each prompt sits at column T-1:
self and other prompts of a pair line up from the end, as the SOO loss expects
(docs/paper_notes.md §1.3), and generation can append at one common column.

Any Hugging Face tokenizer works (only `__call__`, `apply_chat_template` and the pad/eos ids
are used); transformers is not imported here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from soo_jax.data.pairs import PromptPair

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclasses.dataclass(frozen=True)
class TokenBatch:
    """Left-padded rows. `tokens` int32[N, T]; `mask` bool[N, T], True exactly on real tokens;
    `positions` int32[N, T], 0 at each row's first real token (0 on padding too), for RoPE."""

    tokens: np.ndarray
    mask: np.ndarray
    positions: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Real tokens per row, int32[N]."""
        return self.mask.sum(axis=1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class PairBatch(TokenBatch):
    """B pairs in one batch of 2B rows, interleaved `[self_0, other_0, self_1, other_1, ...]`,
    all left-padded to one length T, so a single forward pass covers both sides. The train step
    and the SOO loss (`soo_jax.soo.split_pairs`) read rows in this order too: any even-sized
    contiguous block of rows (a microbatch, a data shard, a host's slice) holds whole pairs."""

    @property
    def num_pairs(self) -> int:
        return self.tokens.shape[0] // 2

    @staticmethod
    def rows_of(pair_index: np.ndarray) -> np.ndarray:
        """The rows of pairs `pair_index` (shape [..., n]), in pair order: [..., 2n] row indices
        `[2p_0, 2p_0 + 1, 2p_1, 2p_1 + 1, ...]`, i.e. interleaved again."""
        pair_index = np.asarray(pair_index)
        return np.stack([2 * pair_index, 2 * pair_index + 1], axis=-1).reshape(*pair_index.shape[:-1], -1)

    def split(self) -> tuple[TokenBatch, TokenBatch]:
        """(self rows, other rows), each with B rows in pair order."""
        return (TokenBatch(self.tokens[0::2], self.mask[0::2], self.positions[0::2]),
                TokenBatch(self.tokens[1::2], self.mask[1::2], self.positions[1::2]))

    def overlap_mask(self) -> np.ndarray:
        """bool[B, T]: columns real in both prompts of a pair (end-aligned), where an
        elementwise self/other activation difference is defined."""
        return self.mask[0::2] & self.mask[1::2]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *,
                   use_chat_template: bool = False,
                   add_generation_prompt: bool = True) -> list[list[int]]:
    """Token ids per prompt. Raw text (the public code's way) gets the tokenizer's own special
    tokens (e.g. BOS); with `use_chat_template` each prompt becomes one user message rendered
    by the tokenizer's chat template, which carries its own BOS, so none is added again."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not one string")
    if len(prompts) == 0:
        raise ValueError("no prompts to encode")
    if use_chat_template:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=add_generation_prompt)
                 for p in prompts]
    else:
        texts = list(prompts)
    ids = tokenizer(texts, add_special_tokens=not use_chat_template)["input_ids"]
    for i, row in enumerate(ids):
        if len(row) == 0:
            raise ValueError(f"prompt {i} encodes to no tokens: {prompts[i]!r}")
    return [list(row) for row in ids]


def padding_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad id, else EOS (Mistral has no pad token; the public code pads with EOS). Its
    value never matters where `mask` is False, but it must be a valid id."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")


def fixed_size_chunks(n: int, size: int) -> list[np.ndarray]:
    """Indices 0..n-1 in chunks of exactly `size`, the last one filled by repeating its final
    index: every batch has one shape, so a jitted function compiles once for all of them.
    Callers drop the repeats (`chunk[:real]`, real = min(size, n - start))."""
    if n <= 0 or size <= 0:
        raise ValueError(f"need n > 0 and size > 0, got n={n}, size={size}")
    chunks = []
    for start in range(0, n, size):
        index = np.arange(start, min(start + size, n))
        chunks.append(np.concatenate([index, np.full(size - len(index), index[-1])]))
    return chunks


def padded_length(longest: int, *, max_length: int | None = None,
                  pad_to_multiple_of: int | None = None) -> int:
    """Batch length T for a longest row of `longest` tokens: rounded up to a multiple of
    `pad_to_multiple_of` (fewer distinct shapes, fewer jit recompiles) but never above
    `max_length`. Raises if the longest row itself exceeds `max_length`."""
    if max_length is not None and longest > max_length:
        raise ValueError(f"a prompt has {longest} tokens, more than max_length={max_length}")
    length = longest
    if pad_to_multiple_of is not None:
        if pad_to_multiple_of <= 0:
            raise ValueError(f"pad_to_multiple_of must be positive, got {pad_to_multiple_of}")
        length = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    return min(length, max_length) if max_length is not None else length


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, *,
             max_length: int | None = None,
             pad_to_multiple_of: int | None = None) -> TokenBatch:
    """Stack token-id rows, right-aligned, padding on the left with `pad_id`."""
    if len(sequences) == 0:
        raise ValueError("no sequences to pad")
    for i, row in enumerate(sequences):
        if len(row) == 0:
            raise ValueError(f"sequence {i} is empty")
        if max_length is not None and len(row) > max_length:
            raise ValueError(f"sequence {i} has {len(row)} tokens, more than "
                             f"max_length={max_length}")
    length = padded_length(max(len(row) for row in sequences), max_length=max_length,
                           pad_to_multiple_of=pad_to_multiple_of)
    tokens = np.full((len(sequences), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(sequences), length), dtype=bool)
    for i, row in enumerate(sequences):
        tokens[i, length - len(row):] = row
        mask[i, length - len(row):] = True
    positions = np.maximum(np.cumsum(mask, axis=1, dtype=np.int32) - 1, 0)
    return TokenBatch(tokens=tokens, mask=mask, positions=positions)


def batch_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *,
                  use_chat_template: bool = False, add_generation_prompt: bool = True,
                  max_length: int | None = None,
                  pad_to_multiple_of: int | None = None) -> TokenBatch:
    """Plain prompts (e.g. for generation), left-padded, in the given order."""
    ids = encode_prompts(tokenizer, prompts, use_chat_template=use_chat_template,
                         add_generation_prompt=add_generation_prompt)
    return left_pad(ids, padding_id(tokenizer), max_length=max_length,
                    pad_to_multiple_of=pad_to_multiple_of)


def batch_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PromptPair], *,
                use_chat_template: bool = False, add_generation_prompt: bool = True,
                max_length: int | None = None,
                pad_to_multiple_of: int | None = None) -> PairBatch:
    """B pairs as one `PairBatch` of 2B interleaved rows `[self_0, other_0, self_1, ...]`, one
    common length."""
    if len(pairs) == 0:
        raise ValueError("no prompt pairs to batch")
    prompts = [prompt for p in pairs for prompt in (p.self_prompt, p.other_prompt)]
    batch = batch_prompts(tokenizer, prompts, use_chat_template=use_chat_template,
                          add_generation_prompt=add_generation_prompt, max_length=max_length,
                          pad_to_multiple_of=pad_to_multiple_of)
    return PairBatch(tokens=batch.tokens, mask=batch.mask, positions=batch.positions)
