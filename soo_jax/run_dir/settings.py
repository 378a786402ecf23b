"""Settings: flat {"section.key": JSON value} dicts, so differences name keys as the CLI spells them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": (1, 2)}} -> {"a.b": [1, 2]} (JSON-normal values: tuples become lists)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.loads(json.dumps(value, default=str))
    return flat


def without(settings: Mapping[str, Any], ignored: Iterable[str]) -> dict[str, Any]:
    """`settings` less the keys equal to, or under, any of `ignored` ("eval" drops "eval.x")."""
    ignored = tuple(ignored)
    return {k: v for k, v in settings.items()
            if not any(k == i or k.startswith(i + ".") for i in ignored)}


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'key: stored -> current' for every key whose value differs (or exists on one side only)."""
    missing = object()
    out = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key, missing), current.get(key, missing)
        if old != new:
            show = lambda v: "(unset)" if v is missing else json.dumps(v)  # noqa: E731
            out.append(f"{key}: {show(old)} -> {show(new)}")
    return out
