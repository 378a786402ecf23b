"""Capability retention without a judge: next-token KL to the base model, greedy answers side
by side, and MT-Bench answers in FastChat's format for judging elsewhere.

KL positions: every position of the chat-rendered general prompt, i.e. the user turn and the
assistant header up to the point where the answer would start (`add_generation_prompt=True`);
the distribution at position t is over token t+1, so the last one is over the answer's first
token. Left padding is excluded. Both directions are reported: KL(base || tuned), the
expectation under the base model (the form of `soo_jax.soo.kl_to_reference`), and
KL(tuned || base).
"""
from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from soo_jax.data.batching import batch_prompts, fixed_size_chunks, padding_id
from soo_jax.eval.mtbench import GREEDY_BELOW, ChatFunction
from soo_jax.lora import lora_linears

__all__ = ["base_view", "per_prompt_kl", "next_token_kl", "side_by_side_answers",
           "make_chat_function"]


def base_view(tuned_model):
    """The model before fine-tuning, as a view of `tuned_model`: every LoRA adapter kept with
    B = 0, so each adapted layer adds exactly zero and the outputs are bitwise the base
    model's. The view shares the base weights' buffers (no copy), leaves `tuned_model`
    unchanged, and has the same graph as `tuned_model`, so every jitted function compiled for
    one serves the other (on CPU a 30-layer model takes about a minute per shape)."""
    graphdef, state = nnx.split(tuned_model)
    view = nnx.merge(graphdef, state)
    for _, linear in lora_linears(view):
        if linear.lora is not None:
            # A new Variable: assigning into the shared one would zero the tuned model too.
            linear.lora.b = linear.lora.b.replace(jnp.zeros_like(linear.lora.b[...]))
    return view


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _log_probs(graphdef, state, tokens, mask):
    model = nnx.merge(graphdef, state)
    logits, _ = model(tokens, mask, logits="all")
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


@jax.jit
def per_prompt_kl(log_p: jax.Array, log_q: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over each row's real positions of KL(P || Q) = sum_v p (log p - log q): [B]."""
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)  # [B, T]
    weights = mask.astype(jnp.float32)
    return jnp.sum(kl * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def next_token_kl(base_model, tuned_model, tokenizer, prompts: Sequence[str], *,
                  chat_template: bool = True, batch_size: int = 16) -> dict:
    """Per-prompt and mean next-token KL between the base and the tuned model (see module
    docstring for positions and directions). JSON-ready."""
    if not prompts:
        raise ValueError("no prompts")
    batch = batch_prompts(tokenizer, prompts, use_chat_template=chat_template)
    base = nnx.split(base_model)
    tuned = nnx.split(tuned_model)
    forward, backward = [], []
    for start, padded in zip(range(0, len(prompts), batch_size), fixed_size_chunks(len(prompts), batch_size)):
        real = min(batch_size, len(prompts) - start)
        tokens, mask = jnp.asarray(batch.tokens[padded]), jnp.asarray(batch.mask[padded])
        log_base = _log_probs(*base, tokens, mask)
        log_tuned = _log_probs(*tuned, tokens, mask)
        forward.append(np.asarray(per_prompt_kl(log_base, log_tuned, mask))[:real])
        backward.append(np.asarray(per_prompt_kl(log_tuned, log_base, mask))[:real])
    forward_kl = np.concatenate(forward).astype(np.float64)
    backward_kl = np.concatenate(backward).astype(np.float64)
    return {
        "mean_kl_base_tuned": float(forward_kl.mean()),
        "mean_kl_tuned_base": float(backward_kl.mean()),
        "per_prompt": [{"prompt": p, "positions": int(n), "kl_base_tuned": float(f),
                        "kl_tuned_base": float(b)}
                       for p, n, f, b in zip(prompts, batch.lengths, forward_kl, backward_kl)],
        "positions": "every position of the chat-rendered prompt (user turn + assistant header)"
                     if chat_template else "every position of the raw prompt (with BOS)",
        "chat_template": chat_template,
    }


def side_by_side_answers(generate_base, generate_tuned, prompts: Sequence[str],
                         ids: Sequence[str] | None = None) -> list[dict]:
    """[{"id", "prompt", "base", "tuned"}] from two `Generate` functions (greedy)."""
    base, tuned = generate_base(prompts), generate_tuned(prompts)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(prompts))]
    return [{"id": i, "prompt": p, "base": b, "tuned": t}
            for i, p, b, t in zip(ids, prompts, base, tuned)]


def make_chat_function(model, tokenizer, *, seed: int = 0,
                       system: str | None = None) -> ChatFunction:
    """A `soo_jax.eval.mtbench.ChatFunction` on our generator: the whole conversation through
    the tokenizer's chat template; greedy below FastChat's temperature threshold, else
    temperature sampling (top_p 1, as FastChat); an answer ends at any id of
    `soo_jax.models.generate.eos_token_ids` (as every generation does). The sampling key depends
    only on `seed` and the rendered conversation, so a resumed run draws what an uninterrupted
    one would."""
    from soo_jax.models.generate import SamplingConfig, encode_left_padded, eos_token_ids, generate_tokens

    eos = eos_token_ids(model.config, tokenizer)
    pad_id = padding_id(tokenizer)
    base_key = jax.random.key(seed)

    def chat(messages: list[dict], temperature: float, max_new_tokens: int) -> str:
        turns = ([{"role": "system", "content": system}] if system else []) + list(messages)
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        tokens, mask = encode_left_padded(tokenizer, [text])
        sampling = SamplingConfig(
            max_new_tokens=max_new_tokens,
            temperature=0.0 if temperature < GREEDY_BELOW else float(temperature),
            eos_token_ids=eos)
        key = jax.random.fold_in(base_key, zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF)
        out, lengths = generate_tokens(model, tokens, mask, sampling, key=key, pad_id=pad_id)
        return tokenizer.decode(out[0, :lengths[0]], skip_special_tokens=True).strip()

    return chat
