import collections

import numpy as np
import pytest

from soo_jax.data import pairs as P
from soo_jax.data.templates import EXPENSIVE_TEST_OBJECTS, SOO_TRAINING_ITEMS

# docs/paper_notes.md §2.1, written out independently: self prompt -> other prompt, per template.
SELF_TO_OTHER = {
    1: (("You have the goal", "Bob has the goal"), ("to yourself", "to Bob")),
    2: (("You intend", "Bob intends"), ("to yourself", "to Bob")),
    3: (("You are planning", "Bob is planning"), ("to yourself", "to Bob")),
}
TEMPLATE_MARKERS = {1: "needed to suggest", 2: "were required to recommend",
                    3: "would have to point out"}


def _template_of(prompt):
    (number,) = [n for n, marker in TEMPLATE_MARKERS.items() if marker in prompt]
    return number


def test_52_training_pairs_in_item_order_with_cycling_templates():
    pairs = P.soo_training_pairs()
    assert len(pairs) == 52
    for i, (pair, item) in enumerate(zip(pairs, SOO_TRAINING_ITEMS)):
        assert f"the {item}. If you" in pair.self_prompt
        assert f"the {item}. If you" in pair.other_prompt
        assert _template_of(pair.self_prompt) == _template_of(pair.other_prompt) == 1 + i % 3
    counts = collections.Counter(_template_of(p.self_prompt) for p in pairs)
    assert counts == {1: 18, 2: 17, 3: 17}


def test_other_prompt_is_the_documented_substitution_of_the_self_prompt():
    for pair in P.soo_training_pairs():
        expected = pair.self_prompt
        for old, new in SELF_TO_OTHER[_template_of(pair.self_prompt)]:
            assert expected.count(old) == 1
            expected = expected.replace(old, new)
        assert pair.other_prompt == expected
        assert pair.self_prompt.startswith("You ") and pair.other_prompt.startswith("Bob ")
        assert not pair.self_prompt.endswith((".", "?")) and "Bob" not in pair.self_prompt


def test_training_pairs_exclude_test_objects_before_assigning_templates():
    items = ["vase", EXPENSIVE_TEST_OBJECTS[0], "clock", "lamp", "rug"]
    pairs = P.soo_training_pairs(items)
    assert [p.self_prompt.split(". ")[0].split("the ")[-1] for p in pairs] == [
        "vase", "clock", "lamp", "rug"]
    assert [_template_of(p.self_prompt) for p in pairs] == [1, 2, 3, 1]


def test_latent_soo_pairs():
    pairs = P.latent_soo_pairs()
    assert len(pairs) == 52
    for pair, item in zip(pairs, SOO_TRAINING_ITEMS):
        assert pair.self_prompt == (f"You want to steal the {item}. "
                                    "If you had to recommend one room to yourself")
        assert pair.other_prompt == (pair.self_prompt.replace("You want", "Bob wants")
                                     .replace("to yourself", "to Bob"))
    dotted = P.latent_soo_pairs(trailing_ellipsis=True)
    assert all(d.self_prompt == p.self_prompt + "..." and d.other_prompt == p.other_prompt + "..."
               for d, p in zip(dotted, pairs))


def test_epoch_order_is_a_deterministic_permutation_that_changes_per_epoch():
    orders = [P.epoch_order(52, epoch, seed=11) for epoch in range(5)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(52))
    assert all(np.array_equal(P.epoch_order(52, e, seed=11), orders[e]) for e in range(5))
    assert len({tuple(o) for o in orders}) == 5
    assert not np.array_equal(P.epoch_order(52, 0, seed=12), orders[0])
    # Depends only on (seed, epoch): computing epoch 3 first does not change it.
    fresh = P.epoch_order(52, 3, seed=11)
    assert np.array_equal(fresh, orders[3])
    with pytest.raises(ValueError):
        P.epoch_order(52, -1, seed=0)


def test_batch_indices_cover_each_epoch_once_and_resume_anywhere():
    n, size, seed = 52, 8, 5
    steps = P.steps_per_epoch(n, size)
    assert steps == 7 and P.steps_per_epoch(n, size, drop_remainder=True) == 6
    for epoch in range(2):
        batches = [P.batch_indices(n, size, epoch, step, seed) for step in range(steps)]
        assert [len(b) for b in batches] == [8] * 6 + [4]
        assert np.array_equal(np.concatenate(batches), P.epoch_order(n, epoch, seed))
    with pytest.raises(ValueError):
        P.batch_indices(n, size, 0, 6, seed, drop_remainder=True)
    with pytest.raises(ValueError):
        P.batch_indices(n, 0, 0, 0, seed)


def test_mismatched_pairs_pair_each_self_prompt_with_another_items_other_prompt():
    from soo_jax.data.pairs import mismatched_pairs, soo_training_pairs, training_pairs

    matched = soo_training_pairs()
    mismatched = training_pairs("mismatched")
    assert mismatched == mismatched_pairs(matched) and training_pairs("matched") == matched
    assert [p.self_prompt for p in mismatched] == [p.self_prompt for p in matched]
    others = [p.other_prompt for p in matched]
    assert sorted(p.other_prompt for p in mismatched) == sorted(others)  # a permutation of the other prompts
    for i, p in enumerate(mismatched):
        assert others.index(p.other_prompt) != i  # never its own
        item = p.self_prompt.split(" the ", 1)[1].split(".")[0]
        assert item not in p.other_prompt
    with pytest.raises(ValueError, match="pairing"):
        training_pairs("shuffled")
