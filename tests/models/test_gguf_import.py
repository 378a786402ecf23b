"""GGUF import: tiny llama / qwen2 / gemma2 round trips through GGUF files written here.

Each tiny model is a random transformers model written to GGUF the way llama.cpp's converter does
(gguf-py's own tensor-name map, q/k permuted for llama, Gemma norms stored as w + 1, norms and
biases in F32), so the importer is checked against an independent writer, not against itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from soo_jax.models import gguf_import
from soo_jax.models.gguf_import import (
    MalformedGGUFError,
    NotAGGUFFileError,
    UnsupportedArchitectureError,
    UnsupportedQuantizationError,
    import_gguf,
    plan_shards,
    unpermute_rope_rows,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# fp32 logits of the same weights through the same transformers code; measured ~1e-7.
LOGITS_ATOL = 1e-5

# ---------------------------------------------------------------------------------------------
# A tiny byte-level BPE tokenizer, in GGUF metadata form
# ---------------------------------------------------------------------------------------------

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he"]
TOKENS = [*SPECIAL_TOKENS, *bytes_to_unicode().values(), "Ġt", "he", "Ġthe"]
TOKEN_TYPES = [3] * len(SPECIAL_TOKENS) + [1] * (len(TOKENS) - len(SPECIAL_TOKENS))  # 3 = control
VOCAB_SIZE = len(TOKENS)
BOS_ID, EOS_ID = TOKENS.index("<|im_start|>"), TOKENS.index("<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (written independently of the importer)."""
    return (
        weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def q8_0_round_trip(weight: np.ndarray) -> np.ndarray:
    quantized = gguf.quants.quantize(weight.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    return gguf.quants.dequantize(quantized, gguf.GGMLQuantizationType.Q8_0).reshape(weight.shape)


# ---------------------------------------------------------------------------------------------
# Tiny transformers models and their GGUF files
# ---------------------------------------------------------------------------------------------

TINY_SHAPE = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
    pad_token_id=EOS_ID,
)

@dataclass(frozen=True)
class TinyArch:
    config_class: type[transformers.PretrainedConfig]
    model_class: type[transformers.PreTrainedModel]
    gguf_arch: gguf.MODEL_ARCH
    permutes_qk: bool  # llama.cpp permutes q/k rows for this architecture
    tied: bool
    norm_offset: float = 0.0  # llama.cpp stores norm weights as w + offset
    config: dict[str, Any] = field(default_factory=dict)  # architecture-specific config values


TINY_ARCHS = {
    "llama": TinyArch(transformers.LlamaConfig, transformers.LlamaForCausalLM, gguf.MODEL_ARCH.LLAMA, True, False),
    "qwen2": TinyArch(transformers.Qwen2Config, transformers.Qwen2ForCausalLM, gguf.MODEL_ARCH.QWEN2, False, True),
    "gemma2": TinyArch(
        transformers.Gemma2Config,
        transformers.Gemma2ForCausalLM,
        gguf.MODEL_ARCH.GEMMA2,
        False,
        True,
        norm_offset=1.0,
        # Small window and caps, so that the 8-token test inputs exercise both.
        config=dict(sliding_window=4, attn_logit_softcapping=5.0, final_logit_softcapping=3.0, query_pre_attn_scalar=16),
    ),
}


def tiny_model(arch: str, seed: int = 0) -> transformers.PreTrainedModel:
    spec = TINY_ARCHS[arch]
    config = spec.config_class(**TINY_SHAPE, **spec.config, rope_theta=50_000.0, tie_word_embeddings=spec.tied)
    torch.manual_seed(seed)
    model = spec.model_class(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            # Norm weights randomized too: at their init value of 1, a swapped norm would go unseen.
            center = 1.0 if "norm" in name else 0.0
            parameter.copy_(center + 0.2 * torch.randn_like(parameter))
    return model


def write_tiny_gguf(
    model: transformers.PreTrainedModel,
    path: Path,
    arch: str,
    *,
    quantization: gguf.GGMLQuantizationType | None = None,
    skip_tensors: frozenset[str] = frozenset(),
    extra_tensors: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write `model` as llama.cpp would: gguf-py names, q/k permuted for llama, 1-D tensors F32."""
    spec = TINY_ARCHS[arch]
    config = model.config
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TOKENS)
    writer.add_token_types(TOKEN_TYPES)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(EOS_ID)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    if arch == "gemma2":
        writer.add_sliding_window(config.sliding_window)
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
        writer.add_final_logit_softcapping(config.final_logit_softcapping)

    name_map = gguf.get_tensor_name_map(spec.gguf_arch, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        module, suffix = hf_name.rsplit(".", 1)
        gguf_name = f"{name_map.get_name(module)}.{suffix}"
        if gguf_name in skip_tensors:
            continue
        weight = tensor.numpy().astype(np.float32)
        if gguf_name.endswith("norm.weight"):
            weight = weight + np.float32(spec.norm_offset)
        if spec.permutes_qk and gguf_name.endswith(("attn_q.weight", "attn_q.bias")):
            weight = llama_cpp_permute(weight, config.num_attention_heads)
        elif spec.permutes_qk and gguf_name.endswith(("attn_k.weight", "attn_k.bias")):
            weight = llama_cpp_permute(weight, config.num_key_value_heads)
        if quantization is not None and weight.ndim == 2:
            writer.add_tensor(gguf_name, gguf.quants.quantize(weight, quantization), raw_dtype=quantization)
        else:
            writer.add_tensor(gguf_name, weight)
    for gguf_name, weight in (extra_tensors or {}).items():
        writer.add_tensor(gguf_name, weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def load_safetensors_dir(model_dir: Path) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        tensors.update(safetensors.numpy.load_file(shard))
    return tensors


def expected_hf_tensors(model: transformers.PreTrainedModel, norm_offset: float = 0.0) -> dict[str, np.ndarray]:
    """The model's own tensors as an HF checkpoint holds them (no lm_head when tied).

    Norm weights stored with an offset come back as (w + offset) - offset in float32, which is what
    the file can give; the logits tests bound the effect of that rounding.
    """
    state = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        del state["lm_head.weight"]
    if norm_offset:
        offset = np.float32(norm_offset)
        state = {name: (value + offset) - offset if name.endswith("norm.weight") else value for name, value in state.items()}
    return state


def logits(model: transformers.PreTrainedModel, input_ids: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=input_ids).logits.numpy()


INPUT_IDS = torch.tensor([[BOS_ID, 5, 77, 200, 3, 261, 18, 90], [BOS_ID, 100, 101, 102, 103, 104, 105, 106]])


@pytest.fixture(scope="module")
def models() -> dict[str, transformers.PreTrainedModel]:
    return {arch: tiny_model(arch) for arch in TINY_ARCHS}


@pytest.fixture(scope="module")
def f32_ggufs(models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf_f32")
    return {arch: write_tiny_gguf(model, root / f"{arch}.gguf", arch) for arch, model in models.items()}


@pytest.fixture(scope="module")
def f32_dirs(f32_ggufs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_f32")
    return {arch: import_gguf(path, root / arch) for arch, path in f32_ggufs.items()}


@pytest.fixture(scope="module")
def llama_q8_gguf(models, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf_q8") / "llama-q8_0.gguf"
    return write_tiny_gguf(models["llama"], path, "llama", quantization=gguf.GGMLQuantizationType.Q8_0)


@pytest.fixture(scope="module")
def llama_q8_dir(llama_q8_gguf, tmp_path_factory) -> Path:
    return import_gguf(llama_q8_gguf, tmp_path_factory.mktemp("hf_q8") / "llama")


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def test_unpermute_restores_hf_half_split_rope_order():
    # One head of 6 rows: HF's rotate_half pairs row i with row i + 3; llama.cpp stores the
    # pairs interleaved as 0, 3, 1, 4, 2, 5.
    llama_cpp_rows = np.array([0, 3, 1, 4, 2, 5], dtype=np.float32)
    np.testing.assert_array_equal(unpermute_rope_rows(llama_cpp_rows, num_heads=1), np.arange(6))


@pytest.mark.parametrize("num_heads", [1, 2, 3])
def test_unpermute_inverts_llama_cpp_permute(num_heads):
    weight = np.random.default_rng(num_heads).normal(size=(num_heads * 8, 5)).astype(np.float32)
    np.testing.assert_array_equal(unpermute_rope_rows(llama_cpp_permute(weight, num_heads), num_heads), weight)
    bias = weight[:, 0].copy()
    np.testing.assert_array_equal(unpermute_rope_rows(llama_cpp_permute(bias, num_heads), num_heads), bias)


@pytest.mark.parametrize(
    ("layers", "hidden", "heads", "head_dim", "expected"),
    [(26, 2304, 8, 256, 256), (42, 3584, 16, 256, 256), (46, 4608, 32, 128, 144)],  # Gemma 2 2B / 9B / 27B
)
def test_gemma2_query_scale_follows_llama_cpp(layers, hidden, heads, head_dim, expected):
    metadata = {
        "gemma2.block_count": layers,
        "gemma2.embedding_length": hidden,
        "gemma2.attention.head_count": heads,
        "gemma2.attention.key_length": head_dim,
        "gemma2.attention.sliding_window": 4096,
    }
    config = gguf_import._gemma2_config(metadata, {})
    assert config["query_pre_attn_scalar"] == expected
    assert (config["attn_logit_softcapping"], config["final_logit_softcapping"]) == (50.0, 30.0)


def test_plan_shards_respects_limit_and_keeps_order():
    sizes = [("a", 40), ("b", 50), ("c", 20), ("d", 150), ("e", 10)]
    assert plan_shards(sizes, 100) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert plan_shards(sizes, 10_000) == [["a", "b", "c", "d", "e"]]


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_f32_import_reproduces_every_tensor_exactly(arch, models, f32_dirs):
    imported = load_safetensors_dir(f32_dirs[arch])
    expected = expected_hf_tensors(models[arch], TINY_ARCHS[arch].norm_offset)
    assert sorted(imported) == sorted(expected)
    for name, value in expected.items():
        assert imported[name].dtype == np.float32, name
        np.testing.assert_array_equal(imported[name], value, err_msg=name)


@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_f32_import_gives_original_logits(arch, models, f32_dirs):
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(f32_dirs[arch], dtype=torch.float32)
    assert type(reloaded) is type(models[arch])
    np.testing.assert_allclose(logits(reloaded, INPUT_IDS), logits(models[arch], INPUT_IDS), rtol=0, atol=LOGITS_ATOL)


@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_config_matches_original(arch, models, f32_dirs):
    original = models[arch].config
    imported = transformers.AutoConfig.from_pretrained(f32_dirs[arch])
    assert imported.model_type == original.model_type
    assert imported.architectures == [type(models[arch]).__name__]
    for key in [*TINY_SHAPE, "tie_word_embeddings", *TINY_ARCHS[arch].config]:
        assert getattr(imported, key) == getattr(original, key), key
    if arch == "gemma2":
        assert imported.layer_types == original.layer_types == ["sliding_attention", "full_attention"]
    assert imported.rope_parameters["rope_theta"] == 50_000.0
    assert imported.rope_parameters["rope_type"] == "default"


def test_q8_0_import_matches_quantized_weights(models, llama_q8_dir):
    imported = load_safetensors_dir(llama_q8_dir)
    for name, original in expected_hf_tensors(models["llama"]).items():
        if original.ndim == 1:  # norms stay F32 in a quantized GGUF
            np.testing.assert_array_equal(imported[name], original, err_msg=name)
            continue
        # Rows move whole under the q/k permutation and Q8_0 blocks lie within a row, so the
        # import must equal exactly the Q8_0 round trip of the unpermuted original.
        np.testing.assert_array_equal(imported[name], q8_0_round_trip(original), err_msg=name)
        one_step = np.abs(original).max() / 127
        np.testing.assert_allclose(imported[name], original, rtol=0, atol=one_step, err_msg=name)


def test_q8_0_import_matches_transformers_own_gguf_loader(llama_q8_gguf, llama_q8_dir):
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        llama_q8_gguf.parent, gguf_file=llama_q8_gguf.name, dtype=torch.float32
    ).eval()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(llama_q8_dir, dtype=torch.float32)
    np.testing.assert_allclose(logits(reloaded, INPUT_IDS), logits(reference, INPUT_IDS), rtol=0, atol=LOGITS_ATOL)


def test_sharded_import_writes_index_and_loads(models, f32_ggufs, tmp_path):
    out = import_gguf(f32_ggufs["llama"], tmp_path / "sharded", max_shard_bytes=40_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shard_files = sorted(path.name for path in out.glob("*.safetensors"))
    assert len(shard_files) > 2 and "model.safetensors" not in shard_files
    assert set(index["weight_map"].values()) == set(shard_files)
    assert sorted(index["weight_map"]) == sorted(expected_hf_tensors(models["llama"]))
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in load_safetensors_dir(out).values())
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    np.testing.assert_allclose(logits(reloaded, INPUT_IDS), logits(models["llama"], INPUT_IDS), rtol=0, atol=LOGITS_ATOL)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_import_is_a_cast_of_the_original(dtype, models, f32_ggufs, tmp_path):
    out = import_gguf(f32_ggufs["llama"], tmp_path / dtype, dtype=dtype)
    target = gguf_import.SUPPORTED_DTYPES[dtype]
    imported = load_safetensors_dir(out)
    for name, original in expected_hf_tensors(models["llama"]).items():
        assert imported[name].dtype == target, name
        np.testing.assert_array_equal(imported[name], original.astype(target), err_msg=name)
    assert json.loads((out / "config.json").read_text())["dtype"] == dtype


# ---------------------------------------------------------------------------------------------
# Tokenizer and generation config
# ---------------------------------------------------------------------------------------------


def test_tokenizer_matches_transformers_gguf_tokenizer(f32_ggufs, f32_dirs):
    gguf_path = f32_ggufs["llama"]
    reference = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    imported = transformers.AutoTokenizer.from_pretrained(f32_dirs["llama"])
    for text in ["the theme", " the<|im_end|>the", "héllo wörld 123"]:
        assert imported(text).input_ids == reference(text).input_ids, text
    messages = [{"role": "user", "content": "hi there"}]
    rendered = imported.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"
    assert (imported.bos_token, imported.eos_token, imported.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    # " the" is a single merged token, and the control token stays whole.
    assert imported(" the<|im_end|>").input_ids == [TOKENS.index("Ġthe"), EOS_ID]
    tokenizer_config = json.loads((f32_dirs["llama"] / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == CHAT_TEMPLATE


def test_generation_config_carries_special_token_ids(f32_dirs):
    generation = transformers.GenerationConfig.from_pretrained(f32_dirs["llama"])
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (BOS_ID, EOS_ID, EOS_ID)


# ---------------------------------------------------------------------------------------------
# Output directory handling
# ---------------------------------------------------------------------------------------------


def test_refuses_to_overwrite_unless_asked(f32_ggufs, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        import_gguf(f32_ggufs["llama"], out)
    assert [path.name for path in out.iterdir()] == ["keep.txt"]

    import_gguf(f32_ggufs["llama"], out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["model"]  # nothing left beside it


def test_failure_midway_leaves_nothing_behind(f32_ggufs, tmp_path, monkeypatch):
    def crash(*_args, **_kwargs):
        raise RuntimeError("simulated crash while writing the tokenizer")

    monkeypatch.setattr(gguf_import, "write_tokenizer", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        import_gguf(f32_ggufs["llama"], tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "absent.gguf"
    with pytest.raises(FileNotFoundError, match="GGUF file not found") as error:
        import_gguf(missing, tmp_path / "out")
    assert str(missing) in str(error.value)


def test_non_gguf_file_is_rejected(tmp_path):
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(NotAGGUFFileError, match="is not a GGUF file"):
        import_gguf(not_gguf, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_gguf_is_reported_as_malformed(f32_ggufs, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(f32_ggufs["llama"].read_bytes()[:20_000])
    with pytest.raises(MalformedGGUFError, match="could not be parsed"):
        import_gguf(truncated, tmp_path / "out")


def test_unsupported_architecture_is_named(tmp_path):
    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(path, "bert")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedArchitectureError, match=r"'bert' is not supported.*gemma2, llama, qwen2\."):
        import_gguf(path, tmp_path / "out")


def test_unsupported_quantization_is_named(tmp_path):
    # Q8_K is llama.cpp's intermediate type for dot products; gguf-py has no de-quantizer for it.
    q8_k = gguf.GGMLQuantizationType.Q8_K
    block_bytes = gguf.GGML_QUANT_SIZES[q8_k][1]
    path = tmp_path / "q8k.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, block_bytes), dtype=np.uint8), raw_dtype=q8_k)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedQuantizationError, match=r"blk\.0\.attn_q\.weight \(Q8_K\)"):
        import_gguf(path, tmp_path / "out")


def test_missing_tensor_is_named(models, tmp_path):
    path = write_tiny_gguf(
        models["llama"], tmp_path / "gap.gguf", "llama", skip_tensors=frozenset({"blk.1.ffn_down.weight"})
    )
    with pytest.raises(MalformedGGUFError, match=r"blk\.1\.ffn_down\.weight"):
        import_gguf(path, tmp_path / "out")


def test_unknown_tensor_is_not_dropped_silently(models, tmp_path):
    extra = {"rope_freqs.weight": np.ones(8, dtype=np.float32)}
    path = write_tiny_gguf(models["llama"], tmp_path / "extra.gguf", "llama", extra_tensors=extra)
    with pytest.raises(UnsupportedArchitectureError, match="rope_freqs"):
        import_gguf(path, tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Runtime without torch, and the command line
# ---------------------------------------------------------------------------------------------


def test_cli_converts_without_torch(f32_ggufs, tmp_path):
    out = tmp_path / "cli"
    # sys.modules["torch"] = None makes `import torch` fail and find_spec report it absent, as in
    # an environment without torch.
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from soo_jax.models.gguf_import import main\n"
        f"code = main([{str(f32_ggufs['qwen2'])!r}, {str(out)!r}])\n"
        "assert sys.modules['torch'] is None\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        path.name for path in out.iterdir()
    }


def test_cli_reports_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "soo_jax.models.gguf_import", str(tmp_path / "absent.gguf"), str(tmp_path / "out")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "error: GGUF file not found" in result.stderr and "Traceback" not in result.stderr


def test_cached_conversion_repairs_itself_and_drops_stale_staging(f32_ggufs, tmp_path, capsys):
    import os
    import time

    from soo_jax.models.embedded import STALE_PARTIAL_S, cached_gguf_import

    model_dir = cached_gguf_import(f32_ggufs["llama"], tmp_path, name="tiny")
    config = (model_dir / "config.json").read_text()
    (model_dir / "tokenizer.json").unlink()  # a damaged cache: once "pass overwrite=True", impossible from a CLI
    (model_dir / "config.json").unlink()
    stale = tmp_path / f".{model_dir.name}.partial-0123456789ab"  # left by a killed conversion
    stale.mkdir()
    os.utime(stale, (time.time() - STALE_PARTIAL_S - 1,) * 2)
    fresh = tmp_path / f".{model_dir.name}.partial-ba9876543210"  # another process converting now
    fresh.mkdir()
    capsys.readouterr()
    assert cached_gguf_import(f32_ggufs["llama"], tmp_path, name="tiny") == model_dir
    assert "lacks config.json, tokenizer.json; converting it again" in capsys.readouterr().err
    assert (model_dir / "tokenizer.json").is_file() and (model_dir / "config.json").read_text() == config
    assert not stale.exists() and fresh.exists()
    capsys.readouterr()
    cached_gguf_import(f32_ggufs["llama"], tmp_path, name="tiny")  # complete: reused silently
    assert capsys.readouterr().err == ""
