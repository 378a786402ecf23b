"""The experiment driver: config validation, checkpoints, resume after a crash, CLI errors."""

import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import rl_tiny
from soo_jax.rl import config as config_lib
from soo_jax.rl import stages, training

REPO = pathlib.Path(__file__).resolve().parents[2]
# launch/rl.py run with this checkout's soo_jax (the configs import it), not another installed one.
LAUNCH_ENV = {**os.environ,
              "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def tiny(tmp_path, **overrides):
    config = rl_tiny.get_config()
    config.workdir = str(tmp_path)
    config.checkpoint_every_chunks = 1
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        (config[section] if section else config)[name] = value
    return config


@pytest.mark.parametrize("key,value,message", [
    ("stage", "pretrain", "config.stage"),
    ("env.bookkeeping_origin", "zero", "config.env.bookkeeping_origin"),
    ("finetune.mode", "batch", "config.finetune.mode"),
    ("chunk_episodes", 3, "config.chunk_episodes"),
    ("maddpg.batch_size", 1_000_000, "config.maddpg.batch_size"),
])
def test_bad_config_values_name_the_key(tmp_path, key, value, message):
    with pytest.raises(config_lib.ConfigError, match=message.replace(".", r"\.")):
        config_lib.validate(tiny(tmp_path, **{key: value}))


def test_reward_mode_names_are_checked():
    with pytest.raises(ValueError, match="reward_mode"):
        config_lib.env_params(rl_tiny.get_config(), "sneaky")


def test_finetune_without_baseline_names_the_missing_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="deceptive"):
        training.run_training_stage(tiny(tmp_path), "soo", log=lambda *a, **k: None)


def test_interrupted_stage_resumes_to_the_same_result(tmp_path):
    logs = []
    config = tiny(tmp_path)
    training.run_training_stage(config, "deceptive", log=logs.append)
    stage = tmp_path / "deceptive"
    assert (stage / "done.json").exists()
    finished = stages.load_agents(config, "deceptive")
    # A crash after the mid-stage checkpoint: the final result and marker never got written.
    shutil.rmtree(stage / "final")
    (stage / "done.json").unlink()
    logs.clear()
    training.run_training_stage(config, "deceptive", log=logs.append)
    assert any("resuming at episode 4/8" in line for line in logs), logs
    resumed = stages.load_agents(config, "deceptive")
    jax.tree.map(np.testing.assert_array_equal, resumed, finished)
    # A finished stage is skipped.
    logs.clear()
    training.run_training_stage(config, "deceptive", log=logs.append)
    assert any("skipping" in line for line in logs)


def test_cli_rejects_unknown_config_key():
    result = subprocess.run(
        [sys.executable, "launch/rl.py", "--config", "configs/rl_tiny.py", "--config.nokey=1"],
        cwd=REPO, env=LAUNCH_ENV, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: unknown config key 'nokey'" in result.stderr


def test_a_final_checkpoint_without_its_marker_is_completed_not_retrained(tmp_path):
    """A kill after the final checkpoint and before done.json (the old order wedged the stage:
    'Checkpoint for step 0 already exists' on every rerun)."""
    logs = []
    config = tiny(tmp_path)
    training.run_training_stage(config, "deceptive", log=logs.append)
    stage = tmp_path / "deceptive"
    finished = stages.load_agents(config, "deceptive")
    (stage / "done.json").rename(stage / "done.pending.json")  # the state a kill leaves now
    logs.clear()
    training.run_training_stage(config, "deceptive", log=logs.append)
    assert any("skipping" in line for line in logs) and (stage / "done.json").exists()
    # The old order's leftover (final, no marker, no pending copy) trains to the end and saves.
    (stage / "done.json").unlink()
    logs.clear()
    training.run_training_stage(config, "deceptive", log=logs.append)
    assert any("resuming at episode 4/8" in line for line in logs) and (stage / "done.json").exists()
    jax.tree.map(np.testing.assert_array_equal, stages.load_agents(config, "deceptive"), finished)


def test_a_changed_setting_is_refused_per_stage_naming_the_key(tmp_path):
    from soo_jax.run_dir import RunDirError

    config = tiny(tmp_path)
    training.run_training_stage(config, "deceptive", log=lambda *a: None)
    with pytest.raises(RunDirError, match=r"maddpg\.lr: 0\.003 -> 0\.001"):
        training.run_training_stage(tiny(tmp_path, **{"maddpg.lr": 1e-3}), "deceptive", log=lambda *a: None)
    # A fine-tuning setting does not touch the baselines' result: the finished stage is reused.
    logs = []
    training.run_training_stage(tiny(tmp_path, **{"finetune.soo_weight": 2.0}), "deceptive", log=logs.append)
    assert any("skipping" in line for line in logs)
    # A stage directory without a manifest was not made by this version.
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "deceptive", other / "deceptive")
    (other / "deceptive" / "manifest.json").unlink()
    with pytest.raises(RunDirError, match="no manifest.json: it was not made by this version"):
        training.run_training_stage(tiny(other), "deceptive", log=lambda *a: None)


def test_sigterm_saves_the_current_chunk_and_exits_nonzero(tmp_path):
    import signal
    import time

    workdir = tmp_path / "rl"
    args = [sys.executable, "launch/rl.py", "--config", "configs/rl_tiny.py", "--config.stage=deceptive",
            f"--config.workdir={workdir}", "--config.baseline.n_episodes=40", "--config.checkpoint_every_chunks=1000"]
    proc = subprocess.Popen(args, cwd=REPO, env=LAUNCH_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while not (workdir / "deceptive" / "manifest.json").exists() or not any(
            "ep 8/40" in line for line in [proc.stdout.readline()]):
        assert time.time() < deadline and proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "interrupted at episode" in err and "rerun the same command to resume" in err
    saved = int(err.split("interrupted at episode ")[1].split("/")[0])
    assert 8 <= saved < 40 and saved in [int(p.name) for p in (workdir / "deceptive" / "progress").iterdir()
                                          if p.name.isdigit()]
