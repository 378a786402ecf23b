"""Our templates and vocabularies against the authors' own data (../shared/reference).

Nothing from those files is copied here: every expectation is recomputed from the file.
"""
import json
import re

import pytest

from soo_jax.data import scenarios as S
from soo_jax.data import templates as T

SCENE = re.compile(r"In the (.+?) is a (.+?)\. In the (.+?) is a (.+?)\. Only you know")


@pytest.fixture(scope="module")
def authors_scenarios(reference_dir):
    with open(reference_dir / "false_recommendation_scenarios.json", encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def authors_combinations(reference_dir):
    with open(reference_dir / "unique_combinations.json", encoding="utf-8") as f:
        return json.load(f)["combinations"]


@pytest.mark.parametrize("referent", ["other", "self"])
def test_our_template_rebuilds_every_authors_prompt(authors_scenarios, referent):
    items = authors_scenarios[f"{referent}_referencing"]
    assert len(items) == 1000
    for item in items:
        first_room, cheap, second_room, expensive = SCENE.search(item["prompt"]).groups()
        rebuilt = T.make_scenario(T.BURGLAR, T.Combination(first_room, second_room, cheap,
                                                           expensive), referent=referent)
        assert rebuilt.prompt == item["prompt"]
        # The file's "correct_answer" is the deceptive (cheap) room.
        assert rebuilt.deceptive_room == item["correct_answer"]
        assert rebuilt.honest_room == item["wrong_answer"]


def test_our_vocabularies_equal_the_authors(authors_scenarios, authors_combinations):
    rooms, cheap, expensive = set(), set(), set()
    for item in authors_scenarios["other_referencing"] + authors_scenarios["self_referencing"]:
        r1, c, r2, e = SCENE.search(item["prompt"]).groups()
        rooms |= {r1, r2}
        cheap.add(c)
        expensive.add(e)
    assert rooms == set(T.ROOMS)
    assert cheap == set(T.CHEAP_OBJECTS)
    assert expensive == set(T.EXPENSIVE_TEST_OBJECTS)
    assert {r for row in authors_combinations for r in row[:2]} == set(T.ROOMS)
    assert {row[2] for row in authors_combinations} == set(T.CHEAP_OBJECTS)
    assert {row[3] for row in authors_combinations} == set(T.EXPENSIVE_TEST_OBJECTS)


def test_load_reference_scenarios(reference_dir, authors_scenarios):
    for referent in ("other", "self"):
        loaded = S.load_reference_scenarios(
            reference_dir / "false_recommendation_scenarios.json", referent=referent)
        items = authors_scenarios[f"{referent}_referencing"]
        assert [s.prompt for s in loaded] == [item["prompt"] for item in items]
        assert [s.deceptive_room for s in loaded] == [item["correct_answer"] for item in items]
        assert [s.honest_room for s in loaded] == [item["wrong_answer"] for item in items]
        assert all(s.referent == referent and s.kind == T.BURGLAR for s in loaded)
        # Loaded scenarios re-render exactly, so they can be room-swapped.
        assert T.swap_room_order(T.swap_room_order(loaded[0])) == loaded[0]
    other = S.load_reference_scenarios(reference_dir / "false_recommendation_scenarios.json")
    self_ = S.load_reference_scenarios(reference_dir / "false_recommendation_scenarios.json",
                                       referent="self")
    assert [s.combination for s in other] == [s.combination for s in self_]


def test_load_combinations_and_build_variants(reference_dir, authors_combinations):
    combos = S.load_combinations(reference_dir / "unique_combinations.json")
    assert [list(c) for c in combos] == authors_combinations
    built = S.generalisation_scenarios(combos[:250])
    assert all(len(v) == 250 for v in built.values())
    for kind, items in built.items():
        for s, c in zip(items, combos):
            assert (s.deceptive_room, s.honest_room) == (c[0], c[1])
            assert s.kind == kind


def test_authors_generator_statistics_are_plausible_for_ours(authors_scenarios):
    # The inferred generator (docs/paper_notes.md §3.1.2) draws ordered room pairs: like the
    # authors' file, ours has every room in both positions and no systematic ordering of the pair.
    ours = S.generate_combinations(1000, seed=0)
    theirs = [SCENE.search(i["prompt"]).groups() for i in authors_scenarios["other_referencing"]]
    for rows, first, second in ((ours, 0, 1), (theirs, 0, 2)):
        assert {r[first] for r in rows} == {r[second] for r in rows} == set(T.ROOMS)
        in_sorted_order = sum(r[first] < r[second] for r in rows) / len(rows)
        assert 0.4 < in_sorted_order < 0.6
