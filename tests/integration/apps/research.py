"""A supervisor whose router, workers and merge obey the same switches as `controlled.py`, for runs on
worker processes.

The input names the workers to call; `<name>.count`, `<name>.fail` and `<name>.block` in BATON_TEST_DIR work
as in `controlled.py`. `<name>.transient` holds how many more times the step fails with a TransientError.
A topic of "route-to-nowhere" makes the router name a worker that does not exist.
"""

from pydantic import BaseModel, Field

# Beside this file: found when baton loads it by path, as workers do.
from switches import _control, _transient

from baton import Pipeline, Retry, Supervisor, step


class Ask(BaseModel):
    topic: str = Field(max_length=100)
    want: list[str] = Field(max_length=3)


class Query(BaseModel):
    q: str = Field(max_length=200)


class Finding(BaseModel):
    text: str = Field(max_length=500)


class Plan(BaseModel):
    financials: Query | None = None
    news: Query | None = None
    risks: Query | None = None


class Found(BaseModel):
    financials: Finding | None = None
    news: Finding | None = None
    risks: Finding | None = None


class Report(BaseModel):
    body: str = Field(max_length=2000)


@step(retry=Retry(max_attempts=1))
def plan(ask: Ask) -> Plan:
    _control("plan")
    if ask.topic == "route-to-nowhere":
        return {"weather": {"q": ask.topic}}  # type: ignore[return-value]
    return Plan(**{name: Query(q=ask.topic) for name in ask.want})


def _worker(name: str):
    # Quick retries, so a flaky source costs the tests half a second.
    @step(name=name, retry=Retry(max_attempts=4, backoff=0.2, max_delay=1.0))
    def body(query: Query) -> Finding:
        _control(name)
        _transient(name)
        return Finding(text=f"{name}: {query.q}")

    return body


@step(retry=Retry(max_attempts=3, backoff=0.2, max_delay=1.0))
def draft(found: Found) -> Report:
    _control("draft")
    _transient("draft")
    parts = [f.text for f in (found.financials, found.news, found.risks) if f is not None]
    return Report(body=" | ".join(parts))


research = Supervisor(
    "research",
    router=plan,
    workers={"financials": _worker("financials"), "news": _worker("news"), "risks": _worker("risks")},
    merge=draft,
)


class Note(BaseModel):
    text: str = Field(max_length=200)


@step(retry=Retry(max_attempts=2, backoff=3.0, max_delay=3.0, jitter=False))
def flaky_fetch(note: Note) -> Note:
    """Fails once transiently when `flaky_fetch.transient` says so, then waits 3 s before its retry."""
    _control("flaky_fetch")
    _transient("flaky_fetch")
    return Note(text=note.text + " fetched")


@step(retry=Retry(max_attempts=2, backoff=8.0, max_delay=8.0, jitter=False))
def patient_fetch(note: Note) -> Note:
    """`flaky_fetch`, waiting 8 s before its retry: longer than another run takes through the CLI (a process
    to start it, and one per look at it) on a loaded machine."""
    return flaky_fetch.fn(note)


slow_retry = Pipeline("slow-retry", [patient_fetch])


@step(retry=Retry(max_attempts=1))
def lead(note: Note) -> Note:
    _control("lead")
    return note


# A step before the slow retry: retried from `lead`, the run must not let the old countdown's message in.
slow_tail = Pipeline("slow-tail", [lead, flaky_fetch])
