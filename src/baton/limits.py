"""What baton accepts as a run's or an event's input, the same from `baton run --input` and the HTTP API.

An input is at most `MAX_INPUT_BYTES` of UTF-8 JSON, nested at most `MAX_DEPTH` arrays and objects deep,
with integers of at most `MAX_INT_DIGITS` digits and finite numbers only. Past a limit it is refused before
any run starts, with one line that says which limit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import IO, Any

from baton.errors import UserError

__all__ = ["MAX_DEPTH", "MAX_INPUT_BYTES", "MAX_INT_DIGITS", "InputRefused", "parse_json", "read_bounded"]

# 10 MiB: far more than a contract's bounded fields hold, and a body the server can read without worry.
MAX_INPUT_BYTES = 10 * 1024 * 1024
# Arrays and objects inside each other; real inputs nest a few levels, and Python's own parser (and every
# later walk of the value) recurses, so a deep one would fail far from here.
MAX_DEPTH = 64
# Digits of one integer (a 64-bit id has 20); Python refuses past 4,300 with a message about its settings.
MAX_INT_DIGITS = 100


class InputRefused(UserError):
    """An input past one of baton's limits on inputs (size, nesting, integer digits), or not UTF-8 JSON."""


def read_bounded(stream: IO[bytes], *, what: str) -> bytes:
    """At most `MAX_INPUT_BYTES` read from `stream`; refused, naming `what`, when there is more."""
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise InputRefused(f"{what} is larger than {_size(MAX_INPUT_BYTES)}, baton's limit on an input")
    return data


def parse_json(data: bytes | str, *, what: str = "the input") -> Any:
    """`data` parsed as JSON within baton's limits on inputs; `InputRefused` names `what` and the limit.

    Text that is not JSON at all raises `json.JSONDecodeError`, as `json.loads` does.
    """
    if len(data) > MAX_INPUT_BYTES:
        raise InputRefused(f"{what} is larger than {_size(MAX_INPUT_BYTES)}, baton's limit on an input")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputRefused(f"{what} is not UTF-8 (byte {exc.start} is {data[exc.start]:#04x})") from None
    try:
        value = json.loads(data, parse_int=_int(what), parse_float=_float(what), parse_constant=_constant(what))
    except RecursionError:
        raise InputRefused(_too_deep(what)) from None
    if _depth_over(value, MAX_DEPTH):
        raise InputRefused(_too_deep(what))
    return value


def _int(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if len(text.lstrip("-")) > MAX_INT_DIGITS:
            digits = len(text.lstrip("-"))
            raise InputRefused(f"{what} has an integer of {digits} digits; baton accepts at most {MAX_INT_DIGITS}")
        return int(text)

    return parse


def _float(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise InputRefused(f"{what} has a number too large for a float: {text[:20]}")
        return value

    return parse


def _constant(what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        raise InputRefused(f"{what} has {text}, which is not JSON (JSON has finite numbers only)")

    return parse


def _depth_over(value: Any, limit: int) -> bool:
    """Whether `value` nests arrays and objects deeper than `limit`; a walk with a stack, not recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _too_deep(what: str) -> str:
    return f"{what} nests arrays and objects deeper than {MAX_DEPTH} levels, baton's limit on an input"


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n:,} bytes"
