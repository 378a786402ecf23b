"""The declared dependencies: the test extras never pull a CUDA build of PyTorch (issue 25)."""

from tests.conftest import REPO_ROOT


def test_the_test_extras_pin_a_cpu_only_torch_and_the_readme_says_where_to_find_it():
    lines = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements-test.txt").read_text().splitlines()]
    torch = [line for line in lines if line.startswith("torch")]
    assert len(torch) == 1 and torch[0].startswith("torch==") and torch[0].endswith("+cpu"), torch
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in (REPO_ROOT / "README.md").read_text()
