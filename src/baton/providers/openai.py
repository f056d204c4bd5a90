"""OpenAI, and any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through BATON_OPENAI_BASE_URL.

The output contract is sent as the API's structured output (`response_format` of type `json_schema`).
Servers that only know JSON mode with a schema (llama-cpp-python's) get `json_object` instead: set
BATON_OPENAI_RESPONSE_FORMAT=json_object, or let baton switch after the server refuses the first form.
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

__all__ = ["OpenAIProvider"]


class OpenAIProvider:
    """Chat completions through the official `openai` SDK; the SDK's own retries are off (baton retries).

    `complete` uses the SDK's client, `acomplete` its async client (one per event loop).
    """

    name = "openai"
    extra = "openai"  # the extra that installs its SDK; `check_model` asks for it when an agent is declared

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        """`settings` fixed for this provider; without them, this process's current settings at each call."""
        require("openai", "the openai provider")
        import openai

        self._sdk = openai
        hint = "the openai provider needs OPENAI_API_KEY (or BATON_OPENAI_BASE_URL for a local server)"
        self._clients = SDKClients(openai.OpenAI, key_env="OPENAI_API_KEY", hint=hint)
        self._async_clients = AsyncSDKClients(openai.AsyncOpenAI, sdk=openai, key_env="OPENAI_API_KEY", hint=hint)
        self._settings = settings
        # Servers found to know only JSON mode, by base URL.
        self._json_object_only: set[str | None] = set()

    @property
    def api_key(self) -> str | None:
        """The API key calls go out with (limits kept per key read its fingerprint, never the key)."""
        return os.environ.get("OPENAI_API_KEY") or None

    def _mode(self, base_url: str | None, settings: ProviderSettings) -> str:
        if base_url in self._json_object_only:
            return "json_object"
        return settings.openai_response_format

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
        """One chat completion whose answer follows `schema`, or asks for tools."""
        settings, base_url = self._where(model)
        client = self._clients.get(base_url, settings.openai_timeout)
        response_format = _response_format(self._mode(base_url, settings), schema, schema_name)
        request = _request(model, messages, response_format, tools, max_tokens, temperature)
        with self._errors():
            try:
                response = client.chat.completions.create(**request)
            except self._sdk.APIStatusError as exc:
                self._json_object_instead(exc, base_url, request, schema, schema_name)
                response = client.chat.completions.create(**request)
        return _completion(response, model)

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
        settings, base_url = self._where(model)
        client = await self._async_clients.get(base_url, settings.openai_timeout)
        response_format = _response_format(self._mode(base_url, settings), schema, schema_name)
        request = _request(model, messages, response_format, tools, max_tokens, temperature)
        with self._errors():
            try:
                response = await client.chat.completions.create(**request)
            except self._sdk.APIStatusError as exc:
                self._json_object_instead(exc, base_url, request, schema, schema_name)
                response = await client.chat.completions.create(**request)
        return _completion(response, model)

    def _where(self, model: str) -> tuple[ProviderSettings, str | None]:
        if not model:
            raise UserError("name the OpenAI model: 'openai:MODEL', e.g. 'openai:gpt-4o-mini'")
        settings = self._settings or current_settings().providers
        return settings, settings.openai_base_url or None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        # The SDK's failures as baton's, the same for the client and the async client.
        try:
            yield
        except self._sdk.APITimeoutError as exc:
            raise TransientProviderError("openai", f"timed out: {exc}") from None
        except self._sdk.APIConnectionError as exc:
            raise TransientProviderError("openai", f"cannot connect: {exc}") from None
        except self._sdk.APIStatusError as exc:
            raise classify_status("openai", exc.status_code, _detail(exc), exc.response.headers) from None

    def _json_object_instead(
        self, exc: Any, base_url: str | None, request: dict[str, Any], schema: dict[str, Any], name: str
    ) -> None:
        """Switch `request` to JSON mode when the server refused `json_schema` structured output; else raise."""
        # llama-cpp-python's server reports its refusal as a 500; any answer that names the field counts.
        refused_format = exc.status_code in (400, 422, 500) and "response_format" in _detail(exc)
        if not refused_format or request["response_format"]["type"] == "json_object":
            raise exc
        # The server does not know `json_schema` structured output; JSON mode with the schema it does know.
        self._json_object_only.add(base_url)
        request["response_format"] = _response_format("json_object", schema, name)


def _request(
    model: str,
    messages: list[Message],
    response_format: dict[str, Any],
    tools: list[ToolSpec],
    max_tokens: int,
    temperature: float,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": model,
        "messages": [_message(m) for m in messages],
        "max_tokens": max_tokens,
        "temperature": temperature,
        "response_format": response_format,
    }
    if tools:
        request["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in tools
        ]
    return request


def _completion(response: Any, model: str) -> Completion:
    choice = response.choices[0].message
    calls = tuple(ToolCall(id=c.id, name=c.function.name, arguments=_arguments(c)) for c in (choice.tool_calls or []))
    usage = response.usage
    return Completion(
        text=choice.content,
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        model=response.model or model,
        tool_calls=calls,
    )


def _response_format(mode: str, schema: dict[str, Any], name: str) -> dict[str, Any]:
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}


def _arguments(call: Any) -> dict[str, Any]:
    # Arguments that are not a JSON object reach the tool as such; its validation tells the model what is wrong.
    try:
        value = json.loads(call.function.arguments or "{}")
    except ValueError:
        return {"__invalid_json__": call.function.arguments}
    return value if isinstance(value, dict) else {"__invalid_json__": call.function.arguments}


def _detail(exc: Any) -> str:
    try:
        return json.dumps(exc.response.json())[:500]
    except Exception:
        return str(exc)[:500]


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in m.tool_calls
        ]
    return out
