"""What every model provider speaks: messages in, an answer (or tool calls) and usage out."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from baton.errors import RunError, TransientError

__all__ = [
    "Completion",
    "Message",
    "PermanentProviderError",
    "Provider",
    "ProviderError",
    "ToolCall",
    "ToolSpec",
    "TransientProviderError",
    "redact",
]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a tool to be called with these arguments."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation with a model."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and the JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer: the JSON text of the output contract, or tool calls; and what it cost in tokens."""

    text: str | None
    input_tokens: int
    output_tokens: int
    model: str
    tool_calls: tuple[ToolCall, ...] = field(default=())


class Provider(Protocol):
    """A source of completions; chosen by the part of a model name before the colon.

    Agents await `acomplete` on their event loop; a provider written with `complete` alone still works (agents
    then run it on a worker thread, so that it never blocks the loop). `complete` stays for sync callers.
    """

    name: str

    def complete(
        self,
        model: str,
        messages: list[Message],
        *,
        schema: dict[str, Any],
        schema_name: str,
        tools: list[ToolSpec],
        max_tokens: int,
        temperature: float,
    ) -> Completion:
        """Ask `model` for an answer that follows `schema` (or for tool calls, when `tools` are offered)."""
        ...

    async def acomplete(
        self,
        model: str,
        messages: list[Message],
        *,
        schema: dict[str, Any],
        schema_name: str,
        tools: list[ToolSpec],
        max_tokens: int,
        temperature: float,
    ) -> Completion:
        """`complete` for async code: awaited on the running loop, which it must never block."""
        ...


_SECRET_PATTERNS = (
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
)
_KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


def redact(text: str) -> str:
    """`text` without API keys: the configured ones, bearer tokens, and anything shaped like `sk-...`.

    Provider errors end up in the store, the CLI and the dashboard; a server that echoes the key it was
    sent must not put it there.
    """
    for variable in _KEY_VARIABLES:
        key = os.environ.get(variable)
        if key and len(key) >= 6:
            text = text.replace(key, "[redacted]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text


class ProviderError(RunError):
    """A model provider refused or failed a request (its message never carries an API key)."""

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        self.provider = provider
        self.status = status
        where = f"{provider} (HTTP {status})" if status else provider
        super().__init__(f"{where}: {redact(message)}")


class TransientProviderError(ProviderError, TransientError):
    """A failure worth retrying (timeout, connection, 429, 5xx); `retry_after` is the provider's wish, if any."""

    def __init__(
        self, provider: str, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(provider, message, status=status)


class PermanentProviderError(ProviderError):
    """A failure that retrying cannot fix (400 bad request, 401 bad key, 404 unknown model)."""
