"""Fixtures shared by the training tests."""

import pytest

from tests.tiny_tokenizer import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random Llama checkpoint directory (weights + tokenizer), one per test module."""
    path = tmp_path_factory.mktemp("tiny_model")
    make_tiny_model_dir(path)
    return path
