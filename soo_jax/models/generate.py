"""Batched KV-cache generation: one jitted prefill, then a jitted `lax.while_loop` of decode steps.

Prompts are left-padded so every row's next token lands in the same cache slot. Decoding stops
when every row has produced an end-of-sequence token or `max_new_tokens` is reached.

A token prefix that every prompt shares (a chat template's system turn, a scenario's fixed
opening) can be prefilled once for the whole batch and its keys/values broadcast to every row:
the cache then holds [prefix | left padding | prompt rest]. Positions count real tokens only and
padding slots are masked out, so this is the same computation as prefilling each full prompt.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from soo_jax.checks import field_number
from soo_jax.data.batching import fixed_size_chunks, left_pad, padding_id
from soo_jax.models.transformer import CausalLM, extend_cache, init_cache

Array = jax.Array
# Prompt widths are rounded up to a multiple of this: few distinct shapes, few compilations.
PAD_TO_MULTIPLE = 16


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 means greedy; otherwise softmax(logits / temperature) truncated to top_p."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "max_new_tokens", field_number("max_new_tokens", self.max_new_tokens,
                                                                integer=True, low=1))
        object.__setattr__(self, "temperature", field_number("temperature", self.temperature, low=0))
        object.__setattr__(self, "top_p", field_number("top_p", self.top_p, low=0, high=1, low_open=True))


def sample_token(logits: Array, key: Array, temperature: float, top_p: float) -> Array:
    """Next token ids [B] from last-position logits [B, V]."""
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        cutoff_index = jnp.sum(cumulative < top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _prefilled_prefix_cache(model: CausalLM, prefix: Array, batch: int, max_length: int, cache_dtype):
    """The cache after the shared prefix [P], computed once and broadcast to `batch` rows."""
    cache = init_cache(model.config, 1, max_length, cache_dtype)
    _, cache = model(prefix[None, :], jnp.ones((1, prefix.shape[0]), bool), cache=cache, logits="last")
    return cache.broadcast_rows(batch)


ANY_TOKEN = -2  # left filler of a right-aligned stop sequence


def _ends_with_stop(recent: Array, stops: Array) -> Array:
    """bool [B]: row b's last generated tokens `recent` [B, L] end with one of its stop
    sequences `stops` [B, K, L] (right-aligned, left-filled with ANY_TOKEN; an all-filler
    entry never matches)."""
    real = stops != ANY_TOKEN
    hit = jnp.all(~real | (stops == recent[:, None, :]), axis=-1) & jnp.any(real, axis=-1)
    return jnp.any(hit, axis=-1)


@functools.partial(jax.jit, static_argnames=("graphdef", "sampling", "cache_dtype", "pad_id"))
def generate_jit(graphdef, state, prefix: Array, tokens: Array, mask: Array, stops: Array, key: Array, *,
                 sampling: SamplingConfig, cache_dtype, pad_id: int) -> tuple[Array, Array]:
    """The compiled generation loop behind `generate` (public so benchmarks can lower it)."""
    model: CausalLM = nnx.merge(graphdef, state)
    batch, prompt_len = tokens.shape
    steps = sampling.max_new_tokens
    eos = jnp.asarray(sampling.eos_token_ids or (-1,), jnp.int32)

    # The prompt is prefilled into a cache holding exactly prefix + prompt, so its attention
    # spans no empty decode slots; the slots for new tokens are appended afterwards.
    prefilled_length = prefix.shape[0] + prompt_len
    if prefix.shape[0]:
        cache = _prefilled_prefix_cache(model, prefix, batch, prefilled_length, cache_dtype)
    else:
        cache = init_cache(model.config, batch, prefilled_length, cache_dtype)
    logits, cache = model(tokens, mask, cache=cache, logits="last")
    cache = extend_cache(cache, steps)
    key, step_key = jax.random.split(key)
    token = sample_token(logits[:, -1], step_key, sampling.temperature, sampling.top_p)
    out = jnp.full((batch, steps), pad_id, jnp.int32).at[:, 0].set(token)
    # The last generated tokens, for stop-sequence matching (width 0 when there are none).
    recent = jnp.full((batch, stops.shape[-1]), ANY_TOKEN, jnp.int32)

    def finished(token, recent):
        if not stops.shape[-1]:
            return jnp.isin(token, eos), recent
        recent = jnp.concatenate([recent[:, 1:], token[:, None]], axis=1)
        return jnp.isin(token, eos) | _ends_with_stop(recent, stops), recent

    done, recent = finished(token, recent)
    lengths = jnp.where(done, 1, steps)

    def keep_going(carry):
        step, _, _, done, *_ = carry
        return (step < steps) & ~jnp.all(done)

    def decode_step(carry):
        step, cache, token, done, recent, lengths, out, key = carry
        logits, cache = model(token[:, None], jnp.ones((batch, 1), bool), cache=cache, logits="last")
        key, step_key = jax.random.split(key)
        token = sample_token(logits[:, -1], step_key, sampling.temperature, sampling.top_p)
        token = jnp.where(done, pad_id, token)
        out = out.at[:, step].set(token)
        now_done, recent = finished(token, recent)
        lengths = jnp.where(~done & now_done, step + 1, lengths)
        return step + 1, cache, token, done | now_done, recent, lengths, out, key

    carry = (jnp.int32(1), cache, token, done, recent, lengths, out, key)
    *_, lengths, out, _ = jax.lax.while_loop(keep_going, decode_step, carry)
    # A completion runs up to and including its first EOS token or the end of a stop sequence.
    return out, lengths


def generate_tokens(model: CausalLM, tokens, mask, sampling: SamplingConfig, *, key: Array | None = None,
                    pad_id: int = 0, cache_dtype=None, prefix=None,
                    stop_sequences: Sequence[Sequence[Sequence[int]]] | None = None,
                    stop_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Completions [B, max_new_tokens] (padded after EOS with pad_id) and their lengths [B].

    `prefix` (int [P]), if given, precedes every row: row b's prompt is prefix + its real tokens.
    `stop_sequences[b]`, if given, lists token sequences that end row b's completion (kept in
    it) as soon as its generated tokens end with one, as an EOS token would.
    """
    stops = _stop_array(stop_sequences, len(tokens), stop_shape)
    prefix = jnp.zeros((0,), jnp.int32) if prefix is None else jnp.asarray(prefix, jnp.int32)
    if prefix.ndim != 1:
        raise ValueError(f"prefix must be a 1-D array of token ids, got shape {prefix.shape}")
    tokens = jnp.asarray(tokens, jnp.int32)
    mask = jnp.asarray(mask, bool)
    if tokens.ndim != 2 or tokens.shape != mask.shape:
        raise ValueError(f"tokens {tokens.shape} and mask {mask.shape} must both be [batch, length]")
    if not bool(jnp.all(mask[:, -1])):
        raise ValueError("prompts must be left-padded: the last position of every row must be a real token")
    graphdef, state = nnx.split(model)
    key = jax.random.key(0) if key is None else key
    out, lengths = generate_jit(graphdef, state, prefix, tokens, mask, stops, key, sampling=sampling,
                             cache_dtype=cache_dtype or model.dtype, pad_id=pad_id)
    return np.asarray(out), np.asarray(lengths)


def _stop_array(stop_sequences, batch: int, shape: tuple[int, int] | None = None) -> Array:
    """Per-row stop sequences -> int [B, K, L], right-aligned and left-filled with ANY_TOKEN
    (K, L: `shape`, or the largest here; a fixed shape keeps one compilation across batches;
    rows without stop sequences give K = L = 0)."""
    if stop_sequences is None:
        return jnp.full((batch, 0, 0), ANY_TOKEN, jnp.int32)
    if len(stop_sequences) != batch:
        raise ValueError(f"stop_sequences has {len(stop_sequences)} rows for a batch of {batch}")
    if any(len(seq) == 0 for row in stop_sequences for seq in row):
        raise ValueError("an empty stop sequence would stop every row at once")
    k, width = shape or _stop_shape(stop_sequences)
    stops = np.full((batch, k, width), ANY_TOKEN, np.int32)
    for b, row in enumerate(stop_sequences):
        for i, seq in enumerate(row):
            stops[b, i, width - len(seq):] = seq
    return jnp.asarray(stops)


def _stop_shape(stop_sequences) -> tuple[int, int]:
    return (max(len(row) for row in stop_sequences),
            max((len(seq) for row in stop_sequences for seq in row), default=0))


def chat_prompts(tokenizer, prompts: Sequence[str], *, system: str | None = None) -> list[str]:
    """Renders user prompts with the tokenizer's chat template, ready for generation."""
    rendered = []
    for prompt in prompts:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]
        rendered.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return rendered


def encode_left_padded(tokenizer, texts: Sequence[str], *, pad_to_multiple_of: int = PAD_TO_MULTIPLE,
                       add_special_tokens: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask [B, T], left-padded to a multiple of `pad_to_multiple_of` (fewer recompiles).

    Chat-rendered text already holds its special tokens, so by default nothing is added to it.
    """
    if not texts:
        raise ValueError("no prompts to encode")
    encoded = [tokenizer(t, add_special_tokens=bool(add_special_tokens))["input_ids"] for t in texts]
    _check_not_empty(encoded)
    batch = left_pad(encoded, padding_id(tokenizer), pad_to_multiple_of=pad_to_multiple_of)
    return batch.tokens, batch.mask.astype(np.int32)


def _check_not_empty(encoded: Sequence[Sequence[int]]) -> None:
    empty = next((row for row, ids in enumerate(encoded) if not ids), None)
    if empty is not None:
        raise ValueError(f"prompt {empty} encodes to no tokens")


def shared_prefix_length(encoded: Sequence[Sequence[int]], model_config, max_new_tokens: int) -> int:
    """How many leading tokens every prompt shares and may be prefilled once (0: share nothing).

    At least one token of each prompt stays outside the prefix (its last position gives the first
    logits). Not with sliding-window attention that the prompts could reach: the window counts
    cache slots, and the padding between prefix and rest would shift them.
    """
    first = encoded[0]
    length = min(len(e) for e in encoded) - 1
    for ids in encoded[1:]:
        length = min(length, next((i for i, (a, b) in enumerate(zip(first, ids)) if a != b), length))
    longest = max(len(e) for e in encoded) + max_new_tokens + PAD_TO_MULTIPLE
    if any(w is not None and w < longest for w in model_config.sliding_windows):
        return 0
    return max(length, 0)


def generate_text(model: CausalLM, tokenizer, prompts: Sequence[str], *, sampling: SamplingConfig,
                  chat: bool = True, system: str | None = None, batch_size: int = 32,
                  key: Array | None = None, progress=None, share_prefix: bool = True,
                  stop_texts: Sequence[Sequence[str]] | None = None,
                  on_batch: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
    """Completions for raw prompts; with `chat`, rendered through the tokenizer's chat template.

    Prompts run in order of token length, and the last batch is filled by repeating its last
    prompt, so every batch has the same size and few distinct widths: each (batch, width) shape
    compiles once. With `share_prefix`, the token prefix common to all prompts (e.g. the chat
    template's system turn) is prefilled once per batch instead of once per row.
    `stop_texts[i]`, if given, are strings that end prompt i's completion once generated (as
    their usual tokenisations; see `stop_token_sequences`). Completions come back in the
    caller's order; `on_batch(prompt indices, completions)` gets each batch's as it finishes
    (fillers left out), so a caller can store answers before the whole call ends.
    """
    if not prompts:
        raise ValueError("no prompts to generate from")
    texts = chat_prompts(tokenizer, prompts, system=system) if chat else list(prompts)
    sampling = dataclasses.replace(sampling, eos_token_ids=eos_token_ids(model.config, tokenizer,
                                                                         sampling.eos_token_ids))
    pad_id = padding_id(tokenizer)
    key = jax.random.key(0) if key is None else key
    # Raw prompts get the tokenizer's BOS as transformers' generate would; chat text has it.
    encoded = tokenizer(texts, add_special_tokens=not chat)["input_ids"]
    _check_not_empty(encoded)
    n_prefix = shared_prefix_length(encoded, model.config, sampling.max_new_tokens) if share_prefix else 0
    prefix = np.asarray(encoded[0][:n_prefix], np.int32)
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    ordered = [encoded[i][n_prefix:] for i in order]
    if stop_texts is not None and len(stop_texts) != len(prompts):
        raise ValueError(f"stop_texts has {len(stop_texts)} entries for {len(prompts)} prompts")
    # No stop texts: empty lists, i.e. a zero-width stop array and plain EOS stopping.
    stops = [stop_token_sequences(tokenizer, stop_texts[i]) if stop_texts is not None else []
             for i in order]
    stop_shape = _stop_shape(stops)  # one shape for every batch: one compilation
    batch_size = min(batch_size, len(ordered))
    completions: list[str] = []
    for rows in fixed_size_chunks(len(ordered), batch_size):
        batch = left_pad([ordered[r] for r in rows], pad_id, pad_to_multiple_of=PAD_TO_MULTIPLE)
        key, chunk_key = jax.random.split(key)
        out, lengths_out = generate_tokens(
            model, batch.tokens, batch.mask, sampling, key=chunk_key, pad_id=pad_id, prefix=prefix,
            stop_sequences=[stops[r] for r in rows], stop_shape=stop_shape)
        done_before = len(completions)
        completions += [tokenizer.decode(out[row, :lengths_out[row]], skip_special_tokens=True)
                        for row in range(len(out))]
        if on_batch is not None:
            real = range(done_before, min(len(completions), len(texts)))
            on_batch([int(order[rank]) for rank in real], [completions[rank] for rank in real])
        if progress is not None:
            progress(min(len(completions), len(texts)), len(texts))
    in_caller_order = [""] * len(texts)
    for rank, index in enumerate(order):
        in_caller_order[index] = completions[rank]
    return in_caller_order


def stop_token_sequences(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token sequences whose generation means one of `texts` was written: each text as it
    tokenises alone and after a space, lower-case and capitalised. A completion that spells a
    text some other way is simply not stopped (the check never stops on anything else: every
    sequence decodes to a string containing its text, case aside)."""
    sequences = []
    for text in texts:
        for variant in dict.fromkeys((text, text.lower(), text.capitalize())):
            for spaced in (variant, " " + variant):
                ids = tokenizer(spaced, add_special_tokens=False)["input_ids"]
                if ids and text.lower() in tokenizer.decode(ids).lower() and ids not in sequences:
                    sequences.append(ids)
    return sequences


def eos_token_ids(model_config, tokenizer, extra: Sequence[int] = ()) -> tuple[int, ...]:
    """Every token id that ends a completion, sorted: the model's (config.json's `eos_token_id`
    merged with generation_config.json's by `soo_jax.models.loader.load_config`), the
    tokenizer's EOS, and `extra`. The one place that decides it, for every generating caller:
    a chat model may end its turn with a token only generation_config.json names (Gemma-2-it's
    <end_of_turn>), and an answer that missed it would run on to max_new_tokens."""
    ids = {int(i) for i in (*model_config.eos_token_ids, *extra)}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return tuple(sorted(ids))
