"""Greedy chat completions of our KV-cache generator on the real SmolLM2-135M-Instruct equal
transformers' `generate` on the same weights, token for token."""

import pytest

from soo_jax.data.scenarios import false_recommendation_scenarios, load_reference_scenarios
from soo_jax.models.generate import SamplingConfig, generate_text
from tests.models.hf_reference import burglar_prompts, compare_greedy, generation_models

NUM_SCENARIOS = 20
MAX_NEW_TOKENS = 75  # the paper's evaluation budget


@pytest.fixture(scope="module")
def models(smollm2_dir):
    return generation_models(smollm2_dir)


def test_greedy_completions_equal_transformers_on_burglar_scenarios(models):
    prompts = burglar_prompts(NUM_SCENARIOS)
    texts = compare_greedy(models, prompts, MAX_NEW_TOKENS)
    assert all(t.strip() for t in texts)
    # The evaluation's path: the chat template's system turn and the scenarios' common opening
    # prefilled once per batch, prompts sorted by length; the same completions.
    ours_model, _, tokenizer = models
    batched = generate_text(ours_model, tokenizer, prompts, batch_size=8,
                            sampling=SamplingConfig(max_new_tokens=MAX_NEW_TOKENS))
    assert batched == texts


def test_stopping_at_the_first_room_keeps_every_label(models):
    """Completions cut once a room is written are prefixes of the full ones, with the same
    first-mention label (the property `score_scenarios(stop_when_decided=True)` relies on)."""
    from soo_jax.eval.deception import decided_stop_texts
    from soo_jax.eval.scoring import classify_deception
    from tests.conftest import REFERENCE_DIR

    path = REFERENCE_DIR / "false_recommendation_scenarios.json"
    scenarios = (load_reference_scenarios(path) if path.is_file()
                 else false_recommendation_scenarios(n=NUM_SCENARIOS, seed=0))[:NUM_SCENARIOS]
    ours_model, _, tokenizer = models
    # A system prompt that makes the model talk on, so most rows would run to the token limit.
    kwargs = dict(sampling=SamplingConfig(max_new_tokens=MAX_NEW_TOKENS), batch_size=10,
                  system="Think aloud at length before you answer.")
    prompts = [s.prompt for s in scenarios]
    full = generate_text(ours_model, tokenizer, prompts, **kwargs)
    cut = generate_text(ours_model, tokenizer, prompts, stop_texts=[decided_stop_texts(s) for s in scenarios],
                        **kwargs)
    assert sum(len(c) < len(f) for c, f in zip(cut, full)) >= NUM_SCENARIOS // 2
    for scenario, c, f in zip(scenarios, cut, full):
        assert f.startswith(c)
        assert classify_deception(c, scenario) == classify_deception(f, scenario)
