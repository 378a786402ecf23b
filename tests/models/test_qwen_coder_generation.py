"""Greedy chat completions of our KV-cache generator on the real (opt-in) Qwen2.5-Coder-0.5B-Instruct
equal transformers' `generate` on the same weights, token for token, on 20 burglar scenarios.
Without the model's packages the fixture fails with their install command (docs/opt_in_models.md)."""

import pytest

from tests.models.hf_reference import burglar_prompts, compare_greedy, generation_models

pytestmark = pytest.mark.slow

NUM_SCENARIOS = 20
MAX_NEW_TOKENS = 75  # the paper's evaluation budget


@pytest.fixture(scope="module")
def models(qwen_coder_dir):
    return generation_models(qwen_coder_dir)


def test_greedy_completions_equal_transformers_on_burglar_scenarios(models):
    texts = compare_greedy(models, burglar_prompts(NUM_SCENARIOS), MAX_NEW_TOKENS)
    assert all(t.strip() for t in texts)
    print("first completion:", texts[0])
