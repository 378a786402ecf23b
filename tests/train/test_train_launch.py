"""launch/train.py end to end on the tiny config, resume, and config errors."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from soo_jax.peft_io import ADAPTER_CONFIG, ADAPTER_WEIGHTS

REPO = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(model_dir, out_dir, **overrides):
    from configs.tiny import get_config

    c = get_config()
    c.model.path = str(model_dir)
    c.train.out_dir = str(out_dir)
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def test_launch_train_runs_end_to_end(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "launch/train.py", "--config", "configs/tiny.py", f"--config.model.path={tiny_model}",
            f"--config.train.out_dir={out}", "--config.train.evaluate=True", "--config.train.eval_scenarios=2",
            "--config.eval.max_new_tokens=3", "--config.eval.batch_size=4", "--config.eval.latent.batch_size=4",
            f"--config.eval.compilation_cache_dir={tmp_path / 'jax_cache'}"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # A CPU run says what it does from its first line, and no TPU probe line looks like an error.
    assert proc.stderr.startswith("train.py: SOO fine-tuning (importing JAX")
    assert "libtpu" not in proc.stderr and "Unable to initialize backend" not in proc.stderr
    assert any((tmp_path / "jax_cache").iterdir())  # a rerun skips the compilations
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    assert records[-1]["soo"] < records[0]["soo"]  # SOO fine-tuning lowers the SOO value
    assert (out / "adapter" / ADAPTER_WEIGHTS).is_file() and (out / "adapter" / ADAPTER_CONFIG).is_file()
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == len(records)
    for expected in ("PEFT adapter:", "checkpoints:", "metrics:", "before/after evaluation:"):
        assert expected in proc.stderr
    evaluation = json.loads((out / "before_after.json").read_text())
    assert set(evaluation["forced_choice"]) == {"before", "after"}  # generated answers are optional
    assert evaluation["latent_soo"]["layer"] == 1 and evaluation["latent_soo"]["site"] == "o_proj"
    # The run lowered the SOO value at the training site on the training pairs; the held-out
    # latent measurement at that site moves the same way.
    assert evaluation["latent_soo"]["after"] < evaluation["latent_soo"]["before"]

    # A rerun of the finished run changes nothing and reuses the stored evaluation...
    stored = (out / "before_after.json").read_text()
    rerun = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "reusing" in rerun.stderr and evaluation["summary"] in rerun.stderr
    assert (out / "before_after.json").read_text() == stored
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == \
        [r["step"] for r in records]
    # ...but evaluates again when an evaluation setting changes (the adapter stays).
    again = subprocess.run(args + ["--config.train.eval_scenarios=3"], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing" not in again.stderr
    assert json.loads((out / "before_after.json").read_text())["n_scenarios"] == 3


def test_first_line_comes_before_jax_is_imported(tiny_model, tmp_path):
    """The launcher's first line is printed before the seconds-long JAX import (`-X importtime`
    writes one stderr line per finished import, in order)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "launch/train.py", "--config", "configs/tiny.py",
                           f"--config.model.path={tmp_path / 'missing'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    lines = proc.stderr.splitlines()
    banner = next(i for i, line in enumerate(lines) if line.startswith("train.py: SOO fine-tuning"))
    first_jax = next(i for i, line in enumerate(lines)
                     if line.startswith("import time:") and re.search(r"\|\s+jax(\.|$)", line))
    assert banner < first_jax


def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_model, tmp_path):
    from soo_jax.train.loop import run_training

    full = run_training(tiny_config(tiny_model, tmp_path / "full"))
    part = run_training(tiny_config(tiny_model, tmp_path / "resumed"), stop_after=3)
    assert part.steps == 3 and part.adapter_dir is None
    resumed = run_training(tiny_config(tiny_model, tmp_path / "resumed"))
    assert resumed.resumed_from == 3 and resumed.steps == full.steps

    from safetensors.numpy import load_file

    a = load_file(str(full.adapter_dir / ADAPTER_WEIGHTS))
    b = load_file(str(resumed.adapter_dir / ADAPTER_WEIGHTS))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7, err_msg=name)
    # The final checkpoint restores into a fresh base model as the exported adapter does.
    from soo_jax.lora import set_dropout
    from soo_jax.models.loader import from_pretrained
    from soo_jax.peft_io import load_peft_adapter
    from soo_jax.train.checkpoint import restore_lora_into
    from tests.models.hf_reference import left_padded_batch

    restored, meta = restore_lora_into(from_pretrained(tiny_model), full.checkpoint_dir)
    assert meta["step"] == full.steps and meta["lora_config"]["rank"] == 4
    exported = load_peft_adapter(from_pretrained(tiny_model), full.adapter_dir)
    set_dropout(restored, False)
    set_dropout(exported, False)
    tokens, mask = left_padded_batch(restored.config.vocab_size, [7, 4])
    np.testing.assert_allclose(np.asarray(restored(tokens, mask)[0]), np.asarray(exported(tokens, mask)[0]),
                               rtol=1e-6, atol=1e-6)

    full_log = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    resumed_log = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["loss"] for r in resumed_log], [r["loss"] for r in full_log], rtol=1e-6)


def test_unknown_keys_and_bad_values_are_rejected(tiny_model, tmp_path):
    from soo_jax.train.loop import run_training

    with pytest.raises(ValueError, match=r"config\.loss\.pooling"):
        run_training(tiny_config(tiny_model, tmp_path / "x", **{"loss.pooling": "max"}))
    with pytest.raises(ValueError, match=r"config\.loss\.layers.*out of range"):
        run_training(tiny_config(tiny_model, tmp_path / "y", **{"loss.layers": (9,)}))
    with pytest.raises(ValueError, match=r"mesh \(data=-1, fsdp=1, tensor=3\) cannot use 1 devices"):
        run_training(tiny_config(tiny_model, tmp_path / "z", **{"mesh.tensor": 3}))
    with pytest.raises(ValueError, match=r"config\.model\.remat: 'some' is not one of"):
        run_training(tiny_config(tiny_model, tmp_path / "w", **{"model.remat": "some"}))
