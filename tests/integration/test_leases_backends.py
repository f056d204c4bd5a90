"""The step-lease cases of `tests/unit/test_leases.py`, on SQLite and on PostgreSQL (whose claim is one
statement of its own)."""

import inspect

import pytest

from tests.unit import test_leases as cases

STORE_CASES = [
    name
    for name, fn in vars(cases).items()
    if name.startswith("test_") and list(inspect.signature(fn).parameters) == ["store"]
]


@pytest.mark.parametrize("case", STORE_CASES)
def test_step_leases_hold_on_every_backend(case, any_store):
    getattr(cases, case)(any_store)
