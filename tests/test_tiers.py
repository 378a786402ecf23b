"""The fast tier's exclusion list names real test modules (a renamed module would silently
rejoin the fast tier)."""

import pathlib

from tests.conftest import SLOW_MODULES

TESTS = pathlib.Path(__file__).resolve().parent


def test_every_slow_module_exists():
    missing = sorted(m for m in SLOW_MODULES if not (TESTS / m).is_file())
    assert not missing, missing
