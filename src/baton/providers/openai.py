"""OpenAI, and any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through BATON_OPENAI_BASE_URL.

The output contract is sent as the API's structured output (`response_format` of type `json_schema`).
Servers that only know JSON mode with a schema (llama-cpp-python's) get `json_object` instead: set
BATON_OPENAI_RESPONSE_FORMAT=json_object, or let baton switch after the server refuses the first form.
"""

from __future__ import annotations

import json
from typing import Any

from baton.errors import UserError
from baton.providers._http import SDKClients, classify_status
from baton.providers.base import Completion, Message, ToolCall, ToolSpec, TransientProviderError
from baton.settings import ProviderSettings, current_settings

__all__ = ["OpenAIProvider"]


class OpenAIProvider:
    """Chat completions through the official `openai` SDK; the SDK's own retries are off (baton retries)."""

    name = "openai"

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        """`settings` fixed for this provider; without them, this process's current settings at each call."""
        try:
            import openai
        except ImportError:
            raise UserError('the openai provider needs the openai SDK: pip install "baton[openai]"') from None
        self._sdk = openai
        self._clients = SDKClients(
            openai.OpenAI,
            key_env="OPENAI_API_KEY",
            hint="the openai provider needs OPENAI_API_KEY (or BATON_OPENAI_BASE_URL for a local server)",
        )
        self._settings = settings
        # Servers found to know only JSON mode, by base URL.
        self._json_object_only: set[str | None] = set()

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
        if not model:
            raise UserError("name the OpenAI model: 'openai:MODEL', e.g. 'openai:gpt-4o-mini'")
        settings = self._settings or current_settings().providers
        base_url = settings.openai_base_url or None
        client = self._clients.get(base_url, settings.openai_timeout)
        request: dict[str, Any] = {
            "model": model,
            "messages": [_message(m) for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "response_format": _response_format(self._mode(base_url, settings), schema, schema_name),
        }
        if tools:
            request["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in tools
            ]
        try:
            response = self._call(client, base_url, request, schema, schema_name)
        except self._sdk.APITimeoutError as exc:
            raise TransientProviderError("openai", f"timed out: {exc}") from None
        except self._sdk.APIConnectionError as exc:
            raise TransientProviderError("openai", f"cannot connect: {exc}") from None
        except self._sdk.APIStatusError as exc:
            raise classify_status("openai", exc.status_code, _detail(exc), exc.response.headers) from None
        choice = response.choices[0].message
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=_arguments(c)) for c in (choice.tool_calls or [])
        )
        usage = response.usage
        return Completion(
            text=choice.content,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            model=response.model or model,
            tool_calls=calls,
        )

    def _call(
        self, client: Any, base_url: str | None, request: dict[str, Any], schema: dict[str, Any], name: str
    ) -> Any:
        try:
            return client.chat.completions.create(**request)
        except self._sdk.APIStatusError as exc:
            # llama-cpp-python's server reports its refusal as a 500; any answer that names the field counts.
            refused_format = exc.status_code in (400, 422, 500) and "response_format" in _detail(exc)
            if not refused_format or request["response_format"]["type"] == "json_object":
                raise
        # The server does not know `json_schema` structured output; JSON mode with the schema it does know.
        self._json_object_only.add(base_url)
        request["response_format"] = _response_format("json_object", schema, name)
        return client.chat.completions.create(**request)


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
