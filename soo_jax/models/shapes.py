"""The shapes of the paper's three models as hand-written transformers configs (nothing is
downloaded), for planning memory and compiling ahead of time without weights.

Values from the models' config.json files on the Hugging Face Hub, summarised in
docs/paper_notes.md §1.1. Token ids are included for completeness; only the shapes and the
numerics flags matter for planning.
"""

from __future__ import annotations

import transformers

from soo_jax.models.config import ModelConfig, from_hf_config


def mistral_7b_instruct_v02() -> transformers.PretrainedConfig:
    # v0.2 has no sliding window (v0.1 had 4096); rope theta 1e6.
    return transformers.MistralConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, hidden_act="silu",
        max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def gemma_2_27b_it() -> transformers.PretrainedConfig:
    # Queries scaled by 144**-0.5 (query_pre_attn_scalar), not head_dim**-0.5; soft-caps 50/30;
    # a 4096-token window on alternating layers; tied embeddings.
    return transformers.Gemma2Config(
        vocab_size=256000, hidden_size=4608, intermediate_size=36864, num_hidden_layers=46,
        num_attention_heads=32, num_key_value_heads=16, head_dim=128, hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=144,
        sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1)


def calmerys_78b_orpo_v01() -> transformers.PretrainedConfig:
    # Qwen2-72B widened to 86 layers (RYS-XLarge): q/k/v biases, untied head, theta 1e6. The
    # vocabulary of 151646 divides by no power of two above 2, so it is never split over tensor.
    return transformers.Qwen2Config(
        vocab_size=151646, hidden_size=8192, intermediate_size=29568, num_hidden_layers=86,
        num_attention_heads=64, num_key_value_heads=8, hidden_act="silu", max_position_embeddings=32768,
        rms_norm_eps=1e-6, rope_theta=1e6, use_sliding_window=False, tie_word_embeddings=False,
        bos_token_id=151643, eos_token_id=151645)


HF_CONFIGS = {
    "mistral-7b": mistral_7b_instruct_v02,
    "gemma-2-27b": gemma_2_27b_it,
    "calmerys-78b": calmerys_78b_orpo_v01,
}


def model_config(name: str) -> ModelConfig:
    if name not in HF_CONFIGS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(HF_CONFIGS)}")
    return from_hf_config(HF_CONFIGS[name]())
