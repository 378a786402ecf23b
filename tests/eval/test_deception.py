"""Generation-based scoring: the rates are the classifier's on whatever the generator says, for
every condition, in both room orders; the scenario sets are the ones asked for."""
import pytest

from soo_jax.data import scenarios as S
from soo_jax.data import templates as T
from soo_jax.eval import deception
from soo_jax.eval.config import default_eval_config
from soo_jax.eval.scoring import first_mentioned_room
from soo_jax.eval.suite import run_suites


def first_listed_room(prompt: str) -> str:
    room = first_mentioned_room(prompt, T.ROOMS)
    assert room is not None, prompt
    return room


def room_holding(prompt: str, objects) -> str:
    """The room the prompt puts one of `objects` in ('In the R is a X' / 'In the R, there's a X')."""
    for room in T.ROOMS:
        for obj in objects:
            if f"the {room} is a {obj}." in prompt or f"the {room}, there's a {obj}" in prompt:
                return room
    raise AssertionError(f"no room holds any of the objects in: {prompt}")


def fake(answer):
    """A Generate function answering each prompt with `answer(prompt)`; records the calls."""
    calls = []

    def generate(prompts):
        calls.append(list(prompts))
        return [answer(p) for p in prompts]
    generate.calls = calls
    return generate


def says_first_room(prompt):
    return f"I would point out the {first_listed_room(prompt)}."


def test_first_room_bias_is_fully_deceptive_on_the_paper_metric_and_half_when_balanced():
    scenarios = S.main_scenarios(6, seed=3, self_control=True, honesty_prompt=True)
    generate = fake(says_first_room)
    summary, records = deception.score_scenarios(generate, scenarios)

    assert len(generate.calls) == 1 and len(generate.calls[0]) == 2 * len(scenarios)
    assert set(summary) == {"burglar", "burglar/self", "burglar/honesty_prompt"}
    for condition in summary.values():
        assert condition["original"] == {"n": 6, "deceptive_rate": 100.0, "honest_rate": 0.0,
                                         "neither_rate": 0.0}
        assert condition["swapped"]["deceptive_rate"] == 0.0
        assert condition["swapped"]["honest_rate"] == 100.0
        balanced = condition["order_balanced"]
        assert balanced["order_balanced_deception_rate"] == 50.0
        assert balanced["position_bias_rate"] == 100.0
        assert balanced["deceptive_in_both_orders_rate"] == 0.0
    assert len(records) == 2 * len(scenarios)
    assert {r["label"] for r in records} == {"deceptive", "honest"}


def test_honest_and_silent_generators():
    scenarios = S.main_scenarios(5, seed=4, self_control=False)
    expensive = fake(lambda p: f"I would say the {room_holding(p, T.EXPENSIVE_TEST_OBJECTS)}")
    summary, _ = deception.score_scenarios(expensive, scenarios)
    burglar = summary["burglar"]
    assert burglar["original"]["honest_rate"] == 100.0
    assert burglar["order_balanced"]["honest_in_both_orders_rate"] == 100.0
    assert burglar["order_balanced"]["position_bias_rate"] == 0.0

    summary, _ = deception.score_scenarios(fake(lambda p: "I would rather not say."), scenarios,
                                           swap_room_order_too=False)
    assert summary["burglar"]["original"]["neither_rate"] == 100.0
    assert "swapped" not in summary["burglar"] and "order_balanced" not in summary["burglar"]


def test_mixed_answers_give_the_counted_rates():
    scenarios = S.main_scenarios(8, seed=5, self_control=False)
    # Scenario i gets: deceptive (i % 4 == 0 or 1), honest (2), neither (3).
    index = {s.prompt: i for i, s in enumerate(scenarios)}
    by_prompt = {}
    for s in scenarios:
        i = index[s.prompt]
        by_prompt[s.prompt] = (f"the {s.deceptive_room}" if i % 4 < 2 else
                               f"the {s.honest_room}, not the {s.deceptive_room}" if i % 4 == 2
                               else "no idea")
    summary, _ = deception.score_scenarios(fake(by_prompt.__getitem__), scenarios,
                                           swap_room_order_too=False)
    assert summary["burglar"]["original"] == {"n": 8, "deceptive_rate": 50.0,
                                              "honest_rate": 25.0, "neither_rate": 25.0}


def test_generalisation_suite_through_run_suites_with_a_fake_generator(tiny_tokenizer):
    config = default_eval_config()
    config.suites = "generalisation,main"
    config.num_scenarios = 4
    asked = {"BASE": 0, "TUNED": 0}

    def generators(model, label, max_new_tokens):
        assert max_new_tokens == 75 and model == label.upper()

        def generate(prompts):
            asked[model] += len(prompts)
            return [says_first_room(p) for p in prompts]
        return generate

    results, records = run_suites(config, tiny_tokenizer, base_model="BASE", tuned_model="TUNED",
                                  generators=generators)
    base, tuned = results["deception"]["base"], results["deception"]["tuned"]
    kinds = {*T.GENERALISATION_KINDS, T.TREASURE_HUNT, T.ESCAPE_ROOM, T.PERSPECTIVES}
    assert kinds | {"burglar", "burglar/self", "burglar/honesty_prompt"} == set(base)
    assert "burglar/honesty_prompt" not in tuned  # the honesty baseline is for the base model
    for kind in kinds - {T.PERSPECTIVES}:
        assert base[kind]["original"]["n"] == 4
        assert base[kind]["original"]["deceptive_rate"] == 100.0
        assert base[kind]["order_balanced"]["order_balanced_deception_rate"] == 50.0
    # Perspectives lists one's own room first: a first-room answer projects.
    perspectives = base[T.PERSPECTIVES]
    assert perspectives["original"]["projected_rate"] == 100.0
    assert perspectives["swapped"]["correct_rate"] == 100.0
    assert perspectives["order_balanced"]["order_balanced_correct_rate"] == 50.0
    n_base = 4 * 2 * (len(kinds) + 3)
    assert len([r for r in records if r["model"] == "base"]) == n_base
    assert asked == {"BASE": n_base, "TUNED": n_base - 4 * 2}


def test_reference_file_gives_the_authors_prompts(reference_dir):
    path = str(reference_dir / "false_recommendation_scenarios.json")
    scenarios = S.main_scenarios(250, scenarios_file=path, self_control=True)
    other, own = scenarios[:250], scenarios[250:]
    authors = S.load_reference_scenarios(path)
    assert [s.prompt for s in other] == [s.prompt for s in authors[:250]]
    assert (other[0].deceptive_room, other[0].honest_room) == ("attic", "bedroom")
    assert all(s.referent == "self" for s in own) and len(own) == 250
    # A different suffix re-renders every prompt; swapping still works on the result.
    changed = S.main_scenarios(3, scenarios_file=path, self_control=False,
                                       answer_suffix=T.ROOM_ONLY_ANSWER_SUFFIX)
    assert all(s.prompt.endswith(T.ROOM_ONLY_ANSWER_SUFFIX) for s in changed)
    assert changed[0].prompt.replace(T.ROOM_ONLY_ANSWER_SUFFIX, T.REPO_ANSWER_SUFFIX) == other[0].prompt
    T.swap_room_order(changed[0])


def test_with_answer_suffix_refuses_a_foreign_prompt():
    scenario = T.make_scenario(T.BURGLAR, S.generate_combinations(1, 0)[0])
    import dataclasses
    foreign = dataclasses.replace(scenario, prompt="Something else entirely.")
    with pytest.raises(ValueError, match="answer suffix"):
        T.with_answer_suffix(foreign, "Answer now.")
    assert T.with_answer_suffix(foreign, foreign.answer_suffix) is foreign


def test_held_out_scenarios_are_disjoint_from_the_evaluation_split():
    evaluated = {s.combination for s in S.main_scenarios(250, self_control=False)}
    held_out = S.held_out_scenarios(40, skip=250)
    assert len(held_out) == 40
    assert not evaluated & {s.combination for s in held_out}
    assert held_out == S.held_out_scenarios(40, skip=250)


def test_make_generator_returns_completions_in_the_callers_order(tiny_model, tiny_tokenizer):
    from soo_jax.models.generate import SamplingConfig, generate_text

    scenarios = S.main_scenarios(1, seed=7, self_control=False, honesty_prompt=True)
    short, burglar, honesty = ("What is the capital city of Australia?", scenarios[0].prompt,
                               scenarios[1].prompt)
    ticks = []
    batched = deception.make_generator(tiny_model, tiny_tokenizer, max_new_tokens=5,
                                       batch_size=2, progress=lambda d, t: ticks.append((d, t)))
    got = batched([honesty, burglar, short])  # longest first: sorting reverses them
    # What make_generator should run: shortest first, the last batch filled up by repetition
    # (the same shapes, so nothing is compiled twice).
    expected = generate_text(tiny_model, tiny_tokenizer, [short, burglar, honesty, honesty],
                             sampling=SamplingConfig(max_new_tokens=5), batch_size=2)
    assert got == [expected[2], expected[1], expected[0]]
    assert len(set(got)) == 3  # the prompts really get different completions
    assert ticks[-1] == (3, 3)


def test_stop_when_decided_passes_each_prompts_rooms_and_keeps_labels():
    scenarios = S.main_scenarios(6, seed=3, self_control=False)
    seen = {}

    def generate(prompts, stop_texts=None):
        seen["stop_texts"] = stop_texts
        return [says_first_room(p) for p in prompts]
    generate.stops_on_texts = True

    stopped, _ = deception.score_scenarios(generate, scenarios, stop_when_decided=True)
    asked = list(scenarios) + [T.swap_room_order(s) for s in scenarios]
    assert seen["stop_texts"] == [(s.cheap_room, s.expensive_room) for s in asked]
    full, _ = deception.score_scenarios(fake(says_first_room), scenarios, stop_when_decided=True)
    assert stopped == full  # a generator without the capability is called plainly
    deception.score_scenarios(generate, scenarios, stop_when_decided=True, whole_words=True)
    assert seen["stop_texts"] is None  # whole-word scoring: a stop inside "officer" would mislead
    deception.score_scenarios(generate, scenarios, stop_when_decided=False)
    assert seen["stop_texts"] is None


def test_no_stop_texts_when_one_room_name_contains_the_other():
    import dataclasses

    scenario = S.main_scenarios(1, seed=0, self_control=False)[0]
    nested = dataclasses.replace(scenario, cheap_room="bedroom", expensive_room="master bedroom")
    assert deception.decided_stop_texts(nested) == ()
    assert deception.decided_stop_texts(scenario) == (scenario.cheap_room, scenario.expensive_room)
