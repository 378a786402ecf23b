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
