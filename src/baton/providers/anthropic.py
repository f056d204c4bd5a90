"""Anthropic's Messages API through the official `anthropic` SDK.

The output contract is enforced as a tool's input schema: the model is made to call a tool named after
the contract, and that call's input is the answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from baton._extras import require
from baton.errors import UserError
from baton.providers._http import AsyncSDKClients, SDKClients, classify_status
from baton.providers.base import Completion, Message, ToolCall, ToolSpec, TransientProviderError
from baton.settings import ProviderSettings, current_settings

__all__ = ["AnthropicProvider"]


class AnthropicProvider:
    """Messages through the official `anthropic` SDK; the SDK's own retries are off (baton retries).

    `complete` uses the SDK's client, `acomplete` its async client (one per event loop).
    """

    name = "anthropic"
    extra = "anthropic"  # the extra that installs its SDK; `check_model` asks for it when an agent is declared

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        """`settings` fixed for this provider; without them, this process's current settings at each call."""
        require("anthropic", "the anthropic provider")
        import anthropic

        self._sdk = anthropic
        hint = "the anthropic provider needs ANTHROPIC_API_KEY (or BATON_ANTHROPIC_BASE_URL for a local server)"
        self._clients = SDKClients(anthropic.Anthropic, key_env="ANTHROPIC_API_KEY", hint=hint)
        self._async_clients = AsyncSDKClients(
            anthropic.AsyncAnthropic, sdk=anthropic, key_env="ANTHROPIC_API_KEY", hint=hint
        )
        self._settings = settings

    @property
    def api_key(self) -> str | None:
        """The API key calls go out with (limits kept per key read its fingerprint, never the key)."""
        return os.environ.get("ANTHROPIC_API_KEY") or None

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
        """One message whose answer is a call of the contract's tool (or of one of the agent's tools)."""
        settings = self._where(model)
        client = self._clients.get(settings.anthropic_base_url or None, settings.anthropic_timeout)
        request = _request(model, messages, schema, schema_name, tools, max_tokens)
        with self._errors():
            response = client.messages.create(**request)
        return _completion(response, model, schema_name)

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
        """`complete`, awaited on the running event loop through the SDK's async client."""
        settings = self._where(model)
        client = await self._async_clients.get(settings.anthropic_base_url or None, settings.anthropic_timeout)
        request = _request(model, messages, schema, schema_name, tools, max_tokens)
        with self._errors():
            response = await client.messages.create(**request)
        return _completion(response, model, schema_name)

    def _where(self, model: str) -> ProviderSettings:
        if not model:
            raise UserError("name the Anthropic model: 'anthropic:MODEL', e.g. 'anthropic:claude-3-5-haiku-latest'")
        return self._settings or current_settings().providers

    @contextmanager
    def _errors(self) -> Iterator[None]:
        # The SDK's failures as baton's, the same for the client and the async client.
        try:
            yield
        except self._sdk.APITimeoutError as exc:
            raise TransientProviderError("anthropic", f"timed out: {exc}") from None
        except self._sdk.APIConnectionError as exc:
            raise TransientProviderError("anthropic", f"cannot connect: {exc}") from None
        except self._sdk.APIStatusError as exc:
            raise classify_status("anthropic", exc.status_code, str(exc)[:500], exc.response.headers) from None


def _request(
    model: str,
    messages: list[Message],
    schema: dict[str, Any],
    schema_name: str,
    tools: list[ToolSpec],
    max_tokens: int,
) -> dict[str, Any]:
    answer_tool = {"name": schema_name, "description": "Give the final answer.", "input_schema": schema}
    offered = [answer_tool]
    offered += [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]
    return {
        "model": model,
        "system": "\n\n".join(m.content for m in messages if m.role == "system"),
        "messages": _conversation(messages),
        "tools": offered,
        "tool_choice": {"type": "tool", "name": schema_name} if not tools else {"type": "any"},
        "max_tokens": max_tokens,
        # No temperature: current versions of the Messages API and its SDK no longer take one.
    }


def _completion(response: Any, model: str, schema_name: str) -> Completion:
    text = None
    calls = []
    prose = []
    for block in response.content:
        if block.type == "text":
            prose.append(block.text)
        elif block.type == "tool_use" and block.name == schema_name:
            text = json.dumps(block.input)
        elif block.type == "tool_use":
            calls.append(ToolCall(id=block.id, name=block.name, arguments=dict(block.input)))
    if text is None and not calls:
        text = "\n".join(prose)  # no answer tool call: the model's words are what gets re-asked
    return Completion(
        text=text if not calls else None,
        input_tokens=response.usage.input_tokens,
        output_tokens=response.usage.output_tokens,
        model=response.model or model,
        tool_calls=tuple(calls),
    )


def _conversation(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.role == "assistant" and m.tool_calls:
            content: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
            out.append({"role": "assistant", "content": content})
        else:
            out.append({"role": m.role, "content": m.content})
    return out
