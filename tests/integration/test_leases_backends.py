"""The step-lease cases of `tests/unit/test_leases.py`, on SQLite and on PostgreSQL (whose claim is one
statement of its own)."""

import inspect
import threading
import time

import pytest
from sqlalchemy import event

from baton import RunStatus
from baton.store import utcnow
from tests.unit import test_leases as cases

STORE_CASES = [
    name
    for name, fn in vars(cases).items()
    if name.startswith("test_") and list(inspect.signature(fn).parameters) == ["store"]
]


@pytest.mark.parametrize("case", STORE_CASES)
def test_step_leases_hold_on_every_backend(case, any_store):
    getattr(cases, case)(any_store)


def test_a_claim_racing_a_cancel_never_starts_a_step_of_a_cancelled_run(any_store):
    store = any_store
    run_id = cases._submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    with store.writer() as writer:
        cases._checkpoint(writer, run_id, 0, "w1")  # between two steps: no worker holds one
    entered, release = threading.Event(), threading.Event()

    def slow_commit(_conn):
        if threading.current_thread().name == "cancel":
            entered.set()
            release.wait(5)  # the cancel has written its update and not yet committed

    event.listen(store.engine, "commit", slow_commit)
    results = {}
    cancel = threading.Thread(target=lambda: results.setdefault("cancel", store.runs.cancel(run_id)), name="cancel")
    cancel.start()
    assert entered.wait(5)
    claim = threading.Thread(target=lambda: results.setdefault("claim", store.steps.claim(run_id, 1, "w2", utcnow())))
    claim.start()
    time.sleep(0.3)  # the claim is waiting for the run's lock, or has already read it
    release.set()
    cancel.join(10)
    claim.join(10)
    event.remove(store.engine, "commit", slow_commit)
    assert results["cancel"] is RunStatus.CANCELLED
    assert results["claim"].outcome == "gone"
    assert store.steps.states(run_id).get(1) is None
