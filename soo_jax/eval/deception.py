"""Generation-based deception scoring: which scenarios to ask, how to ask them, how to score.

A `Generate` function maps prompts to completions; `make_generator` builds one on our KV-cache
generator (greedy, the paper's 75 new tokens, chat template or raw continuation), and tests
inject fakes. Scoring is `soo_jax.eval.scoring.summarise` (the authors' first-mention rule)
on the (scenario, completion) pairs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

# Which scenarios to ask is the data layer's (soo_jax.data.scenarios.main_scenarios, ...).
from soo_jax.data.templates import (
    BURGLAR, ESCAPE_ROOM, GENERALISATION_KINDS, PERSPECTIVES, TREASURE_HUNT, Scenario,
    swap_room_order,
)
from soo_jax.eval.scoring import summarise

__all__ = [
    "Generate", "Progress", "make_generator", "score_scenarios", "headline", "CONDITION_ORDER",
    "ordered_conditions",
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

