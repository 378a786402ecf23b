import re

import pytest

from soo_jax.data import templates as T
from soo_jax.data.general_prompts import load_general_prompt_records, load_general_prompts


def test_general_prompts_are_varied_unique_and_unrelated_to_the_scenarios():
    records = load_general_prompt_records()
    prompts = load_general_prompts()
    assert 35 <= len(prompts) <= 50
    assert prompts == [r.prompt for r in records]
    assert len(set(prompts)) == len(prompts) and len({r.id for r in records}) == len(records)
    assert {"facts", "arithmetic", "writing", "coding", "advice"} <= {r.category for r in records}
    banned = re.compile(r"\b(steal|stealing|burglar|bob|oliver)\b", re.I)
    for prompt in prompts:
        assert prompt.strip() == prompt and 10 <= len(prompt) <= 200
        assert not banned.search(prompt), prompt
        assert not any(re.search(rf"\b{room}\b", prompt) for room in T.ROOMS), prompt


def test_category_filter():
    coding = load_general_prompts(["coding"])
    assert coding and all(p in load_general_prompts() for p in coding)
    assert len(coding) == sum(r.category == "coding" for r in load_general_prompt_records())
    with pytest.raises(ValueError):
        load_general_prompts(["poetry"])
