"""Tiny random transformers models written to disk, and their PyTorch outputs, for parity tests."""

from __future__ import annotations

import numpy as np
import torch
import transformers

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)

# One entry per variant the mission needs; each exercises a different code path.
TINY_CONFIGS = {
    # SmolLM2-like: tied embeddings, GQA.
    "llama_tied": lambda: transformers.LlamaConfig(**TINY, tie_word_embeddings=True, rope_theta=1e5),
    # Llama-3.1-style rope scaling, untied head, biases on every projection.
    "llama_rope_llama3": lambda: transformers.LlamaConfig(
        **TINY, attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "llama_rope_yarn": lambda: transformers.LlamaConfig(
        **TINY, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0,
                                 "original_max_position_embeddings": 32}),
    "llama_rope_linear": lambda: transformers.LlamaConfig(
        **TINY, rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}),
    # Mistral with a sliding window shorter than the test sequences.
    "mistral_window": lambda: transformers.MistralConfig(**TINY, sliding_window=5, rope_theta=1e6),
    # Qwen2 / CalmeRys layout: q/k/v biases, no o_proj bias, untied head, theta 1e6.
    "qwen2": lambda: transformers.Qwen2Config(**TINY, rope_theta=1e6, tie_word_embeddings=False),
    # Gemma-2-27B style: query_pre_attn_scalar != head_dim, soft-caps, alternating sliding window.
    "gemma2_27b_style": lambda: transformers.Gemma2Config(
        **{**TINY, "num_hidden_layers": 4}, head_dim=16, query_pre_attn_scalar=36, sliding_window=5,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh"),
}


def make_tiny_checkpoint(name: str, directory, seed: int = 0, vocab_size: int | None = None) -> torch.nn.Module:
    """Writes a randomly initialised tiny model to `directory`; returns the eager fp32 torch model."""
    torch.manual_seed(seed)
    config = TINY_CONFIGS[name]()
    if vocab_size is not None:
        config.vocab_size = vocab_size
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        # Norm weights are initialised to constants; randomise them so the tests see them.
        for module_name, param in model.named_parameters():
            if "norm" in module_name or module_name.endswith(".bias"):
                param.add_(0.1 * torch.randn_like(param))
    model.eval().float()
    model.save_pretrained(directory)
    return model


def left_padded_batch(vocab_size: int, lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    width = max(lengths)
    tokens = np.zeros((len(lengths), width), np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, width - n:] = rng.integers(1, vocab_size, n)
        mask[row, width - n:] = 1
    return tokens, mask


def torch_forward(model, tokens: np.ndarray, mask: np.ndarray, o_proj_layers=()) -> tuple[np.ndarray, dict]:
    """Logits and the o_proj outputs of the given layers (captured with forward hooks)."""
    captured, hooks = {}, []
    for layer in o_proj_layers:
        module = model.model.layers[layer].self_attn.o_proj
        hooks.append(module.register_forward_hook(
            lambda _m, _i, out, layer=layer: captured.__setitem__(layer, out.detach().float().numpy().copy())))
    positions = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                        attention_mask=torch.tensor(mask, dtype=torch.long),
                        position_ids=torch.tensor(positions, dtype=torch.long))
    finally:
        for h in hooks:
            h.remove()
    return out.logits.float().numpy(), captured
