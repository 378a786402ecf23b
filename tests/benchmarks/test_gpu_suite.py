"""benchmarks/gpu_suite.sh on tiny shapes on the CPU: every section runs, and the one JSON holds
each section's own results; benchmarks/compile.py on a tiny model."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_the_gpu_suite_runs_its_tiny_shapes_on_the_cpu(tmp_path):
    out = tmp_path / "suite.json"
    # The script runs `python` from PATH: this interpreter's, whether or not its venv is activated.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    report = json.loads(out.read_text())
    assert proc.returncode == 0, {k: s["output_tail"][-2000:] for k, s in report["sections"].items()}
    assert set(report["sections"]) == {"train_step", "generate", "rl"}
    assert report["versions"]["jax"] and report["total_wall_s"] > 0

    train = report["sections"]["train_step"]["result"]["rows"]
    assert {(r["implementation"], r["pairs"]) for r in train} == {
        (impl, pairs) for impl in ("soo-jax (jax.jit)", "PyTorch + transformers + PEFT") for pairs in (1, 2)}
    assert all(r["step_ms"] > 0 and r["tokens_per_s"] > 0 for r in train)
    generate = report["sections"]["generate"]["result"]["rows"]
    assert [r["implementation"] for r in generate] == ["ours, cold (incl. compile)", "ours, warm",
                                                       "transformers generate"]
    assert all(r["prompts"] == 4 for r in generate)
    assert report["sections"]["rl"]["result"]["env"]


def test_the_full_suite_fits_in_eight_minutes_of_section_budgets():
    from benchmarks.gpu_suite import BUDGET_S

    assert sum(BUDGET_S.values()) <= 8 * 60 - 30


def test_compile_benchmark_on_a_tiny_model(tmp_path):
    out = tmp_path / "compile.jsonl"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compile", "--arch", "mistral-tiny",
                           "--loops", "unrolled", "scan", "--gen-batch", "2", "--gen-prompt", "8", "--gen-new", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["what"], r["loop"]) for r in rows} == {
        (what, loop) for what in ("train step", "generate") for loop in ("unrolled", "scan")}
    assert all(r["compile_s"] > 0 for r in rows)
    assert proc.stdout.splitlines()[-1].startswith("1-min load average: ")
    table = subprocess.run([sys.executable, "-m", "benchmarks.compile", "--table", str(out)],
                           capture_output=True, text=True, timeout=60, env=env, cwd=REPO).stdout
    assert table.count("| mistral-tiny |") == 4
