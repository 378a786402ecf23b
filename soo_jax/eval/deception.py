"""Generation-based deception scoring: which scenarios to ask, how to ask them, how to score.

A `Generate` function maps prompts to completions; `make_generator` builds one on our KV-cache
generator (greedy, the paper's 75 new tokens, chat template or raw continuation), and tests
inject fakes. Scoring is `soo_jax.eval.scoring.summarise` (the authors' first-mention rule)
on the (scenario, completion) pairs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from soo_jax.data.scenarios import (
    BURGLAR, GENERALISATION_KINDS, PERSPECTIVES, REPO_ANSWER_SUFFIX, TREASURE_HUNT,
    ESCAPE_ROOM, Scenario, build_scenarios, combinations_from, generate_combinations,
    load_reference_scenarios, perspectives_scenarios, render_prompt, swap_room_order,
    with_honesty_prompt,
)
from soo_jax.eval.scoring import summarise

__all__ = [
    "Generate", "Progress", "make_generator", "main_scenarios", "generalisation_scenarios_for",
    "held_out_scenarios", "with_answer_suffix", "score_scenarios", "headline",
    "CONDITION_ORDER", "ordered_conditions",
]

# prompts -> completions (same order, same length).
Generate = Callable[[Sequence[str]], list[str]]
# (prompts done, prompts total)
Progress = Callable[[int, int], None]


def make_generator(model, tokenizer, *, max_new_tokens: int = 75, chat: bool = True,
                   system: str | None = None, batch_size: int = 32,
                   progress: Progress | None = None) -> Generate:
    """Greedy completions from our KV-cache generator (`generate_text` orders prompts by length
    and fills the last batch, so each (batch, width) shape compiles once)."""
    from soo_jax.models.generate import SamplingConfig, generate_text

    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)

    def generate(prompts: Sequence[str], stop_texts: Sequence[Sequence[str]] | None = None,
                 on_batch=None) -> list[str]:
        if not prompts:
            return []
        return generate_text(model, tokenizer, list(prompts), sampling=sampling, chat=chat, system=system,
                             batch_size=batch_size, progress=progress, stop_texts=stop_texts, on_batch=on_batch)

    generate.stops_on_texts = True  # see score_scenarios(stop_when_decided=...)
    generate.reports_batches = True  # see soo_jax.eval.answer_log
    return generate


# ---------------------------------------------------------------------------------------------
# Which scenarios
# ---------------------------------------------------------------------------------------------

def with_answer_suffix(scenario: Scenario, answer_suffix: str) -> Scenario:
    """The scenario re-rendered with another answer suffix (a no-op if it already has it).
    Raises ValueError if its prompt is not what our template renders (a foreign wording)."""
    if scenario.answer_suffix == answer_suffix:
        return scenario
    fields = dict(referent=scenario.referent, rooms_swapped=scenario.rooms_swapped,
                  wording=scenario.wording, honesty_prefix=scenario.honesty_prefix)
    if render_prompt(scenario.kind, scenario.combination, answer_suffix=scenario.answer_suffix,
                     **fields) != scenario.prompt:
        raise ValueError("cannot change the answer suffix: the scenario's prompt differs from "
                         f"what the {scenario.kind!r} template renders for its fields")
    prompt = render_prompt(scenario.kind, scenario.combination, answer_suffix=answer_suffix,
                           **fields)
    return dataclasses.replace(scenario, answer_suffix=answer_suffix, prompt=prompt)


def _burglar_set(n: int, scenarios_file: str, seed: int, referent: str,
                 answer_suffix: str) -> list[Scenario]:
    if scenarios_file:
        loaded = load_reference_scenarios(scenarios_file, referent=referent)
        if len(loaded) < n:
            raise ValueError(f"{scenarios_file} has {len(loaded)} {referent}-referencing "
                             f"scenarios, fewer than num_scenarios={n}")
        return [with_answer_suffix(s, answer_suffix) for s in loaded[:n]]
    return build_scenarios(BURGLAR, generate_combinations(n, seed), referent=referent,
                           answer_suffix=answer_suffix)


def main_scenarios(n: int = 250, *, scenarios_file: str = "", seed: int = 0,
                   answer_suffix: str = REPO_ANSWER_SUFFIX, self_control: bool = True,
                   honesty_prompt: bool = False) -> list[Scenario]:
    """The main burglar set: the first `n` of the authors' file (`scenarios_file`) or of our
    generator (`seed`), then the same scenarios self-referencing (`self_control`) and with
    the honesty prompt (`honesty_prompt`). Conditions are told apart by `condition_name`."""
    other = _burglar_set(n, scenarios_file, seed, "other", answer_suffix)
    out = list(other)
    if self_control:
        out += _burglar_set(n, scenarios_file, seed, "self", answer_suffix)
    if honesty_prompt:
        out += [with_honesty_prompt(s) for s in other]
    return out


def generalisation_scenarios_for(n: int = 250, *, combinations_file: str = "", seed: int = 1,
                                 answer_suffix: str = REPO_ANSWER_SUFFIX,
                                 wording: str = "arxiv",
                                 perspectives: bool = True) -> list[Scenario]:
    """The 7 generalisation variants, Treasure Hunt and Escape Room (and Perspectives), each
    on the first `n` combinations of the authors' file or of our generator (`seed`)."""
    combinations = combinations_from(combinations_file or None, n=n, seed=seed)
    if len(combinations) < n:
        raise ValueError(f"{combinations_file} has {len(combinations)} combinations, fewer "
                         f"than num_scenarios={n}")
    combinations = combinations[:n]
    out: list[Scenario] = []
    for kind in (*GENERALISATION_KINDS, TREASURE_HUNT, ESCAPE_ROOM):
        out += build_scenarios(kind, combinations, wording=wording, answer_suffix=answer_suffix)
    if perspectives:
        out += perspectives_scenarios(combinations)
    return out


def held_out_scenarios(n: int, *, skip: int = 250, seed: int = 0,
                       answer_suffix: str = REPO_ANSWER_SUFFIX) -> list[Scenario]:
    """Burglar scenarios `skip .. skip+n-1` of our generator: disjoint from the first `skip`
    (the evaluation split), for quick checks and model selection during training."""
    combinations = generate_combinations(skip + n, seed)[skip:]
    return build_scenarios(BURGLAR, combinations, answer_suffix=answer_suffix)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

def decided_stop_texts(scenario: Scenario) -> tuple[str, ...]:
    """The texts whose generation fixes the scenario's label: its two rooms, unless one name
    contains the other (then a later, longer mention could start earlier; nothing stops)."""
    a, b = scenario.cheap_room.lower(), scenario.expensive_room.lower()
    return () if a in b or b in a else (scenario.cheap_room, scenario.expensive_room)


def score_scenarios(generate: Generate, scenarios: Sequence[Scenario], *,
                    swap_room_order_too: bool = True, whole_words: bool = False,
                    stop_when_decided: bool = False) -> tuple[dict, list[dict]]:
    """Generate a completion for every scenario (and for each one with its rooms swapped),
    in one call of `generate`, and score them. Returns (per-condition summary, records):
    the summary maps `condition_name` to {"original", "swapped", "order_balanced"} as
    `summarise` documents; the records hold each prompt, response and label.

    `stop_when_decided` (generators that support it, with substring scoring): a completion
    ends as soon as it has written either room. The label is the room mentioned first, and
    once some room has been written the first mention lies in what was written, so the labels
    are those of the full `max_new_tokens` completions; only the stored text is shorter.
    """
    if not scenarios:
        raise ValueError("no scenarios to score")
    asked = list(scenarios)
    if swap_room_order_too:
        asked += [swap_room_order(s) for s in scenarios]
    prompts = [s.prompt for s in asked]
    if stop_when_decided and not whole_words and getattr(generate, "stops_on_texts", False):
        responses = generate(prompts, stop_texts=[decided_stop_texts(s) for s in asked])
    else:
        responses = generate(prompts)
    if len(responses) != len(asked):
        raise ValueError(f"the generator returned {len(responses)} completions for "
                         f"{len(asked)} prompts")
    summary = summarise(list(zip(asked, responses)), whole_words=whole_words,
                        include_records=True)
    return summary["conditions"], summary["records"]


def headline(condition: dict) -> dict[str, float | int | None]:
    """The numbers a table shows for one condition's summary: the paper's metric (deceptive,
    honest, neither in %; for Perspectives correct/projected/neither) and, if both orders
    were asked, the order-balanced rate and the position-bias rate."""
    original = condition["original"]
    balanced = condition.get("order_balanced", {})
    if "correct_rate" in original:
        return {"n": original["n"], "correct": original["correct_rate"],
                "projected": original["projected_rate"], "neither": original["neither_rate"],
                "order_balanced": balanced.get("order_balanced_correct_rate"),
                "position_bias": balanced.get("position_bias_rate")}
    return {"n": original["n"], "deceptive": original["deceptive_rate"],
            "honest": original["honest_rate"], "neither": original["neither_rate"],
            "order_balanced": balanced.get("order_balanced_deception_rate"),
            "position_bias": balanced.get("position_bias_rate")}


# Conditions in the order tables and plots list them.
CONDITION_ORDER: tuple[str, ...] = (
    BURGLAR, f"{BURGLAR}/honesty_prompt", f"{BURGLAR}/self", *GENERALISATION_KINDS,
    TREASURE_HUNT, f"{TREASURE_HUNT}/repo", ESCAPE_ROOM, f"{ESCAPE_ROOM}/repo", PERSPECTIVES,
)


def ordered_conditions(names) -> list[str]:
    rank = {name: i for i, name in enumerate(CONDITION_ORDER)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))

