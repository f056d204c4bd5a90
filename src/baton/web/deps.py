"""What the routes need, from the app they serve: `create_app` puts it in `app.state`, these hand it over.

Handlers take it as FastAPI dependencies (`store: StoreDep`), so the routers are built once, at import,
and one process may serve several apps (tests do) on different stores.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from jinja2 import Environment

from baton import api
from baton.patterns.registry import find_pattern
from baton.run import Run
from baton.runtime import get_runtime
from baton.status import RunStatus
from baton.store import RunStore
from baton.web.access import Access

__all__ = [
    "AccessDep",
    "Actions",
    "ActionsDep",
    "RuntimeDep",
    "StoreDep",
    "TemplatesDep",
    "app_access",
    "app_actions",
    "app_runtime",
    "app_store",
    "app_templates",
]


# async: run on the event loop, not a worker thread, as they only read the app's state.
async def app_store(request: Request) -> RunStore:
    """The store the app serves."""
    return request.app.state.store


async def app_runtime(request: Request) -> str:
    """The runtime published events and submitted runs execute on."""
    return request.app.state.runtime


async def app_access(request: Request) -> Access:
    """Who may do what on the app."""
    return request.app.state.access


async def app_templates(request: Request) -> Environment:
    """The Jinja environment the app's pages are drawn with."""
    return request.app.state.templates


class Actions:
    """What a person may do to a run, the same through the API and the dashboard's forms."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def resume(self, run_id: str) -> str:
        """Continue a failed or interrupted run where it stopped; its id."""
        recorded = self.store.get_run(run_id)
        pattern = find_pattern(recorded.pipeline, recorded.target)
        if recorded.runtime == "local":
            # Pending at once (a run that cannot resume answers 409), then continued in the background.
            return get_runtime("local").resume_later(self.store, pattern, recorded.id)
        return pattern.resume(recorded.id, store=self.store, runtime=recorded.runtime).id

    def retry(self, run_id: str, from_step: str) -> str:
        """Run a finished run again from `from_step`; its id."""
        recorded = self.store.get_run(run_id)
        pattern = find_pattern(recorded.pipeline, recorded.target)
        return pattern.retry(recorded.id, from_step, store=self.store, runtime=recorded.runtime)

    def cancel(self, run_id: str) -> RunStatus:
        """Cancel a run: at once when idle, after its current step when running."""
        return self.store.request_cancel(run_id)

    def approve(self, run_id: str) -> str:
        """Let a run awaiting approval go on; its id."""
        return api.approve(run_id, store=self.store)

    def reject(self, run_id: str, reason: str) -> Run:
        """Stop a run awaiting approval, cancelled with `reason`."""
        return api.reject(run_id, reason=reason, store=self.store)


async def app_actions(request: Request) -> Actions:
    """The actions on the app's store."""
    return Actions(request.app.state.store)


StoreDep = Annotated[RunStore, Depends(app_store)]
RuntimeDep = Annotated[str, Depends(app_runtime)]
ActionsDep = Annotated[Actions, Depends(app_actions)]
AccessDep = Annotated[Access, Depends(app_access)]
TemplatesDep = Annotated[Environment, Depends(app_templates)]
