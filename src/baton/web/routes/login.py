"""Signing in to the dashboard with its token (a cookie), and out."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment

from baton.web.access import COOKIE, Access
from baton.web.deps import AccessDep, TemplatesDep

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, env: TemplatesDep, next: str = "/ui/runs", why: str | None = None) -> Response:
    """The sign-in form; `why` says what needed it, `next` is where to go after."""
    return _login(env, request, next, why)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, access: AccessDep, env: TemplatesDep, token: str = Form(""), next: str = Form("/ui/runs")
) -> Response:
    """Sign in: the session cookie and on to `next`, or the form again."""
    refused = "that token is not the dashboard token"
    return _signed_in(access, token, next) or _login(env, request, next, refused, 401)


@router.post("/logout")
def logout() -> RedirectResponse:
    """Sign out: the session cookie is dropped."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def _safe_next(target: str) -> str:
    # Only a path of this server: a sign-in link must not send the browser elsewhere.
    return target if target.startswith("/") and not target.startswith("//") else "/ui/runs"


def _signed_in(access: Access, token: str, target: str) -> RedirectResponse | None:
    if not access.check_token(token.strip()):
        return None
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(COOKIE, access.session, httponly=True, samesite="strict", path="/")
    return response


def _login(env: Environment, request: Request, target: str, why: str | None, status_code: int = 200) -> HTMLResponse:
    html = env.get_template("login.html").render(request=request, next=_safe_next(target), why=why)
    return HTMLResponse(html, status_code=status_code)
