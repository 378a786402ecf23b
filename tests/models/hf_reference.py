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


def assert_close_on_mask(ours, ref, mask: np.ndarray, what: str, rtol: float = 1e-5) -> float:
    """Asserts |ours - ref| <= rtol * (max|ref| + |ref|) on the real positions of `mask`; returns
    max |ours - ref| / max |ref| there."""
    real = mask.astype(bool)
    ours, ref = np.asarray(ours)[real], np.asarray(ref)[real]
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * scale, err_msg=what)
    return float(np.abs(ours - ref).max() / scale)


def burglar_prompts(n: int) -> list[str]:
    """The authors' first `n` scenarios where ../shared is present, else `n` of our generated ones
    (same template), so a comparison runs everywhere."""
    from soo_jax.data.scenarios import false_recommendation_scenarios, load_reference_scenarios
    from tests.conftest import REFERENCE_DIR

    path = REFERENCE_DIR / "false_recommendation_scenarios.json"
    if path.is_file():
        return [s.prompt for s in load_reference_scenarios(path)[:n]]
    return [s.prompt for s in false_recommendation_scenarios(n=n, seed=0)]


def generation_models(model_dir):
    """(our model, transformers' fp32 model, the tokenizer) from one model directory, for compare_greedy."""
    from soo_jax.models.loader import from_pretrained, load_tokenizer

    ours = from_pretrained(model_dir)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return ours, theirs, load_tokenizer(model_dir)


def compare_greedy(models, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy chat completions of our KV-cache generator and of transformers' `generate`, asserted
    token-identical (lengths included); returns our decoded completions. `models` is (our model,
    the transformers model, the tokenizer)."""
    from soo_jax.models.generate import SamplingConfig, chat_prompts, encode_left_padded, generate_tokens

    ours_model, torch_model, tokenizer = models
    tokens, mask = encode_left_padded(tokenizer, chat_prompts(tokenizer, prompts))
    eos = tokenizer.eos_token_id
    ours, lengths = generate_tokens(ours_model, tokens, mask, SamplingConfig(max_new_tokens=max_new_tokens,
                                                                             eos_token_ids=(eos,)), pad_id=eos)
    with torch.no_grad():
        ref = torch_model.generate(input_ids=torch.tensor(tokens, dtype=torch.long),
                                   attention_mask=torch.tensor(mask, dtype=torch.long), do_sample=False,
                                   max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos)
    ref = ref[:, tokens.shape[1]:].numpy()
    texts = []
    for row in range(len(prompts)):
        ref_row = ref[row]
        ref_len = int(np.argmax(ref_row == eos)) + 1 if (ref_row == eos).any() else len(ref_row)
        assert lengths[row] == ref_len, (row, tokenizer.decode(ref_row[:ref_len]))
        np.testing.assert_array_equal(ours[row, :ref_len], ref_row[:ref_len], err_msg=f"scenario {row}")
        texts.append(tokenizer.decode(ours[row, :lengths[row]], skip_special_tokens=True))
    return texts
