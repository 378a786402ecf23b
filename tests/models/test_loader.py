"""Checkpoint loading: sharded safetensors, bf16, and clear errors for bad checkpoints."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from soo_jax.models.loader import from_pretrained, load_config
from soo_jax.models.safetensors_io import SafetensorsFile
from tests.models.hf_reference import left_padded_batch, make_tiny_checkpoint, torch_forward


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2")
    model = make_tiny_checkpoint("qwen2", path)
    return path, model


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sharded")
    model = make_tiny_checkpoint("llama_rope_linear", path)
    model.save_pretrained(path, max_shard_size="40KB")
    assert (path / "model.safetensors.index.json").is_file()
    return path, model


def test_sharded_checkpoint_loads_and_matches(sharded_dir):
    path, torch_model = sharded_dir
    shards = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values()
    assert len(set(shards)) > 2
    model = from_pretrained(path)
    tokens, mask = left_padded_batch(model.config.vocab_size, [8, 5])
    ref, _ = torch_forward(torch_model, tokens, mask)
    ours, _ = model(tokens, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(ours)[real], ref[real], rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_bfloat16_matches_torch_bfloat16(qwen_dir, tmp_path):
    """bf16 params + compute against transformers in bf16: agreement to bf16 precision (2e-2 of scale)."""
    path, torch_model = qwen_dir
    model = from_pretrained(path, dtype="bfloat16")
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
    tokens, mask = left_padded_batch(model.config.vocab_size, [8, 5])
    try:
        ref, _ = torch_forward(torch_model.to(torch.bfloat16), tokens, mask)
    finally:
        torch_model.float()
    ref = ref.astype(np.float32)
    ours, _ = model(tokens, mask)
    assert ours.dtype == jnp.bfloat16
    real = mask.astype(bool)
    ours = np.asarray(ours.astype(jnp.float32))[real]
    scale = np.abs(ref[real]).max()
    assert np.abs(ours - ref[real]).max() <= 2e-2 * scale


def test_missing_shard_is_named(sharded_dir, tmp_path):
    path, _ = sharded_dir
    broken = tmp_path / "broken"
    broken.mkdir()
    index = json.loads((path / "model.safetensors.index.json").read_text())
    missing = sorted(set(index["weight_map"].values()))[1]
    for f in path.iterdir():
        if f.name != missing:
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(FileNotFoundError, match=missing):
        from_pretrained(broken)


def test_wrong_shape_is_named(qwen_dir, tmp_path):
    path, _ = qwen_dir
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 80  # the checkpoint's MLP is 96 wide
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"mlp\.(gate|up|down)_proj\.weight.*shape"):
        from_pretrained(tmp_path)


def test_unknown_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="unsupported architecture.*gpt2"):
        load_config(tmp_path)


def test_missing_tensor_and_missing_files_are_named(qwen_dir, tmp_path):
    from safetensors.numpy import save_file

    path, _ = qwen_dir
    full = SafetensorsFile(path / "model.safetensors")
    kept = {k: np.asarray(full.get(k)) for k in full.keys() if k != "model.layers.1.self_attn.k_proj.bias"}
    save_file(kept, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(KeyError, match=r"model\.layers\.1\.self_attn\.k_proj\.bias"):
        from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model path not found.*nope"):
        from_pretrained(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(empty)


def test_unexpected_tensor_is_rejected(qwen_dir, tmp_path):
    from safetensors.numpy import save_file

    path, _ = qwen_dir
    full = SafetensorsFile(path / "model.safetensors")
    tensors = {k: np.asarray(full.get(k)) for k in full.keys()}
    tensors["model.layers.7.self_attn.q_proj.weight"] = np.zeros((4, 4), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ValueError, match=r"model\.layers\.7\.self_attn\.q_proj\.weight"):
        from_pretrained(tmp_path)
