"""What the routes need, from the app they serve: `create_app` puts it in `app.state`, these hand it over.

Handlers take it as FastAPI dependencies (`store: StoreDep`), so the routers are built once, at import,
and one process may serve several apps (tests do) on different stores.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from jinja2 import Environment

from baton.store import RunStore
from baton.web.access import Access
from baton.web.actions import Actions

__all__ = [
    "AccessDep",
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


async def app_actions(request: Request) -> Actions:
    """The actions on the app's store."""
    return Actions(request.app.state.store)


StoreDep = Annotated[RunStore, Depends(app_store)]
RuntimeDep = Annotated[str, Depends(app_runtime)]
ActionsDep = Annotated[Actions, Depends(app_actions)]
AccessDep = Annotated[Access, Depends(app_access)]
TemplatesDep = Annotated[Environment, Depends(app_templates)]
