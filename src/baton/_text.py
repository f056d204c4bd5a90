"""Text the store keeps only for people to read: error messages, tracebacks, a model's raw answer."""

from __future__ import annotations

from typing import Any

__all__ = ["NUL_SHOWN", "storable", "storable_values"]

# How a NUL character is written in such text: PostgreSQL refuses NUL in text, and nobody parses this text
# back, so it is shown the way JSON escapes it rather than refused (an error must always be recordable).
NUL_SHOWN = "\\u0000"


def storable(text: str | None) -> str | None:
    """`text` with each NUL character written as `\\u0000`, so that every store can keep it."""
    if text is None or "\x00" not in text:
        return text
    return text.replace("\x00", NUL_SHOWN)


def storable_values(entry: dict[str, Any]) -> dict[str, Any]:
    """A dict (a contract error's field, message and type) with its strings made `storable`."""
    if not any(isinstance(v, str) and "\x00" in v for v in entry.values()):
        return entry
    return {k: storable(v) if isinstance(v, str) else v for k, v in entry.items()}
