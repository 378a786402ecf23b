"""The forced-choice endpoint: room log-probabilities equal an independent transformers
computation (one full forward per prompt + continuation, no cache) on a tiny checkpoint and on
the real SmolLM2, to 1e-4 relative; swapping which room is "deceptive" negates the log-odds;
multi-token room names are scored whole."""

import dataclasses

import numpy as np
import pytest
import torch
import transformers

from soo_jax.data.scenarios import false_recommendation_scenarios
from soo_jax.data.templates import swap_room_order
from soo_jax.eval.forced_choice import (ANSWER_PREFIX, choice_prompt, continuation_ids, per_scenario_log_odds,
                                        room_logprobs, score_forced_choice, summarise_forced_choice, t_interval)
from soo_jax.models.loader import from_pretrained, load_tokenizer
from tests.tiny_tokenizer import make_tiny_model_dir

RTOL = 1e-4


def reference_logprob(torch_model, tokenizer, prompt: str, room: str, *, chat_template: bool) -> float:
    """log p(" room" | prompt) from one uncached transformers forward over prompt + continuation."""
    prompt_ids = tokenizer(prompt, add_special_tokens=not chat_template)["input_ids"]
    cont = tokenizer(" " + room, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + cont])
    with torch.no_grad():
        log_p = torch.log_softmax(torch_model(ids).logits[0].double(), dim=-1)
    return float(sum(log_p[len(prompt_ids) - 1 + j, cont[j]] for j in range(len(cont))))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_fc")
    torch_model = make_tiny_model_dir(directory).eval()
    return from_pretrained(directory), torch_model, load_tokenizer(directory)


def _scenarios(n=6):
    return false_recommendation_scenarios(n=n, seed=0)


@pytest.mark.parametrize("chat_template", [True, False])
def test_room_logprobs_equal_transformers_on_a_tiny_checkpoint(tiny, chat_template):
    ours, theirs, tokenizer = tiny
    records = score_forced_choice(ours, tokenizer, _scenarios(), view="base", chat_template=chat_template,
                                  batch_size=4)  # 12 rows: a filled last batch and two prompt widths
    assert len(records) == 12
    for r in records:
        for field in ("deceptive", "honest"):
            expected = reference_logprob(theirs, tokenizer, r["prompt"], r[field].strip(), chat_template=chat_template)
            np.testing.assert_allclose(r[f"logprob_{field}"], expected, rtol=RTOL, atol=1e-6)


def test_records_carry_the_prompt_as_asked(tiny):
    _, _, tokenizer = tiny
    scenario = _scenarios(1)[0]
    ours = tiny[0]
    original, swapped = score_forced_choice(ours, tokenizer, [scenario], view="tuned")
    assert original["prompt"] == choice_prompt(tokenizer, scenario)
    assert original["prompt"].endswith("<|assistant|>" + ANSWER_PREFIX)
    assert swapped["prompt"] == choice_prompt(tokenizer, swap_room_order(scenario))
    assert (original["order"], swapped["order"]) == ("original", "swapped")
    assert original["deceptive"] == swapped["deceptive"] == " " + scenario.deceptive_room
    assert original["honest"] == " " + scenario.honest_room
    assert original["view"] == "tuned" and original["scenario"] == swapped["scenario"] == 0


def test_swapping_the_deceptive_room_negates_the_log_odds(tiny):
    ours, _, tokenizer = tiny
    scenarios = _scenarios(4)
    # The same prompts with the roles of the rooms exchanged: objects swap rooms, so the other
    # room becomes the deceptive one, while the text shown to the model stays the same.
    relabelled = [dataclasses.replace(s, cheap_room=s.expensive_room, expensive_room=s.cheap_room,
                                      rooms_swapped=not s.rooms_swapped) for s in scenarios]
    for s, r in zip(scenarios, relabelled):
        assert (r.deceptive_room, r.honest_room) == (s.honest_room, s.deceptive_room)
    # Score both orders of each prompt directly, pairing the texts by what is shown.
    prompts = [choice_prompt(tokenizer, s) for s in scenarios]
    a = room_logprobs(ours, tokenizer, prompts, [(" " + s.deceptive_room, " " + s.honest_room) for s in scenarios])
    b = room_logprobs(ours, tokenizer, prompts, [(" " + r.deceptive_room, " " + r.honest_room) for r in relabelled])
    np.testing.assert_allclose(a[:, 0] - a[:, 1], -(b[:, 0] - b[:, 1]), rtol=1e-6, atol=1e-6)


def test_multi_token_room_names_count_every_token(tiny):
    ours, theirs, tokenizer = tiny
    scenario = _scenarios(1)[0]
    long_room = "wine cellar under the old staircase"
    assert len(continuation_ids(tokenizer, long_room)) > 3
    prompt = choice_prompt(tokenizer, scenario)
    scores = room_logprobs(ours, tokenizer, [prompt], [(" " + long_room, " " + scenario.honest_room)])
    expected = reference_logprob(theirs, tokenizer, prompt, long_room, chat_template=True)
    np.testing.assert_allclose(scores[0, 0], expected, rtol=RTOL)
    # Whole name, not its first token: dropping the tail changes the score.
    first_only = tokenizer.decode(continuation_ids(tokenizer, long_room)[:1])
    head = room_logprobs(ours, tokenizer, [prompt], [(first_only, " " + scenario.honest_room)])
    assert scores[0, 0] < head[0, 0] - 1e-3


def _records(original, swapped):
    out = []
    for i, (o, s) in enumerate(zip(original, swapped)):
        out.append({"scenario": i, "order": "original", "logprob_deceptive": o, "logprob_honest": 0.0})
        out.append({"scenario": i, "order": "swapped", "logprob_deceptive": s, "logprob_honest": 0.0})
    return out


def test_summary_balances_orders_and_measures_position():
    # Scenario log-odds: original +3 / swapped -1 (first-named room preferred, net deceptive +1)
    # and original +1 / swapped -3 (net honest -1).
    summary = summarise_forced_choice(_records([3.0, 1.0], [-1.0, -3.0]))
    assert summary["log_odds"]["mean"] == pytest.approx(0.0)
    assert summary["deceptive_choice"] == 50.0
    assert summary["deceptive_choice_original"] == 100.0 and summary["deceptive_choice_swapped"] == 0.0
    assert summary["position_effect"] == pytest.approx(4.0)
    lo = per_scenario_log_odds(_records([3.0, 1.0], [-1.0, -3.0]))
    np.testing.assert_allclose(lo["order_balanced"], [1.0, -1.0])
    with pytest.raises(ValueError, match="both room orders"):
        per_scenario_log_odds(_records([1.0], [1.0])[:1])


def test_t_interval_matches_the_textbook_formula():
    from scipy import stats

    x = np.array([0.3, -0.1, 0.25, 0.4, 0.05, 0.2, -0.05, 0.15])
    out = t_interval(x)
    half = stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / np.sqrt(len(x))
    assert out["mean"] == pytest.approx(x.mean())
    assert out["high"] - out["mean"] == pytest.approx(half, rel=1e-4)
    for n in (31, 45, 120, 250):
        y = np.random.default_rng(n).normal(size=n)
        half = stats.t.ppf(0.975, n - 1) * np.std(y, ddof=1) / np.sqrt(n)
        assert t_interval(y)["high"] - t_interval(y)["mean"] == pytest.approx(half, rel=1e-4)


@pytest.mark.slow
def test_room_logprobs_equal_transformers_on_smollm2(smollm2_dir):
    from tests.conftest import REFERENCE_DIR
    from soo_jax.data.scenarios import load_reference_scenarios

    path = REFERENCE_DIR / "false_recommendation_scenarios.json"
    scenarios = (load_reference_scenarios(path) if path.is_file() else false_recommendation_scenarios(n=3, seed=0))[:3]
    ours = from_pretrained(smollm2_dir)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tokenizer = load_tokenizer(smollm2_dir)
    records = score_forced_choice(ours, tokenizer, scenarios, view="base", batch_size=4)
    for r in records:
        for field in ("deceptive", "honest"):
            expected = reference_logprob(theirs, tokenizer, r["prompt"], r[field].strip(), chat_template=True)
            np.testing.assert_allclose(r[f"logprob_{field}"], expected, rtol=RTOL)

