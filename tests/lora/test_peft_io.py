"""PEFT adapter export/import: our adapter loaded with peft on transformers gives our logits."""

import json
import pathlib

import numpy as np
import pytest
import torch
from flax import nnx

from soo_jax.lora import LoRAConfig, apply_lora, set_dropout
from soo_jax.models.loader import from_pretrained
from soo_jax.peft_io import ADAPTER_CONFIG, export_peft_adapter, load_peft_adapter, read_peft_config
from tests.lora.lora_fixtures import randomise_lora_b
from tests.lora.peft_reference import peft_from_pretrained
from tests.models.hf_reference import left_padded_batch, make_tiny_checkpoint, torch_forward

LORA = LoRAConfig(rank=4, alpha=16, dropout=0.2, targets=("q_proj", "v_proj", "o_proj"), layers=(0, 2))



def peft_logits(peft_model, tokens, mask) -> np.ndarray:
    """The PEFT model's logits on a left-padded batch, positions counted from each row's first token."""
    with torch.no_grad():
        positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
        return peft_model(input_ids=torch.tensor(tokens, dtype=torch.long),
                          attention_mask=torch.tensor(mask, dtype=torch.long),
                          position_ids=torch.tensor(positions, dtype=torch.long)).logits.numpy()

def trained_looking(model):
    return randomise_lora_b(model, seed=3, scale=0.2)


@pytest.mark.parametrize("name", ["qwen2", "gemma2_27b_style"])
def test_exported_adapter_loads_in_peft_and_matches_our_logits(name, tmp_path):
    torch_model = make_tiny_checkpoint(name, tmp_path / "base")
    model = trained_looking(apply_lora(from_pretrained(tmp_path / "base"), LORA, rngs=nnx.Rngs(0)))
    set_dropout(model, False)
    export_peft_adapter(model, LORA, tmp_path / "adapter", base_model=str(tmp_path / "base"))

    peft_model = peft_from_pretrained(torch_model, tmp_path / "adapter")
    tokens, mask = left_padded_batch(model.config.vocab_size, [9, 6])
    ref = peft_logits(peft_model, tokens, mask)
    base_ref, _ = torch_forward(make_tiny_checkpoint(name, tmp_path / "again"), tokens, mask)
    ours, _ = model(tokens, mask)
    real = mask.astype(bool)
    assert np.abs(ref[real] - base_ref[real]).max() > 1e-3  # the adapter changes the torch model
    # fp32 tolerance 1e-5 of the logit scale.
    np.testing.assert_allclose(np.asarray(ours)[real], ref[real], rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_import_restores_the_same_adapter(tmp_path):
    make_tiny_checkpoint("llama_tied", tmp_path / "base")
    model = trained_looking(apply_lora(from_pretrained(tmp_path / "base"), LORA, rngs=nnx.Rngs(0)))
    set_dropout(model, False)
    export_peft_adapter(model, LORA, tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert saved["r"] == 4 and saved["lora_alpha"] == 16 and saved["layers_to_transform"] == [0, 2]

    restored = load_peft_adapter(from_pretrained(tmp_path / "base"), tmp_path / "adapter", rngs=nnx.Rngs(9))
    set_dropout(restored, False)
    tokens, mask = left_padded_batch(model.config.vocab_size, [7, 4])
    np.testing.assert_array_equal(np.asarray(restored(tokens, mask)[0]), np.asarray(model(tokens, mask)[0]))


def test_bad_adapters_are_rejected(tmp_path):
    make_tiny_checkpoint("llama_tied", tmp_path / "base")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_peft_adapter(from_pretrained(tmp_path / "base"), tmp_path)
    (tmp_path / "dora").mkdir()
    (tmp_path / "dora" / ADAPTER_CONFIG).write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        load_peft_adapter(from_pretrained(tmp_path / "base"), tmp_path / "dora")


def test_an_invalid_adapter_config_names_its_file(tmp_path):
    from soo_jax.run_dir import RunDirError
    from soo_jax.peft_io import ADAPTER_CONFIG, read_peft_config

    (tmp_path / ADAPTER_CONFIG).write_text('{"peft_type": "LORA",')  # cut short
    with pytest.raises(RunDirError, match=rf"{ADAPTER_CONFIG} is not valid JSON"):
        read_peft_config(tmp_path)


# Exported by the per-layer model before the decoder layers were stacked (commit f78fc51, issue 16)
# for make_tiny_checkpoint("llama_tied"): LoRA r=4 on q/v/o/down_proj of layers 0 and 2, random B.
PRE_SCAN_ADAPTER = pathlib.Path(__file__).parent / "data" / "pre_scan_adapter"


def test_an_adapter_exported_before_the_layers_were_stacked_still_loads(tmp_path):
    from safetensors.numpy import load_file

    torch_model = make_tiny_checkpoint("llama_tied", tmp_path / "base")
    model = load_peft_adapter(from_pretrained(tmp_path / "base"), PRE_SCAN_ADAPTER)
    set_dropout(model, False)
    assert model.layers.self_attn.q_proj.lora.adapted_layers == (0, 2)

    peft_model = peft_from_pretrained(torch_model, PRE_SCAN_ADAPTER)
    tokens, mask = left_padded_batch(model.config.vocab_size, [9, 6])
    ref = peft_logits(peft_model, tokens, mask)
    base_ref, _ = torch_forward(make_tiny_checkpoint("llama_tied", tmp_path / "again"), tokens, mask)
    ours, _ = model(tokens, mask)
    real = mask.astype(bool)
    assert np.abs(ref[real] - base_ref[real]).max() > 1e-3  # the adapter does something
    np.testing.assert_allclose(np.asarray(ours)[real], ref[real], rtol=1e-5, atol=1e-5 * np.abs(ref).max())

    # Exported again from the stacked layers: the same tensor names and values.
    export_peft_adapter(model, read_peft_config(PRE_SCAN_ADAPTER), tmp_path / "exported")
    before = load_file(PRE_SCAN_ADAPTER / "adapter_model.safetensors")
    after = load_file(tmp_path / "exported" / "adapter_model.safetensors")
    assert sorted(after) == sorted(before) and len(before) == 4 * 2 * 2  # 4 modules x 2 layers x (A, B)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
