"""A scripted model for tests: it answers from a list, and remembers what it was asked."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from baton.providers.base import Completion, Message, ToolCall, ToolSpec

__all__ = ["ScriptedModel"]

Answer = str | dict[str, Any] | BaseModel | BaseException | Sequence[ToolCall] | Callable[[list[Message]], Any]


class ScriptedModel:
    """A fake model: each call takes the next answer from `answers` (the last one repeats).

    An answer is the JSON text to return, a dict or model (dumped to JSON), a list of `ToolCall`s, an
    exception to raise, or a function of the messages that returns one of those. `requests` keeps every
    call's messages, so a test can check the prompt. `acomplete` answers the same way, on the loop: keep an
    answer function quick.
    """

    name = "scripted"

    def __init__(self, answers: Sequence[Answer], *, model: str = "scripted") -> None:
        if not answers:
            raise ValueError("ScriptedModel needs at least one answer")
        self.answers = list(answers)
        self.model = model
        self.requests: list[list[Message]] = []
        self.schemas: list[dict[str, Any]] = []

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
        """Answer with the next scripted answer."""
        self.requests.append(list(messages))
        self.schemas.append(schema)
        answer: Any = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        if callable(answer) and not isinstance(answer, BaseModel | type):
            answer = answer(messages)
        if isinstance(answer, BaseException):
            raise answer
        prompt_tokens = sum(len(m.content) for m in messages) // 4 + 1
        if isinstance(answer, list | tuple) and answer and isinstance(answer[0], ToolCall):
            return Completion(None, prompt_tokens, 10, model or self.model, tool_calls=tuple(answer))
        if isinstance(answer, BaseModel):
            text = answer.model_dump_json()
        elif isinstance(answer, dict):
            text = json.dumps(answer)
        else:
            text = str(answer)
        return Completion(text, prompt_tokens, len(text) // 4 + 1, model or self.model)

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
        """Answer with the next scripted answer, from async code."""
        # Through `complete`, so that a subclass that overrides only `complete` answers the same both ways.
        return self.complete(
            model,
            messages,
            schema=schema,
            schema_name=schema_name,
            tools=tools,
            max_tokens=max_tokens,
            temperature=temperature,
        )
