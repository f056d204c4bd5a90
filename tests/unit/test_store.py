"""The store's rules, on a real SQLite file: fencing, reaping dead owners, leases."""

import json
import subprocess
import sys
from datetime import timedelta

import pytest

from baton import RunStatus, StepStatus
from baton._owner import owner_alive, this_owner
from baton.run import ErrorInfo
from baton.store import LostOwnership, StepResult, utcnow


def dead_owner() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    machine = this_owner().rsplit(":", 2)[0]
    return f"{machine}:{proc.pid}:12345"


def create(store, owner, run_id="01" * 16, names=("a", "b"), pending=False):
    now = utcnow()
    with store.writer() as w:
        w.create_run(
            run_id=run_id,
            pipeline="p",
            target=None,
            input_json='{"n": 1}',
            step_names_json=json.dumps(list(names)),
            owner=owner,
            now=now,
            lease_until=now + store.lease,
            pending=pending,
        )
    return run_id


def expire_lease(store, run_id):
    with store.engine.begin() as c:
        c.exec_driver_sql(
            "UPDATE baton_runs SET lease_expires_at = ? WHERE id = ?",
            ((utcnow() - timedelta(seconds=1)).isoformat(" "), run_id),
        )


def checkpoint(store, run_id, owner, idx, final=False):
    now = utcnow()
    with store.writer() as w:
        return w.checkpoint(
            run_id,
            owner,
            idx=idx,
            name="ab"[idx],
            attempt=1,
            output_json='{"n": 2}',
            started_at=now,
            finished_at=now,
            final_output='{"n": 2}' if final else None,
        )


def test_a_checkpoint_is_refused_to_a_process_that_no_longer_owns_the_run(store):
    run_id = create(store, this_owner())
    with pytest.raises(LostOwnership):
        checkpoint(store, run_id, "someone-else:1:1", 0)
    assert store.runs.get(run_id).steps[0].status is StepStatus.RUNNING


def test_the_last_checkpoint_ends_the_run_succeeded(store):
    run_id = create(store, this_owner())
    assert checkpoint(store, run_id, this_owner(), 0) is False
    checkpoint(store, run_id, this_owner(), 1, final=True)
    run = store.runs.get(run_id)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"n": 2}


def test_a_checkpoint_reports_a_requested_cancel(store):
    run_id = create(store, this_owner())
    assert store.runs.cancel(run_id) is RunStatus.RUNNING
    assert checkpoint(store, run_id, this_owner(), 0) is True


def test_a_run_whose_process_died_is_seen_interrupted(store):
    run_id = create(store, dead_owner())
    store.runs.reap(run_id)
    run = store.runs.get(run_id)
    assert run.status is RunStatus.INTERRUPTED and run.failed_step == "a"
    assert run.steps[0].status is StepStatus.INTERRUPTED
    assert run.steps[0].error.type == "Interrupted"
    assert run.steps[1].status is StepStatus.PENDING


def test_a_live_owner_keeps_its_run_running(store):
    run_id = create(store, this_owner())
    assert store.runs.reap() == []
    assert store.runs.get(run_id).status is RunStatus.RUNNING


def test_an_owner_on_another_host_is_judged_by_its_lease(store):
    run_id = create(store, "another-host:42:7")
    assert store.runs.reap() == []
    expire_lease(store, run_id)
    assert store.runs.reap() == [run_id]


def test_the_heartbeat_extends_the_lease(store):
    run_id = create(store, "another-host:42:7")
    expire_lease(store, run_id)
    store.runs.heartbeat("another-host:42:7", [run_id])
    assert store.runs.reap() == []
    with store.engine.connect() as c:
        lease = c.exec_driver_sql("SELECT lease_expires_at FROM baton_runs").scalar()
    assert lease > (utcnow() + timedelta(seconds=30)).isoformat(" ")


def test_a_live_process_that_stopped_renewing_its_lease_loses_its_run(store):
    # A run claimed by this (live) process but not executing, e.g. a thread that died between claim and
    # execution: no heartbeat renews it, so it must not stay "running" for as long as the process lives.
    run_id = create(store, this_owner())
    expire_lease(store, run_id)
    assert store.runs.reap() == [run_id]
    assert store.runs.get(run_id).status is RunStatus.INTERRUPTED


def test_reaping_never_erases_a_checkpoint(store):
    owner = "another-host:42:7"
    run_id = create(store, owner)
    checkpoint(store, run_id, owner, 0)
    expire_lease(store, run_id)
    assert store.runs.reap() == [run_id]
    run = store.runs.get(run_id)
    assert run.steps[0].status is StepStatus.SUCCEEDED and run.steps[0].output == {"n": 2}
    assert run.steps[1].status is StepStatus.INTERRUPTED
    with pytest.raises(LostOwnership):  # the owner, back too late, cannot write any more
        checkpoint(store, run_id, owner, 1)


def test_a_failure_from_a_process_that_lost_the_run_writes_nothing(store):
    owner = "another-host:42:7"
    run_id = create(store, owner)
    expire_lease(store, run_id)
    store.runs.reap()
    now = utcnow()
    failure = StepResult(idx=1, name="b", attempt=1, started_at=now, finished_at=now, error=ErrorInfo("E", "m"))
    for retrying in (True, False):
        with pytest.raises(LostOwnership):
            store.steps.record_failure(run_id, owner, failure, retrying=retrying)
    with pytest.raises(LostOwnership):
        store.steps.start_attempt(run_id, owner, 1, 2)
    run = store.runs.get(run_id)
    assert run.status is RunStatus.INTERRUPTED
    assert all(not s.attempt_errors for s in run.steps)


def test_a_resume_claims_only_the_run_it_planned_from(store):
    run_id = create(store, dead_owner())
    store.runs.reap(run_id)
    seen = store.runs.get(run_id)
    assert seen.status is RunStatus.INTERRUPTED
    statuses = [RunStatus.INTERRUPTED, RunStatus.FAILED]
    assert store.runs.claim(run_id, this_owner(), start_idx=0, attempt=2, statuses=statuses, claims=seen.claims)
    store.runs.reap_owned(run_id, this_owner(), "stopped again")
    # A second resumer that read the run before the first one claimed it must not act on that stale plan.
    assert not store.runs.claim(run_id, this_owner(), start_idx=0, attempt=2, statuses=statuses, claims=seen.claims)


def test_a_new_claim_forgets_an_old_cancel_request(store):
    run_id = create(store, this_owner())
    assert store.runs.cancel(run_id) is RunStatus.RUNNING
    store.runs.reap_owned(run_id, this_owner(), "killed")
    run = store.runs.get(run_id)
    assert run.status is RunStatus.INTERRUPTED and run.cancel_requested
    assert store.runs.claim(run_id, this_owner(), start_idx=0, attempt=2, statuses=["interrupted"], claims=run.claims)
    assert store.runs.get(run_id).cancel_requested is False


def test_a_pending_run_whose_submitter_died_becomes_resumable(store):
    run_id = create(store, dead_owner(), pending=True)
    store.runs.reap(run_id)
    run = store.runs.get(run_id)
    assert run.status is RunStatus.INTERRUPTED
    assert [s.status for s in run.steps] == [StepStatus.PENDING, StepStatus.PENDING]


def test_owner_alive_knows_this_process_and_a_dead_one():
    assert owner_alive(this_owner()) is True
    assert owner_alive(dead_owner()) is False
    assert owner_alive("elsewhere:1:1") is None


def test_reading_a_run_never_writes_and_reaping_is_asked_for(store):
    run_id = create(store, dead_owner())
    assert store.runs.get(run_id).status is RunStatus.RUNNING
    assert [r.status for r in store.runs.list()] == [RunStatus.RUNNING]
    assert store.runs.reap(run_id[:8]) == [run_id]
    assert store.runs.get(run_id).status is RunStatus.INTERRUPTED


def test_writes_in_one_transaction_are_kept_or_lost_together(store):
    run_id = create(store, this_owner())
    now = utcnow()
    failure = StepResult(idx=0, name="a", attempt=1, started_at=now, finished_at=now, error=ErrorInfo("E", "m"))
    with pytest.raises(RuntimeError), store.transaction() as tx:
        store.steps.record_failure(run_id, this_owner(), failure, retrying=False, conn=tx)
        assert store.runs.get(run_id, conn=tx).status is RunStatus.FAILED  # seen inside the transaction
        raise RuntimeError("the caller's next write failed")
    run = store.runs.get(run_id)
    assert run.status is RunStatus.RUNNING and not run.steps[0].attempt_errors
    with store.transaction() as tx:
        store.steps.add_attempt(run_id, failure, retried=True, conn=tx)
        store.runs.end_cancelled(run_id, this_owner(), conn=tx)
    run = store.runs.get(run_id)
    assert run.status is RunStatus.CANCELLED and run.steps[0].attempt_errors[0].error.type == "E"


def test_a_step_error_goes_to_its_columns_and_back_whole():
    from baton.store.rows import STEP_ERROR_COLUMNS, error_columns, error_from_row

    error = ErrorInfo("Invalid", "bad", "tb", raw_output="{}", validation_errors=({"loc": ["x"]},))
    columns = error_columns(error)
    assert tuple(columns) == STEP_ERROR_COLUMNS
    assert error_from_row(columns) == error
    assert error_from_row(error_columns(None)) is None
