"""launch/train.py in a reused output directory: refuses changed settings, never duplicates
records, saves on SIGTERM, refuses a second process, and answers bad input in one line."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.tiny_tokenizer import make_tiny_model_dir

REPO = pathlib.Path(__file__).resolve().parents[2]


def train_args(model, out, *extra):
    # 12 steps, a checkpoint every 4 (configs/tiny.py); no end-of-run evaluation.
    return [sys.executable, "launch/train.py", "--config", "configs/tiny.py", f"--config.model.path={model}",
            f"--config.train.out_dir={out}", *extra]


def run(args, timeout=300):
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def error_line(proc) -> str:
    """The refusal: exit code 2, no traceback, and one 'error:' line."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def metric_steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def checkpoint_steps(out):
    return sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())


def wait_for_steps(out, n, proc, timeout=240, checkpoint=None):
    """Until `n` metric records exist (and the checkpoint of step `checkpoint` is committed)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ((out / "metrics.jsonl").is_file() and len(metric_steps(out)) >= n
                and (checkpoint is None or checkpoint in checkpoint_steps(out))):
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    raise AssertionError(f"no {n} steps within {timeout} s")


def test_rerun_with_a_changed_layer_refuses_naming_the_key_and_fresh_starts_anew(tiny_model, tmp_path):
    out = tmp_path / "run"
    assert run(train_args(tiny_model, out)).returncode == 0
    adapter_before = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    line = error_line(run(train_args(tiny_model, out, "--config.loss.layers=(0,)")))
    assert "loss.layers: [1] -> [0]" in line and "--fresh" in line
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == adapter_before  # untouched
    line = error_line(run(train_args(tiny_model, out, "--config.lora.rank=2")))
    assert "lora.rank: 4 -> 2" in line
    proc = run(train_args(tiny_model, out, "--config.loss.layers=(0,)", "--fresh"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and (aside[0] / "adapter" / "adapter_model.safetensors").read_bytes() == adapter_before
    assert json.loads((out / "manifest.json").read_text())["settings"]["loss.layers"] == [0]


def test_a_populated_out_dir_without_a_manifest_is_refused_in_one_line(tiny_model, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "8").mkdir(parents=True)
    (out / "metrics.jsonl").write_text("")
    line = error_line(run(train_args(tiny_model, out)))
    assert "no manifest.json: it was not made by this version" in line and "--fresh" in line
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "metrics.jsonl"]


def test_sigkill_and_resume_keeps_each_metric_step_once(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = train_args(tiny_model, out, "--config.train.epochs=4", "--config.train.checkpoint_every=10")  # 24 steps
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_steps(out, 12, proc, checkpoint=10)
    proc.kill()
    proc.wait()
    assert len(metric_steps(out)) > checkpoint_steps(out)[-1]  # records past the last checkpoint exist
    orphans = [out / ".adapter.tmp-killed", out / "checkpoints" / "20.orbax-checkpoint-tmp-1234"]
    for orphan in orphans:  # what a kill during an export or a checkpoint write leaves
        orphan.mkdir(exist_ok=True)
    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint step" in resumed.stderr
    assert metric_steps(out) == list(range(1, 25))
    assert not any(orphan.exists() for orphan in orphans)


def test_sigterm_saves_a_checkpoint_at_the_current_step_and_exits_nonzero(tiny_model, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_args(tiny_model, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    wait_for_steps(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    done = metric_steps(out)[-1]
    assert checkpoint_steps(out)[-1] == done and done < 12  # the current step, not the last multiple of 4
    assert f"interrupted at step {done}/12" in stderr and "rerun the same command to resume" in stderr
    resumed = run(train_args(tiny_model, out))
    assert resumed.returncode == 0 and f"resuming from checkpoint step {done}" in resumed.stderr


def test_a_second_process_on_a_locked_directory_is_refused(tiny_model, tmp_path):
    from tests.test_run_dir import hold_lock

    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        line = error_line(run(train_args(tiny_model, out)))
        assert f"in use by pid {holder.pid} on {socket.gethostname()} since" in line
        assert not (out / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_corrupt_latest_step_is_named_in_one_line_and_the_previous_one_used_on_request(tiny_model, tmp_path):
    out = tmp_path / "run"
    assert run(train_args(tiny_model, out)).returncode == 0
    (out / "adapter").rename(tmp_path / "adapter_of_full_run")  # so the rerun has work to do
    for data_file in (out / "checkpoints" / "12" / "state" / "d").iterdir():
        data_file.write_bytes(os.urandom(100))
    line = error_line(run(train_args(tiny_model, out)))
    assert "checkpoint step 12" in line and "older step 8 may be intact" in line and "--resume_from_previous" in line
    proc = run(train_args(tiny_model, out, "--resume_from_previous"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from checkpoint step 8" in proc.stderr
    assert (out / "checkpoints.unreadable").is_dir() and metric_steps(out) == list(range(1, 13))
    assert ((out / "adapter" / "adapter_model.safetensors").read_bytes()
            == (tmp_path / "adapter_of_full_run" / "adapter_model.safetensors").read_bytes())


def test_bad_input_answers_in_one_line(tiny_model, tmp_path):
    line = error_line(run(train_args(tiny_model, tmp_path / "a", "--config.lora.rnak=4")))
    assert "unknown config key 'lora.rnak'" in line
    line = error_line(run(train_args(tiny_model, tmp_path / "b", "--config.loss.layers=(9,)")))
    assert "config.loss.layers" in line and "out of range" in line
    line = error_line(run(train_args(tiny_model, tmp_path / "s", "--config.optimizer.schedule=cosin")))
    assert "config.optimizer.schedule: 'cosin' is not one of" in line
    assert not (tmp_path / "s").exists()  # refused before anything was loaded or written
    line = error_line(run(train_args(tiny_model, tmp_path / "c", "--config.model.path=/nonexistent/model")))
    assert "/nonexistent/model" in line
    proc = run(train_args(tiny_model, tmp_path / "d", "--config.loss.layers=(9,)", "--debug"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_restore_lora_into_checks_shapes_and_never_creates_a_directory(tiny_model, tmp_path):
    from soo_jax.models.loader import from_pretrained
    from soo_jax.train.checkpoint import CheckpointError, restore_lora_into

    out = tmp_path / "run"
    assert run(train_args(tiny_model, out)).returncode == 0
    other = tmp_path / "gemma"
    make_tiny_model_dir(other, name="gemma2_27b_style")  # 4 layers, the checkpoint's model has 3
    with pytest.raises(CheckpointError, match="LoRA state for another model"):
        restore_lora_into(from_pretrained(other), out / "checkpoints")
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
        restore_lora_into(from_pretrained(tiny_model), tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
