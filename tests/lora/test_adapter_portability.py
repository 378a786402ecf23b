"""An exported adapter names its base model by Hub id, so PEFT loads it on another machine; the
local path stays in our own metadata, and the directory has the usual permissions."""

import json
import os
import shutil
import stat

import numpy as np
import torch
from flax import nnx

from soo_jax.lora import LoRAConfig, apply_lora, set_dropout
from soo_jax.models.embedded import HUB_ID, embedded_hub_id
from soo_jax.models.loader import from_pretrained
from soo_jax.peft_io import ADAPTER_CONFIG, SOO_JAX_METADATA, base_model_hub_id, export_peft_adapter, load_peft_adapter
from tests.lora.lora_fixtures import randomise_lora_b
from tests.lora.peft_reference import peft_from_pretrained
from tests.models.hf_reference import left_padded_batch, make_tiny_checkpoint

LORA = LoRAConfig(rank=4, alpha=8, dropout=0.0, targets=("q_proj", "v_proj"))
HUB_NAME = "soo-jax-tests/tiny-llama"


def downloaded_checkpoint(directory):
    """A tiny checkpoint whose config.json names its Hub repository, as a downloaded one does."""
    make_tiny_checkpoint("llama_tied", directory)
    config_file = directory / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "_name_or_path": HUB_NAME}))


def test_adapter_names_the_hub_id_and_loads_in_peft_elsewhere(tmp_path):
    trained_on = tmp_path / "machine_a" / "base"
    downloaded_checkpoint(trained_on)
    model = randomise_lora_b(apply_lora(from_pretrained(trained_on), LORA, rngs=nnx.Rngs(0)), seed=2,
                             scale=0.2)
    set_dropout(model, False)
    adapter = export_peft_adapter(model, LORA, tmp_path / "machine_a" / "run" / "adapter",
                                  base_model=str(trained_on))
    saved = json.loads((adapter / ADAPTER_CONFIG).read_text())
    assert saved["base_model_name_or_path"] == HUB_NAME
    assert json.loads((adapter / SOO_JAX_METADATA).read_text()) == {"base_model_path": str(trained_on)}
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(adapter.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700

    # Another machine: the base model in a directory of its own, the training path gone.
    elsewhere = tmp_path / "machine_b" / "models" / "tiny-llama"
    shutil.copytree(trained_on, elsewhere)
    shutil.rmtree(tmp_path / "machine_a" / "base")
    copied = shutil.copytree(adapter, tmp_path / "machine_b" / "adapter")
    import transformers

    torch_model = transformers.AutoModelForCausalLM.from_pretrained(elsewhere, attn_implementation="eager")
    peft_model = peft_from_pretrained(torch_model.float(), copied)
    tokens, mask = left_padded_batch(model.config.vocab_size, [8, 5])
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        ref = peft_model(input_ids=torch.tensor(tokens, dtype=torch.long),
                         attention_mask=torch.tensor(mask, dtype=torch.long),
                         position_ids=torch.tensor(positions, dtype=torch.long)).logits.numpy()
    ours = np.asarray(model(tokens, mask)[0])
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], rtol=1e-5, atol=1e-5 * np.abs(ref).max())

    # Our own loader reads the same directory.
    restored = load_peft_adapter(from_pretrained(elsewhere), copied)
    set_dropout(restored, False)
    np.testing.assert_array_equal(np.asarray(restored(tokens, mask)[0]), ours)


def test_hub_id_of_the_embedded_model_and_of_plain_directories(tmp_path):
    # cached_gguf_import's directory name for the embedded model, under any cache root.
    converted = tmp_path / "cache" / "SmolLM2-135M-Instruct-19b3785f6502"
    assert embedded_hub_id(converted) == HUB_ID == base_model_hub_id(converted)
    assert embedded_hub_id(tmp_path / "SmolLM2-135M-Instruct-notahash") is None
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"_name_or_path": "/home/me/checkpoints/x"}))
    assert base_model_hub_id(local) == str(local)  # a path is no Hub id: the only name we have
    (local / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen2-0.5B"}))
    assert base_model_hub_id(local) == "Qwen/Qwen2-0.5B"
    assert base_model_hub_id(None) is None
