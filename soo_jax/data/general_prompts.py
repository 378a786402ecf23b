"""The fixed general prompts (`general_prompts.json`) for the capability-retention KL measure."""
from __future__ import annotations

import dataclasses
import importlib.resources
import json
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class GeneralPrompt:
    id: str
    category: str
    prompt: str


def load_general_prompt_records(categories: Sequence[str] | None = None) -> list[GeneralPrompt]:
    """All packaged prompts in file order, or only those of the given categories."""
    text = (importlib.resources.files("soo_jax.data") / "general_prompts.json").read_text(
        encoding="utf-8")
    records = [GeneralPrompt(**row) for row in json.loads(text)["prompts"]]
    if categories is None:
        return records
    unknown = set(categories) - {r.category for r in records}
    if unknown:
        raise ValueError(f"unknown prompt categories: {sorted(unknown)}")
    return [r for r in records if r.category in set(categories)]


def load_general_prompts(categories: Sequence[str] | None = None) -> list[str]:
    """The prompt texts of `load_general_prompt_records`."""
    return [r.prompt for r in load_general_prompt_records(categories)]
