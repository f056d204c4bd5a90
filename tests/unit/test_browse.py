"""Walking runs for an action on many (`store.browse.each`): filtered, oldest first, a page at a time."""

import json
from datetime import timedelta

from sqlalchemy import event, update

from baton import RunStatus
from baton._ids import new_run_id
from baton.store import utcnow
from baton.store.schema import runs


def create(store, pipeline: str, *, pending: bool = True) -> str:
    run_id, now = new_run_id(), utcnow()
    with store.writer() as w:
        w.create_run(
            run_id=run_id, pipeline=pipeline, target=None, input_json="{}", step_names_json=json.dumps(["a"]),
            owner="celery", now=now, lease_until=None, pending=pending, runtime="celery",
        )  # fmt: skip
    return run_id


def test_each_walks_the_runs_of_a_status_and_pipeline_oldest_first_a_page_at_a_time(store):
    wanted = [create(store, "p") for _ in range(5)]
    create(store, "q")
    create(store, "p", pending=False)  # running
    pages = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: pages.append(a[2]) if "LIMIT" in a[2] else None)

    held = store.engine.pool.checkedout()  # this thread's writer keeps its connection
    walk = store.browse.each(status="pending", pipeline="p", page=2)
    first = next(walk)
    assert store.engine.pool.checkedout() == held  # no more held while the caller works on a run
    found = [first, *walk]
    assert [r.id for r in found] == sorted(wanted)
    assert {(r.pipeline, r.status, r.runtime) for r in found} == {("p", RunStatus.PENDING, "celery")}
    assert len(pages) == 3  # 2 + 2 + 1


def test_each_takes_only_runs_unchanged_since_a_time(store):
    old = [create(store, "p") for _ in range(2)]
    create(store, "p")
    with store.engine.begin() as c:
        c.execute(update(runs).where(runs.c.id.in_(old)).values(updated_at=utcnow() - timedelta(hours=1)))
    found = store.browse.each(status="pending", changed_before=utcnow() - timedelta(minutes=30))
    assert [r.id for r in found] == old
