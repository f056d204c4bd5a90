"""Finding a pattern from a target string: `package.module:name` or `path/to/file.py:name`."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import pkgutil
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from baton.errors import UserError

__all__ = ["load_target", "normalize_target"]


def _split(target: str) -> tuple[str, str]:
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise UserError(f"target {target!r} must look like 'package.module:name' or 'path/to/file.py:name'")
    return where, name


def _is_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def normalize_target(target: str) -> str:
    """The target with a file path made absolute, so that it can be loaded again from anywhere."""
    where, name = _split(target)
    if _is_path(where):
        return f"{Path(where).resolve()}:{name}"
    return target


def load_target(target: str) -> Any:
    """Import the object a target names."""
    where, name = _split(target)
    module = _load_file(where) if _is_path(where) else _import(where)
    try:
        return getattr(module, name)
    except AttributeError:
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        raise UserError(f"{where} has no attribute {name!r}{_did_you_mean(name, names)}") from None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    """ "; did you mean 'X'?" for the choice closest to `word`, or "" when none is close."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _close_module(module_name: str, missing: str) -> str:
    """The hint for a mistyped module: its missing part's closest sibling (in its parent package, or at the
    top level), in the whole name the user gave."""
    parent, _, last = missing.rpartition(".")
    try:
        where = importlib.import_module(parent).__path__ if parent else None
    except (ImportError, AttributeError):  # the parent is no package: nothing to look through
        return ""
    siblings = (m.name for m in pkgutil.iter_modules(where))
    close = difflib.get_close_matches(last, sorted(set(siblings)), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {(parent + '.' if parent else '') + close[0] + module_name[len(missing) :]!r}?"


def _import(module_name: str) -> Any:
    # Like `python -m`, let a module in the current directory be found.
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            hint = _close_module(module_name, exc.name)
            raise UserError(f"cannot import module {module_name!r}: {exc}{hint}") from None
        raise


# Loading a file puts its module in sys.modules before running it (so that it can import itself); a thread
# must not take that half-made module for the loaded one. Re-entrant: a file may load another.
_file_lock = threading.RLock()


def _load_file(path_text: str) -> Any:
    with _file_lock:
        return _load_file_locked(path_text)


def _load_file_locked(path_text: str) -> Any:
    path = Path(path_text).resolve()
    if not path.is_file():
        files = [p.name for p in path.parent.glob("*.py")] if path.parent.is_dir() else []
        close = difflib.get_close_matches(path.name, sorted(files), n=1, cutoff=0.6)
        hint = f"; did you mean {str(Path(path_text).with_name(close[0]))!r}?" if close else ""
        raise UserError(f"no such file: {path}{hint}")
    # A stable module name per file, so that loading it twice gives the same module (and the same classes).
    module_name = f"baton_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    # Imports next to the file (helpers, contracts) should work as they do when the file is run directly.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
