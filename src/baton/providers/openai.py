"""OpenAI, and any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through BATON_OPENAI_BASE_URL.

The output contract is sent as the API's structured output (`response_format` of type `json_schema`).
Servers that only know JSON mode with a schema (llama-cpp-python's) get `json_object` instead: set
BATON_OPENAI_RESPONSE_FORMAT=json_object, or let baton switch after the server refuses the first form.
"""

from __future__ import annotations

import json
import os
from typing import Any

from baton.errors import UserError
from baton.providers._http import classify_status
from baton.providers.base import Completion, Message, ToolCall, ToolSpec, TransientProviderError

__all__ = ["OpenAIProvider"]


class OpenAIProvider:
    """Chat completions through the official `openai` SDK; the SDK's own retries are off (baton retries)."""

    name = "openai"

    def __init__(self) -> None:
        try:
            import openai
        except ImportError:
            raise UserError('the openai provider needs the openai SDK: pip install "baton[openai]"') from None
        self._sdk = openai
        base_url = os.environ.get("BATON_OPENAI_BASE_URL") or None
        # A local server needs no key, but the SDK insists on one; a hosted API gets the real one from
        # OPENAI_API_KEY, which baton never stores or prints.
        api_key = os.environ.get("OPENAI_API_KEY") or ("not-needed" if base_url else None)
        if api_key is None:
            raise UserError("the openai provider needs OPENAI_API_KEY (or BATON_OPENAI_BASE_URL for a local server)")
        timeout = float(os.environ.get("BATON_OPENAI_TIMEOUT", "120"))
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
        self._format = os.environ.get("BATON_OPENAI_RESPONSE_FORMAT", "json_schema")

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
        request: dict[str, Any] = {
            "model": model,
            "messages": [_message(m) for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "response_format": self._response_format(schema, schema_name),
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
            response = self._call(request, schema, schema_name)
        except self._sdk.APITimeoutError as exc:
            raise TransientProviderError("openai", f"timed out: {exc}") from None
        except self._sdk.APIConnectionError as exc:
            raise TransientProviderError("openai", f"cannot connect: {exc}") from None
        except self._sdk.APIStatusError as exc:
            raise classify_status("openai", exc.status_code, _detail(exc), exc.response.headers) from None
        choice = response.choices[0].message
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=json.loads(c.function.arguments or "{}"))
            for c in (choice.tool_calls or [])
        )
        usage = response.usage
        return Completion(
            text=choice.content,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            model=response.model or model,
            tool_calls=calls,
        )

    def _response_format(self, schema: dict[str, Any], name: str) -> dict[str, Any]:
        if self._format == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}

    def _call(self, request: dict[str, Any], schema: dict[str, Any], name: str) -> Any:
        try:
            return self._client.chat.completions.create(**request)
        except self._sdk.APIStatusError as exc:
            refused_format = exc.status_code in (400, 422) and "response_format" in _detail(exc)
            if not refused_format or self._format == "json_object":
                raise
        # The server does not know `json_schema` structured output; JSON mode with the schema it does know.
        self._format = "json_object"
        request["response_format"] = self._response_format(schema, name)
        return self._client.chat.completions.create(**request)


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
