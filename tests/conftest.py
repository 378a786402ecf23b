"""Shared test fixtures.

`../shared` (the authors' evaluation data, never copied into the project) sits beside the
checkout on development machines; tests that need it skip cleanly where it is absent.
"""
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = pathlib.Path(os.environ.get("SOO_JAX_SHARED", REPO_ROOT.parent / "shared"))
REFERENCE_DIR = SHARED_DIR / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"authors' reference data not found at {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> pathlib.Path:
    """The embedded SmolLM2-135M-Instruct converted once per test run (shared by xdist workers)."""
    from soo_jax.models.embedded import default_model_dir

    worker_root = tmp_path_factory.getbasetemp()
    run_root = worker_root.parent if os.environ.get("PYTEST_XDIST_WORKER") else worker_root
    return default_model_dir(run_root / "soo_jax_cache")


@pytest.fixture(scope="session")
def qwen_coder_dir(tmp_path_factory) -> pathlib.Path:
    """The opt-in Qwen2.5-Coder-0.5B-Instruct, verified and converted once per test run (shared by
    xdist workers); without its packages this fails with their install command."""
    from soo_jax.models.opt_in import opt_in_model_dir

    worker_root = tmp_path_factory.getbasetemp()
    run_root = worker_root.parent if os.environ.get("PYTEST_XDIST_WORKER") else worker_root
    return opt_in_model_dir("qwen2.5-coder-0.5b-instruct", run_root / "soo_jax_cache")


# The slow tier: test modules that spawn processes, train models or run whole experiments, and
# every test of the real checkpoints (the fixtures below). `pytest -m "not slow"` leaves them
# out; the README's test command and CI run everything. Single slow tests elsewhere carry
# @pytest.mark.slow themselves.
SLOW_MODULES = frozenset({
    "benchmarks/test_gpu_suite.py",
    "eval/test_evaluate_cli.py",
    "eval/test_no_torch_quiet.py",
    "experiments/test_experiment.py",
    "experiments/test_sweep.py",
    "experiments/test_sweep_recipes.py",
    "models/test_gguf_import.py",
    "rl/test_benchmark_profile.py",
    "rl/test_experiment.py",
    "rl/test_factorial.py",
    "rl/test_learning.py",
    "train/test_multiprocess.py",
    "train/test_run_integrity.py",
    "train/test_sharded_step.py",
    "train/test_train_launch.py",
})
SLOW_FIXTURES = frozenset({"smollm2_dir", "qwen_coder_dir"})


def pytest_collection_modifyitems(config, items):
    tests_dir = pathlib.Path(__file__).resolve().parent
    for item in items:
        module = pathlib.Path(str(item.fspath)).resolve().relative_to(tests_dir).as_posix()
        if module in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
