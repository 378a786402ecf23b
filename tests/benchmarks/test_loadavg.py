"""Every benchmark prints the machine's 1-minute load average beside its table."""
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks.loadavg import load_average, load_line

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_load_line():
    assert load_line(0.31, 2.046, cpus=2) == (
        "1-min load average: 0.31 at the start, 2.05 at the end (this run included); 2 CPUs")
    assert load_line(None, None, cpus=2).startswith("1-min load average: n/a at the start, n/a")
    assert load_average() is None or load_average() >= 0


def test_rl_benchmark_prints_the_load_after_its_table():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "rl.py"), "--envs", "1",
                           "--steps", "20", "--numpy-steps", "50"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    table_end = max(i for i, line in enumerate(lines) if line.startswith("| "))
    assert lines[table_end + 1].startswith("1-min load average: ")


@pytest.mark.parametrize("script", ["train_step.py", "generate.py", "scale_plan.py"])
def test_the_other_benchmarks_print_it_too(script):
    # Each needs a real model, torch or minutes; the call is what matters here.
    assert "load_line(load_at_start, load_average())" in (REPO / "benchmarks" / script).read_text()
