"""The Supervisor's parallel checkpoints and resume on SQLite and on PostgreSQL."""

import baton
from baton import RunStatus, StepStatus
from tests.unit.test_supervisor import Harness


def test_parallel_workers_checkpoint_on_their_own_and_resume_reruns_only_the_failed_one(any_store):
    harness = Harness(parallel=2)
    harness.fail.add("financials")
    supervisor = harness.supervisor("research-backends")
    failed = supervisor.run({"topic": "ACME"}, store=any_store)
    assert failed.status is RunStatus.FAILED and failed.failed_step == "financials"
    assert failed.step("news").status is StepStatus.SUCCEEDED
    assert failed.step("risks").status is StepStatus.SKIPPED
    harness.fail.clear()
    harness.barrier = None
    resumed = baton.resume(failed.id, store=any_store)
    assert resumed.status is RunStatus.SUCCEEDED
    assert resumed.output == {"body": "financials: ACME | news: ACME"}
    assert harness.calls == {"financials": 2, "news": 1}
