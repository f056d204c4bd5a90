"""The API's routers, one per resource; `baton.web.app.create_app` includes them (and the dashboard's)."""

from baton.web.routes.events import router as events_router
from baton.web.routes.login import router as login_router
from baton.web.routes.runs import router as runs_router

__all__ = ["events_router", "login_router", "runs_router"]
