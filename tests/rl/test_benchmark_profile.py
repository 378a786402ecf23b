"""benchmarks/rl.py --profile: the parts of a training chunk and the update round's FLOPs."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from configs import rl_deception
from soo_jax.rl import config as config_lib

from benchmarks import rl as bench

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_dense_flops_of_an_update_round_from_the_layer_sizes():
    # Per sample, both agents: 6 policy forwards' worth of each policy (2 target, 1 other-agent,
    # 3 actor fwd+bwd) and 12 critic forwards' worth (2 target, 6 critic fwd+bwd, 4 actor path).
    # 64 wide: policy(6) 9,216, policy(10) 9,728, critic(20) 10,880 FLOPs per sample.
    hyper = config_lib.maddpg_hyper(rl_deception.get_config())
    per_sample = 6 * (9_216 + 9_728) + 12 * 10_880
    assert bench.update_round_dense_flops(hyper, 8) == per_sample * 1024 * 8  # ~2.0 GFLOP, 8 seeds


def test_profile_of_a_tiny_chunk(tmp_path):
    out = tmp_path / "profile.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.rl", "--profile", "configs/rl_tiny.py",
                           "--profile-episodes", "4", "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[max(i for i, line in enumerate(lines) if line.startswith("| ")) + 1].startswith(
        "1-min load average: ")
    p = json.loads(out.read_text())["profile"]
    assert p["update_rounds"] == 4 * 25 // 2 and p["seeds"] == 4
    assert p["rest_s"] == pytest.approx(p["chunk_s"] - p["rollout_s"] - p["update_rounds_s"])
    assert 0 < p["sampling_s"] and 0 < p["rollout_s"] < p["chunk_s"]
    assert p["update_round_xla_gflop"] > 0.5 * p["update_round_dense_gflop"] > 0
    assert p["matmul_gflops_2048"] > 0 and p["matmul_gflops_update_shape"] > 0
