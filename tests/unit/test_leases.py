"""Step leases in the store (what keeps two celery workers off the same step), on a real SQLite file."""

import json
from datetime import timedelta

import pytest

from baton import RunStatus, StepStatus
from baton.run import ErrorInfo
from baton.store import CELERY_OWNER, LostOwnership, StepResult, utcnow
from baton.store.writer import RunWriter

ALIVE = "elsewhere/1:100:1"  # a worker on another machine: only its lease tells whether it lives


def _submit(store, names=("a", "b")) -> str:
    now = utcnow()
    with store.writer() as writer:
        writer.create_run(
            run_id="r1", pipeline="p", target="m:p", input_json='{"x": 1}', step_names_json=json.dumps(list(names)),
            owner=CELERY_OWNER, now=now, lease_until=None, pending=True, runtime="celery",
        )  # fmt: skip
    return "r1"


def _checkpoint(writer: RunWriter, run_id, idx, worker, *, final=False):
    now = utcnow()
    return writer.checkpoint(
        run_id, CELERY_OWNER, idx=idx, name="ab"[idx], attempt=1, output_json='{"x": 2}', started_at=now,
        finished_at=now, final_output='{"x": 2}' if final else None, lease_owner=worker,
    )  # fmt: skip


def test_a_free_step_is_claimed_and_the_run_starts_running(store):
    run_id = _submit(store)
    claim = store.steps.claim(run_id, 0, "w1", utcnow())
    assert (claim.outcome, claim.attempt, claim.pipeline, claim.step_names) == ("claimed", 1, "p", ("a", "b"))
    run = store.runs.get(run_id)
    assert run.status is RunStatus.RUNNING and run.runtime == "celery"
    assert run.steps[0].status is StepStatus.RUNNING
    assert run.steps[1].status is StepStatus.PENDING


def test_a_held_step_is_busy_for_everyone_else(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, ALIVE, utcnow())
    claim = store.steps.claim(run_id, 0, "w2", utcnow())
    assert claim.outcome == "busy" and claim.holder == ALIVE and claim.until > utcnow()


def test_a_live_lease_cannot_be_taken_but_an_expired_one_can_with_the_lost_attempt_kept(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, ALIVE, utcnow())
    assert store.steps.claim(run_id, 0, "w2", utcnow(), take_from=ALIVE, expired=True).outcome == "busy"
    later = utcnow() + store.lease + timedelta(seconds=1)
    claim = store.steps.claim(run_id, 0, "w2", later, take_from=ALIVE, expired=True)
    assert claim.outcome == "claimed" and claim.attempt == 2
    lost = store.runs.get(run_id).steps[0].attempt_errors
    assert [(e.attempt, e.error.type) for e in lost] == [(1, "Interrupted")]
    assert ALIVE in lost[0].error.message


def test_only_the_holder_checkpoints_and_the_lease_ends_with_it(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    with store.writer() as writer:
        with pytest.raises(LostOwnership):
            _checkpoint(writer, run_id, 0, "w2")
        assert _checkpoint(writer, run_id, 0, "w1") is False
    assert store.steps.states(run_id)[0].status is StepStatus.SUCCEEDED
    assert store.steps.states(run_id)[0].holder is None
    assert store.steps.claim(run_id, 0, "w2", utcnow()).outcome == "done"


def test_a_worker_that_lost_its_lease_cannot_overwrite_the_new_holders_checkpoint(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    later = utcnow() + store.lease + timedelta(seconds=1)
    store.steps.claim(run_id, 0, "w2", later, take_from="w1", expired=True)
    with store.writer() as writer:
        _checkpoint(writer, run_id, 0, "w2")
        with pytest.raises(LostOwnership):
            _checkpoint(writer, run_id, 0, "w1")


def test_the_last_checkpoint_ends_the_run_succeeded(store):
    run_id = _submit(store)
    with store.writer() as writer:
        for idx in (0, 1):
            store.steps.claim(run_id, idx, "w1", utcnow())
            _checkpoint(writer, run_id, idx, "w1", final=idx == 1)
    run = store.runs.get(run_id)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"x": 2}


def test_a_retried_failure_gives_the_step_back_and_the_next_claim_counts_an_attempt(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    now = utcnow()
    failed = StepResult(idx=0, name="a", attempt=1, started_at=now, finished_at=now, error=_error())
    store.steps.record_failure(run_id, CELERY_OWNER, failed, retrying=True, lease_owner="w1")
    assert store.steps.states(run_id)[0].status is StepStatus.PENDING
    assert store.steps.claim(run_id, 0, "w2", utcnow()).attempt == 2
    with pytest.raises(LostOwnership):
        store.steps.record_failure(run_id, CELERY_OWNER, failed, retrying=True, lease_owner="w1")


def test_heartbeat_extends_only_the_leases_the_worker_says_it_holds(store):
    run_id = _submit(store, names=("a", "b"))
    store.steps.claim(run_id, 0, "w1", utcnow())
    later = utcnow() + timedelta(seconds=30)
    store.steps.heartbeat("w1", [], later)  # it lost track of the step: the lease is left to run out
    assert store.steps.claim(run_id, 0, "w2", utcnow()).until < later + store.lease - timedelta(seconds=1)
    store.steps.heartbeat("w2", [(run_id, 0)], later)  # not its lease
    assert store.steps.claim(run_id, 0, "w2", utcnow()).until < later + store.lease - timedelta(seconds=1)
    store.steps.heartbeat("w1", [(run_id, 0)], later)
    claim = store.steps.claim(run_id, 0, "w2", utcnow())
    assert claim.until >= later + store.lease - timedelta(seconds=1)


def test_a_released_step_can_be_claimed_again_at_once(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    store.steps.release(run_id, 0, "w2")  # not its lease: nothing happens
    assert store.steps.claim(run_id, 0, "w2", utcnow()).outcome == "busy"
    store.steps.release(run_id, 0, "w1")
    assert store.steps.claim(run_id, 0, "w2", utcnow()).attempt == 2


def test_a_step_that_failed_for_good_is_not_run_again_until_the_run_is_resumed(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    now = utcnow()
    failed = StepResult(idx=0, name="a", attempt=1, started_at=now, finished_at=now, error=_error())
    store.steps.record_failure(run_id, CELERY_OWNER, failed, retrying=False, end_run=False, lease_owner="w1")
    assert store.steps.claim(run_id, 0, "w2", utcnow()).outcome == "failed"  # a late copy of its message
    store.runs.end_failed(run_id, CELERY_OWNER, "a")
    run = store.runs.get(run_id)
    assert store.runs.reopen(run_id, claims=run.claims, runtime="celery", now=utcnow())
    assert store.steps.claim(run_id, 0, "w2", utcnow()).attempt == 2


def test_a_take_over_counts_the_attempts_lost_with_their_workers(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    later = utcnow() + store.lease + timedelta(seconds=1)
    assert store.steps.claim(run_id, 0, "w2", later, take_from="w1", expired=True).lost == 1
    much_later = later + store.lease + timedelta(seconds=1)
    assert store.steps.claim(run_id, 0, "w3", much_later, take_from="w2", expired=True).lost == 2


def test_a_claim_on_a_cancelled_or_ended_run_takes_nothing(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    store.runs.cancel(run_id)  # w1 still holds step 0: the cancel waits for it
    assert store.steps.claim(run_id, 1, "w2", utcnow()).outcome == "cancel"
    store.runs.end_cancelled(run_id, CELERY_OWNER)
    assert store.steps.claim(run_id, 1, "w2", utcnow()).outcome == "gone"


def test_cancelling_a_celery_run_no_worker_holds_ends_it_at_once(store):
    run_id = _submit(store)
    assert store.runs.cancel(run_id) is RunStatus.CANCELLED
    assert store.steps.claim(run_id, 0, "w1", utcnow()).outcome == "gone"


def test_the_reaper_leaves_celery_runs_to_the_broker(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    assert store.runs.reap() == []
    assert store.runs.get(run_id).status is RunStatus.RUNNING


def _error():
    from baton.run import ErrorInfo

    return ErrorInfo(type="TransientError", message="busy")


# -- lost work and the fence ----------------------------------------------------------------------------


def test_a_message_sent_before_the_run_was_queued_again_claims_nothing(store):
    run_id = _submit(store)
    assert store.runs.refence(run_id, 0, utcnow())  # the sweeper queued it again: fence 0 -> 1
    assert store.steps.claim(run_id, 0, "w1", utcnow(), fence=0).outcome == "gone"
    assert store.runs.get(run_id).status is RunStatus.PENDING  # the stale claim did not even start it
    assert store.steps.claim(run_id, 0, "w1", utcnow(), fence=1).outcome == "claimed"


def test_a_stale_message_cannot_take_a_step_over_either(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, ALIVE, utcnow(), fence=0)
    later = utcnow() + store.lease + timedelta(seconds=1)
    assert store.runs.refence(run_id, 0, later)
    stale = store.steps.claim(run_id, 0, "w2", later, take_from=ALIVE, expired=True, fence=0)
    assert stale.outcome == "gone"
    assert store.steps.claim(run_id, 0, "w2", later, take_from=ALIVE, expired=True, fence=1).outcome == "claimed"


def test_only_one_of_two_sweepers_queues_a_lost_run_again(store):
    run_id = _submit(store)
    assert store.runs.refence(run_id, 0, utcnow())
    assert not store.runs.refence(run_id, 0, utcnow())  # the second found the fence moved


def test_a_run_is_lost_when_its_holders_lease_ran_out_and_not_while_it_holds(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    assert store.runs.lost(utcnow(), quiet=None) == []  # held, its lease live
    later = utcnow() + store.lease + timedelta(seconds=1)
    [lost] = store.runs.lost(later, quiet=None)
    assert (lost.id, lost.claims, lost.why, lost.pipeline, lost.target) == (run_id, 0, "lease", "p", "m:p")
    assert not store.runs.refence(run_id, 0, utcnow())  # still held right now: not to be taken back


def test_a_quiet_run_is_lost_only_past_the_bound_and_a_retrys_countdown(store):
    run_id = _submit(store)
    quiet = timedelta(seconds=10)
    assert store.runs.lost(utcnow(), quiet=quiet) == []  # just queued
    assert [r.why for r in store.runs.lost(utcnow() + timedelta(seconds=11), quiet=quiet)] == ["quiet"]
    # Between two steps: the last checkpoint is what it waits from.
    store.steps.claim(run_id, 0, "w1", utcnow())
    with store.writer() as writer:
        _checkpoint(writer, run_id, 0, "w1")
    assert store.runs.lost(utcnow() + timedelta(seconds=5), quiet=quiet) == []
    assert len(store.runs.lost(utcnow() + timedelta(seconds=11), quiet=quiet)) == 1
    # A retry whose countdown runs for a minute is not lost before it is due.
    claim = store.steps.claim(run_id, 1, "w1", utcnow())
    now = utcnow()
    failed = StepResult(idx=1, name="b", attempt=claim.attempt, started_at=now, finished_at=now,
                        error=ErrorInfo(type="TransientError", message="later"))  # fmt: skip
    store.steps.record_failure(
        run_id, CELERY_OWNER, failed, retrying=True, lease_owner="w1", wake_at=now + timedelta(seconds=60)
    )
    assert store.runs.lost(now + timedelta(seconds=30), quiet=quiet) == []
    assert len(store.runs.lost(now + timedelta(seconds=71), quiet=quiet)) == 1
    # Ended runs are nobody's to queue again.
    store.runs.cancel(run_id)
    assert store.runs.lost(now + timedelta(seconds=100), quiet=quiet) == []


def test_a_checkpoint_that_committed_is_recognised_as_done(store):
    run_id = _submit(store)
    store.steps.claim(run_id, 0, "w1", utcnow())
    assert not store.steps.checkpointed(run_id, 0, 1)
    with store.writer() as writer:
        _checkpoint(writer, run_id, 0, "w1")
        with pytest.raises(LostOwnership):
            _checkpoint(writer, run_id, 0, "w1")  # written again after its connection broke: refused...
    assert store.steps.checkpointed(run_id, 0, 1)  # ...and known to be there
    assert not store.steps.checkpointed(run_id, 0, 2)
