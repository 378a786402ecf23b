"""The run configs of the paper's three models, by the names of `soo_jax.models.shapes`.

Each model's paper recipe lives in its run config, the one source the benchmarks and the scale
plan read (no copies that could drift).
"""

from __future__ import annotations

import importlib

import ml_collections

PAPER_CONFIG_MODULES = {
    "mistral-7b": "configs.mistral",
    "gemma-2-27b": "configs.gemma2",
    "calmerys-78b": "configs.calmerys",
}


def paper_config(name: str) -> ml_collections.ConfigDict:
    """The run config of the paper's recipe for `name` (a key of soo_jax.models.shapes.HF_CONFIGS)."""
    if name not in PAPER_CONFIG_MODULES:
        raise KeyError(f"unknown model {name!r}; known: {sorted(PAPER_CONFIG_MODULES)}")
    return importlib.import_module(PAPER_CONFIG_MODULES[name]).get_config()
