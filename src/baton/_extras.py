"""The extras: what each optional part of baton imports, and the check that names the extra to install.

The distribution is `baton-llm` (the name `baton` on the package index is another project's); the import and
the command are `baton`.
"""

from __future__ import annotations

import importlib.util
import sys

from baton.errors import MissingExtra

__all__ = ["DISTRIBUTION", "EXTRAS", "require"]

DISTRIBUTION = "baton-llm"

# Each extra's modules by import name; a tuple inside is alternatives (python-multipart renamed its module).
EXTRAS: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "serve": ("fastapi", "starlette", "uvicorn", "jinja2", ("python_multipart", "multipart")),
    "celery": ("celery", "kombu"),
    "openai": ("openai",),
    "anthropic": ("anthropic",),
}


def require(extra: str, what: str) -> None:
    """Raise `MissingExtra` (naming `what`, the extra and its pip line) unless `extra`'s modules are installed."""
    for module in EXTRAS[extra]:
        names = module if isinstance(module, tuple) else (module,)
        if not any(_installed(name) for name in names):
            raise MissingExtra(what, extra, names[0])


def _installed(name: str) -> bool:
    if name in sys.modules:  # imported already (None: blocked, as `sys.modules[name] = None` does)
        return sys.modules[name] is not None
    # Found, not imported: the check is cheap, and the import that follows reports a broken install as it is.
    return importlib.util.find_spec(name) is not None
