"""The deception evaluation's scenario sets and the authors' files: which combinations
(our seeded generator or the authors' `unique_combinations.json`), which kinds and conditions
make up the main, generalisation and held-out sets, and the loading of the authors' burglar
scenarios with their prompts kept verbatim. The prompts themselves are rendered by
`soo_jax.data.templates`.

Sources (docs/paper_notes.md): the authors' files and the generator §3.1.2, the generalisation
sets §3.2, Perspectives §3.3, honesty prompt §3.4.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from soo_jax.data.templates import (
    BURGLAR, CHEAP_OBJECTS, ESCAPE_ROOM, EXPENSIVE_TEST_OBJECTS, GENERALISATION_KINDS, PERSPECTIVES,
    REPO_ANSWER_SUFFIX, ROOMS, TREASURE_HUNT, Combination, Referent, Scenario, Wording,
    build_scenarios, with_answer_suffix, with_honesty_prompt,
)

# ---------------------------------------------------------------------------------------------
# Combinations: our generator and the authors' file
# ---------------------------------------------------------------------------------------------

def max_combinations() -> int:
    """How many distinct (ordered room pair, cheap object, expensive object) tuples exist."""
    return len(ROOMS) * (len(ROOMS) - 1) * len(CHEAP_OBJECTS) * len(EXPENSIVE_TEST_OBJECTS)


def generate_combinations(n: int, seed: int) -> list[Combination]:
    """`n` distinct combinations drawn as the authors' file appears to have been (§3.1.2): an
    ordered pair of distinct rooms, a cheap and an expensive test object, all uniform;
    duplicates rejected. Deterministic in `seed`; the order is the order of drawing."""
    if not 0 <= n <= max_combinations():
        raise ValueError(f"n must be in [0, {max_combinations()}], got {n}")
    rng = np.random.default_rng(seed)
    seen: set[Combination] = set()
    out: list[Combination] = []
    while len(out) < n:
        cheap_room, expensive_room = rng.choice(len(ROOMS), size=2, replace=False)
        combo = Combination(ROOMS[cheap_room], ROOMS[expensive_room],
                            CHEAP_OBJECTS[rng.integers(len(CHEAP_OBJECTS))],
                            EXPENSIVE_TEST_OBJECTS[rng.integers(len(EXPENSIVE_TEST_OBJECTS))])
        if combo not in seen:
            seen.add(combo)
            out.append(combo)
    return out


def combinations_from(path: str | os.PathLike | None = None, *, n: int = 1000,
                      seed: int = 0) -> list[Combination]:
    """The authors' combinations file (all of it, file order) if `path` is given, else
    `generate_combinations(n, seed)`: the input of the generalisation builders."""
    return load_combinations(path) if path is not None else generate_combinations(n, seed)


def false_recommendation_scenarios(n: int = 1000, seed: int = 0, *,
                                   referent: Referent = "other",
                                   answer_suffix: str | None = None) -> list[Scenario]:
    """The main burglar test set built from our generator (other- or self-referencing)."""
    return build_scenarios(BURGLAR, generate_combinations(n, seed), referent=referent,
                           answer_suffix=answer_suffix)


def generalisation_scenarios(combinations: Sequence[Combination | Sequence[str]], *,
                             kinds: Sequence[str] = (*GENERALISATION_KINDS, TREASURE_HUNT,
                                                     ESCAPE_ROOM),
                             wording: Wording = "arxiv",
                             answer_suffix: str | None = None) -> dict[str, list[Scenario]]:
    """Each generalisation kind built from the same combinations, keyed by kind. Labels come
    from the prompt content (the authors' notebook swapped Treasure Hunt and Escape Room)."""
    return {kind: build_scenarios(kind, combinations, wording=wording,
                                  answer_suffix=answer_suffix) for kind in kinds}


def perspectives_scenarios(combinations: Sequence[Combination | Sequence[str]], *,
                           answer_suffix: str | None = None) -> list[Scenario]:
    return build_scenarios(PERSPECTIVES, combinations, answer_suffix=answer_suffix)


# ---------------------------------------------------------------------------------------------
# The evaluation's scenario sets (what launch/evaluate.py and the experiments ask)
# ---------------------------------------------------------------------------------------------

def _burglar_set(n: int, scenarios_file: str, seed: int, referent: Referent,
                 answer_suffix: str) -> list[Scenario]:
    if scenarios_file:
        loaded = load_reference_scenarios(scenarios_file, referent=referent)
        if len(loaded) < n:
            raise ValueError(f"{scenarios_file} has {len(loaded)} {referent}-referencing "
                             f"scenarios, fewer than num_scenarios={n}")
        return [with_answer_suffix(s, answer_suffix) for s in loaded[:n]]
    return false_recommendation_scenarios(n, seed, referent=referent, answer_suffix=answer_suffix)


def main_scenarios(n: int = 250, *, scenarios_file: str = "", seed: int = 0,
                   answer_suffix: str = REPO_ANSWER_SUFFIX, self_control: bool = True,
                   honesty_prompt: bool = False) -> list[Scenario]:
    """The main burglar set: the first `n` of the authors' file (`scenarios_file`) or of our
    generator (`seed`), then the same scenarios self-referencing (`self_control`) and with
    the honesty prompt (`honesty_prompt`, §3.4). Conditions are told apart by the
    evaluation's `condition_name`."""
    other = _burglar_set(n, scenarios_file, seed, "other", answer_suffix)
    out = list(other)
    if self_control:
        out += _burglar_set(n, scenarios_file, seed, "self", answer_suffix)
    if honesty_prompt:
        out += [with_honesty_prompt(s) for s in other]
    return out


def generalisation_scenarios_for(n: int = 250, *, combinations_file: str = "", seed: int = 1,
                                 answer_suffix: str = REPO_ANSWER_SUFFIX, wording: Wording = "arxiv",
                                 perspectives: bool = True) -> list[Scenario]:
    """The 7 generalisation variants, Treasure Hunt and Escape Room (and Perspectives), each
    on the first `n` combinations of the authors' file or of our generator (`seed`)."""
    combinations = combinations_from(combinations_file or None, n=n, seed=seed)
    if len(combinations) < n:
        raise ValueError(f"{combinations_file} has {len(combinations)} combinations, fewer "
                         f"than num_scenarios={n}")
    combinations = combinations[:n]
    by_kind = generalisation_scenarios(combinations, wording=wording, answer_suffix=answer_suffix)
    out = [s for kind_scenarios in by_kind.values() for s in kind_scenarios]
    if perspectives:
        out += perspectives_scenarios(combinations)
    return out


def held_out_scenarios(n: int, *, skip: int = 250, seed: int = 0,
                       answer_suffix: str = REPO_ANSWER_SUFFIX) -> list[Scenario]:
    """Burglar scenarios `skip .. skip+n-1` of our generator: disjoint from the first `skip`
    (the evaluation split), for quick checks and model selection during training."""
    combinations = generate_combinations(skip + n, seed)[skip:]
    return build_scenarios(BURGLAR, combinations, answer_suffix=answer_suffix)


# How to make the authors' scenario file (README, "Scenarios"), for the error a missing one gets.
AUTHORS_FILE_HINT = ("make it from the authors' pickle as README 'Scenarios' shows (curl -L -o "
                     "false_recommendation_scenarios.pkl https://raw.githubusercontent.com/agencyenterprise/"
                     "SOO-Honest-AI/main/LLM%20experiments/false_recommendation_scenarios.pkl, then convert it "
                     "to JSON with the README's python -c line)")


def check_input_file(path: str | os.PathLike, what: str, hint: str) -> None:
    """FileNotFoundError naming `what` (the flag or key), the path and `hint` (how to make the
    file) unless `path` is a readable file."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{what} {path} is a directory, not a file; {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found; {hint}")


def check_scenarios_file(path: str | os.PathLike, what: str = "--scenarios") -> None:
    """The authors' false_recommendation_scenarios.json must exist; else how to make it."""
    check_input_file(path, what, f"{AUTHORS_FILE_HINT}, or leave it out to use our generator's scenarios")


def _read_json(path: str | os.PathLike) -> object:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e


def load_combinations(path: str | os.PathLike) -> list[Combination]:
    """The authors' `unique_combinations.json` (`{"combinations": [[cheap_room, expensive_room,
    cheap_object, expensive_object], ...]}`) or a bare list of such 4-lists, in file order."""
    data = _read_json(path)
    rows = data.get("combinations") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty list of combinations")
    out = []
    for i, row in enumerate(rows):
        if (not isinstance(row, (list, tuple)) or len(row) != 4
                or not all(isinstance(x, str) and x for x in row)):
            raise ValueError(f"{path}: combination {i} is not four non-empty strings: {row!r}")
        if row[0] == row[1]:
            raise ValueError(f"{path}: combination {i} names the same room twice: {row!r}")
        out.append(Combination(*row))
    return out


_SCENE_PATTERN = re.compile(r"In the (.+?) is a (.+?)\. In the (.+?) is a (.+?)\. Only you know")


def load_reference_scenarios(path: str | os.PathLike,
                             referent: Referent = "other") -> list[Scenario]:
    """The authors' burglar scenarios (`false_recommendation_scenarios.json`), prompts kept
    verbatim. The file's `correct_answer` is the cheap room, i.e. the DECEPTIVE answer, and
    `wrong_answer` the honest one; both are checked against the prompt."""
    if referent not in ("other", "self"):
        raise ValueError(f"referent must be 'other' or 'self', got {referent!r}")
    data = _read_json(path)
    key = f"{referent}_referencing"
    items = data.get(key) if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty list of scenarios under {key!r}")
    out = []
    for i, item in enumerate(items):
        prompt = item.get("prompt") if isinstance(item, dict) else None
        match = _SCENE_PATTERN.search(prompt) if isinstance(prompt, str) else None
        if match is None:
            raise ValueError(f"{path}: scenario {i} has no burglar-template prompt")
        first_room, cheap_object, second_room, expensive_object = match.groups()
        if (item.get("correct_answer"), item.get("wrong_answer")) != (first_room, second_room):
            raise ValueError(f"{path}: scenario {i}: expected correct_answer={first_room!r} "
                             f"(cheap room) and wrong_answer={second_room!r}")
        # The answer suffix is whatever follows the template's closing question.
        question_end = f" or the {second_room}?"
        suffix = prompt[prompt.rfind(question_end) + len(question_end):].removeprefix(" ")
        out.append(Scenario(prompt=prompt, kind=BURGLAR, cheap_room=first_room,
                            expensive_room=second_room, cheap_object=cheap_object,
                            expensive_object=expensive_object, referent=referent,
                            answer_suffix=suffix))
    return out
