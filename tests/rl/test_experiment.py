"""The experiment driver: config validation, checkpoints, resume after a crash, CLI errors."""

import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import rl_tiny
from soo_jax.rl import config as config_lib
from soo_jax.rl import experiment

REPO = pathlib.Path(__file__).resolve().parents[2]


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
        experiment.run_training_stage(tiny(tmp_path), "soo", log=lambda *a, **k: None)


def test_interrupted_stage_resumes_to_the_same_result(tmp_path):
    logs = []
    config = tiny(tmp_path)
    experiment.run_training_stage(config, "deceptive", log=logs.append)
    stage = tmp_path / "deceptive"
    assert (stage / "done.json").exists()
    finished = experiment.load_agents(config, "deceptive")
    # A crash after the mid-stage checkpoint: the final result and marker never got written.
    shutil.rmtree(stage / "final")
    (stage / "done.json").unlink()
    logs.clear()
    experiment.run_training_stage(config, "deceptive", log=logs.append)
    assert any("resuming at episode 4/8" in line for line in logs), logs
    resumed = experiment.load_agents(config, "deceptive")
    jax.tree.map(np.testing.assert_array_equal, resumed, finished)
    # A finished stage is skipped.
    logs.clear()
    experiment.run_training_stage(config, "deceptive", log=logs.append)
    assert any("skipping" in line for line in logs)


def test_cli_rejects_unknown_config_key():
    result = subprocess.run(
        [sys.executable, "launch/rl.py", "--config", "configs/rl_tiny.py", "--config.nokey=1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "nokey" in result.stderr and "bad --config override" in result.stderr
