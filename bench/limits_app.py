"""The 3-agent pipeline that `limits.py` runs, and the rate limit it declares when asked to.

The agents are `concurrency_app.py`'s (extract -> summarise -> classify a support ticket, on
`openai:bench-model`), each with `Retry(max_attempts=ATTEMPTS)`, so that runs that meet 429s without a limit
declared still finish: a 429 is a transient provider error, retried after at least its `Retry-After`.

A module of its own so that the celery workers import the same pipeline and the same limit (`baton worker
--import bench/limits_app.py`): with `BENCH_LIMITS_RPM` set in its environment, importing it declares
`baton.limit("openai:bench-model", rpm=...)`, in the driving process and in every worker alike.
"""

from __future__ import annotations

import os

from concurrency_app import MODEL, STAGES, ticket

import baton
from baton import Agent, Pipeline, Retry

__all__ = ["ATTEMPTS", "MODEL", "PIPELINE", "RPM_VARIABLE", "declare_limit", "ticket"]

ATTEMPTS = 50
RPM_VARIABLE = "BENCH_LIMITS_RPM"

PIPELINE = Pipeline(
    "bench-limits",
    [
        Agent(name, instructions=instructions, input=inp, output=out, model=f"openai:{MODEL}",
              retry=Retry(max_attempts=ATTEMPTS))
        for name, instructions, inp, out in STAGES
    ],
)  # fmt: skip


def declare_limit() -> None:
    """`baton.limit("openai:bench-model", rpm=N)` when `BENCH_LIMITS_RPM` is N; nothing when it is unset."""
    rpm = os.environ.get(RPM_VARIABLE)
    if not rpm:
        return
    baton.limit(f"openai:{MODEL}", rpm=int(rpm))


declare_limit()
