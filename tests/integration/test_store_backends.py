"""The same store code on SQLite and PostgreSQL: migrations, JSON readable from SQL, the rules."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import BaseModel
from sqlalchemy import text

from baton import Pipeline, RunStatus, step
from baton.store import RunStore
from baton.store.engine import HEAD_REVISION, current_revision
from baton.store.schema import metadata


class Total(BaseModel):
    total: float


@step
def tally(x: Total) -> Total:
    return Total(total=x.total * 2)


def test_migrations_create_exactly_the_declared_schema(any_store):
    assert current_revision(any_store.engine) == HEAD_REVISION
    with any_store.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    assert diff == []


def test_opening_a_migrated_store_again_changes_nothing(database_url):
    RunStore(database_url).close()
    again = RunStore(database_url)
    assert current_revision(again.engine) == HEAD_REVISION
    again.close()


def test_checkpoints_are_json_that_sql_can_read(any_store):
    run = Pipeline("sql-readable", [tally]).run({"total": 2.5}, store=any_store)
    assert run.status is RunStatus.SUCCEEDED
    if any_store.engine.dialect.name == "postgresql":
        query = "SELECT (output->>'total')::float FROM baton_steps WHERE run_id = :id"
    else:
        query = "SELECT json_extract(output, '$.total') FROM baton_steps WHERE run_id = :id"
    with any_store.engine.connect() as c:
        assert c.execute(text(query), {"id": run.id}).scalar() == 5.0


def test_a_run_round_trips_through_the_store_unchanged(any_store):
    run = Pipeline("round-trip", [tally]).run({"total": 1}, store=any_store)
    assert any_store.runs.get(run.id) == run
