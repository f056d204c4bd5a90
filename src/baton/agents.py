"""Agents: steps whose work is a model call, with the answer forced into the output contract."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError, create_model

from baton import budgets
from baton._context import LLMCall, StepContext, current_step
from baton.contracts import is_contract, refuse_nul
from baton.errors import ContractViolation, DefinitionError, StepTimeout
from baton.pricing import cost_of
from baton.providers import Completion, Message, ToolCall, ToolSpec, check_model, get_provider, split_model
from baton.providers.base import redact
from baton.ratelimits import backend_for, fingerprint, limits_for, within_limits
from baton.retry import Retry
from baton.runtime.aio import call_in_background, call_threads, in_store_thread, in_work_thread
from baton.settings import current_settings
from baton.steps import Step
from baton.store import open_store, utcnow
from baton.tokens import count_tokens

__all__ = ["Agent", "Tool"]

MAX_TOOL_ROUNDS = 5
# Narrow agents keep few tools; a long list is what made the monolith's model forget them.
MAX_TOOLS = 10

REASK = (
    "Your answer does not satisfy the {contract} contract:\n{errors}\n"
    "Answer again with only the JSON object, correcting these fields."
)


class Tool:
    """A plain typed function an agent's model may call; its parameters' annotations make its schema.

    The function may be `async def` (awaited on the agent's loop) or plain (run on a worker thread, so that a
    slow one never blocks the loop).
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None) -> None:
        if not callable(fn):
            raise DefinitionError(f"a tool must be a function, not {fn!r}")
        self.fn = fn
        # An object whose `__call__` is async counts too: `iscoroutinefunction` sees only functions.
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
        self.name = name or fn.__name__
        self.description = (description or inspect.getdoc(fn) or self.name).strip().splitlines()[0]
        fields: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            if param.annotation is inspect.Parameter.empty:
                raise DefinitionError(f"tool '{self.name}': annotate parameter '{param.name}' with its type")
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (param.annotation, default)
        self.arguments = create_model(f"{self.name}_arguments", **fields)
        self.spec = ToolSpec(self.name, self.description, self.arguments.model_json_schema())

    def call(self, arguments: dict[str, Any]) -> str:
        """Validate the model's arguments, call the function, and give back its result as JSON text.

        For sync code (an async tool is awaited on baton's loop); agents use `acall`.
        """
        if self.is_async:
            return call_in_background(self.acall(arguments))
        try:
            args = self.arguments.model_validate(arguments)
        except ValidationError as exc:
            return _invalid(exc)
        try:
            result = self.fn(**dict(args))
        except Exception as exc:  # the model reads the failure and can try otherwise
            return _failed(exc)
        return _dumped(result)

    async def acall(self, arguments: dict[str, Any]) -> str:
        """`call` from async code: an async function is awaited, a plain one runs on a worker thread."""
        try:
            args = self.arguments.model_validate(arguments)
        except ValidationError as exc:
            return _invalid(exc)
        try:
            if self.is_async:
                result = await self.fn(**dict(args))
            else:
                # A thread with a copy of this context: the tool still sees the step it runs in.
                result = await in_work_thread(functools.partial(self.fn, **dict(args)), pool=call_threads())
        except Exception as exc:  # the model reads the failure and can try otherwise
            return _failed(exc)
        return _dumped(result)


def _invalid(exc: ValidationError) -> str:
    return json.dumps({"error": f"invalid arguments: {exc.errors(include_url=False)}"}, default=str)


def _failed(exc: Exception) -> str:
    return json.dumps({"error": f"{type(exc).__name__}: {exc}"})


def _dumped(result: Any) -> str:
    return TypeAdapter(Any).dump_json(result).decode()


def field_guide(contract: type[BaseModel]) -> str:
    """A short description of a contract's fields, for a model that cannot read its JSON schema."""
    lines = [f"Answer with a JSON object ({contract.__name__}) with these fields:"]
    for name, field in contract.model_fields.items():
        what = field.description or name.replace("_", " ")
        lines.append(f"- {name}: {what}")
    return "\n".join(lines)


class Agent(Step):
    """An LLM-backed step: `instructions` as system message, the input contract as JSON as user message.

    The answer is forced into the `output` contract (by the provider's structured output) and validated
    against all its bounds; an invalid answer is sent back with the errors, up to `reasks` times. Its work is
    async: model calls and tools are awaited, so many agents share one event loop.

    `answer=` gives the model a contract of its own, apart from the step's `output`: the model answers it, is
    re-asked on it, and `finish(answer, value)` (overridden in a subclass) builds the step's output from the
    validated answer and the step's input. A small model that cannot copy a document's sentences can pick
    their numbers, and `finish` hands on the sentences themselves.

    `timeout=` bounds each attempt (its model calls cancelled past it). Every call is held against the run's
    budget (`baton.Budget`) and made within the declared rate limits (`baton.limit`).
    """

    calls_model = True

    def __init__(
        self,
        name: str,
        *,
        instructions: str,
        input: type[BaseModel],
        output: type[BaseModel],
        answer: type[BaseModel] | None = None,
        model: str | Any | None = None,
        reasks: int = 2,
        tools: Sequence[Callable[..., Any] | Tool] = (),
        retry: Retry | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(instructions, str) or not instructions.strip():
            raise DefinitionError(f"agent '{name}' needs instructions (its system prompt)")
        answer = output if answer is None else answer
        for role, contract in (("input", input), ("output", output), ("answer", answer)):
            if not is_contract(contract):
                raise DefinitionError(f"agent '{name}': {role}= must be a Pydantic model class, not {contract!r}")
        if answer is not output and type(self).finish is Agent.finish:
            raise DefinitionError(
                f"agent '{name}': its model answers {answer.__name__} but its step hands on {output.__name__}; "
                f"subclass Agent and override finish(answer, value) to build one from the other"
            )
        if not isinstance(reasks, int) or reasks < 0:
            raise DefinitionError(f"agent '{name}': reasks={reasks!r} must be an int >= 0")
        if model is None:
            model = current_settings().providers.model
        if isinstance(model, str):
            check_model(model)
        elif not any(callable(getattr(model, method, None)) for method in ("acomplete", "complete")):
            raise DefinitionError(
                f"agent '{name}': model= takes a model name or a provider object (with acomplete or complete), "
                f"not {model!r}"
            )
        self.instructions = instructions.strip()
        self.model = model
        self.reasks = reasks
        self.tools = [t if isinstance(t, Tool) else Tool(t) for t in tools]
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise DefinitionError(f"agent '{name}': two tools share a name: {names}")
        if len(self.tools) > MAX_TOOLS:
            raise DefinitionError(
                f"agent '{name}' has {len(self.tools)} tools; keep it at most {MAX_TOOLS} and split the agent"
            )
        if self.tools and not getattr(self._provider()[0], "supports_tools", True):
            raise DefinitionError(f"agent '{name}': model {self.model_label!r} cannot call tools")
        self.max_tokens = max_tokens
        self.temperature = temperature
        # The contract the model writes: forced by the provider, validated, re-asked on (the output by default).
        self.answer = answer
        self.schema = answer.model_json_schema()
        super().__init__(name, self._work, input=input, output=output, retry=retry, timeout=timeout)

    @property
    def model_label(self) -> str:
        """The model as recorded: `provider:model`."""
        if isinstance(self.model, str):
            return self.model
        return f"{getattr(self.model, 'name', type(self.model).__name__)}:{getattr(self.model, 'model', '')}"

    def prompt(self, value: BaseModel) -> list[Message]:
        """The messages the model gets for `value`: instructions, then the input contract as compact JSON.

        A provider that enforces the schema without showing it to the model (a grammar, for the embedded
        model) gets a one-line guide per output field appended to the instructions, so that the model knows
        what each field means and not only its shape.
        """
        system = self.instructions
        if not getattr(self._provider()[0], "model_sees_schema", True):
            system = f"{system}\n\n{field_guide(self.answer)}"
        return [Message("system", system), Message("user", value.model_dump_json())]

    def finish(self, answer: BaseModel, value: BaseModel) -> BaseModel:
        """The step's output, from the model's validated answer and the step's input: the answer by default.

        Override it with `answer=` to hand on something the model could not write itself (the sentences it
        picked by number, the input's ids); it may be `async def`. It is code, not the model: what it raises
        fails the step (the model's answer kept with the error), and what it returns is checked against the
        `output` contract like any step's output. What it relies on (a number within the input's range) belongs
        in the answer's contract, checked against the input given as validation context, so that a model's
        mistake is re-asked rather than failing here.
        """
        return answer

    async def _work(self, value: BaseModel) -> BaseModel:
        ctx = current_step()
        messages = self.prompt(value)
        errors: list[dict[str, str]] = []
        raw = ""
        for _ in range(self.reasks + 1):
            raw, call = await self._answer(messages, ctx)
            try:
                answer = self._parse(raw, value)
                # A NUL the store cannot keep is an invalid answer like any other: the model is asked again.
                refuse_nul(
                    answer.model_dump_json(), contract=self.answer.__name__, step=self.name, where="the model's answer"
                )
            except (ValidationError, ContractViolation) as exc:
                violation = (
                    exc
                    if isinstance(exc, ContractViolation)
                    else ContractViolation.from_validation_error(
                        exc, contract=self.answer.__name__, step=self.name, where="the model's answer"
                    )
                )
                errors = violation.errors
                await _keep(ctx, call, "invalid")
                listed = "\n".join(f"- {e['field']}: {e['message']}" for e in errors)
                messages = [
                    *messages,
                    # Never an empty message (APIs refuse them): the model is shown what it gave.
                    Message("assistant", raw or "(no answer)"),
                    Message("user", REASK.format(contract=self.answer.__name__, errors=listed)),
                ]
                continue
            await _keep(ctx, call, "answer")
            if ctx is not None and ctx.step != self.name:
                # An agent called by another step: its calls are in the store before that step goes on.
                await ctx.aflush()
            try:
                finished = self.finish(answer, value)
                if inspect.isawaitable(finished):
                    finished = await finished
            except Exception as exc:
                # The answer `finish` could not use is kept with the failure, as a refused answer is.
                if getattr(exc, "raw_output", None) is None:
                    with contextlib.suppress(AttributeError, TypeError):
                        exc.raw_output = raw  # type: ignore[attr-defined]
                raise
            return finished
        raise ContractViolation(
            contract=self.answer.__name__,
            errors=errors,
            step=self.name,
            where=f"the model's answer (after {self.reasks} re-ask{'s' if self.reasks != 1 else ''})",
            raw_output=raw,
        )

    def _parse(self, raw: str, value: BaseModel) -> BaseModel:
        # The input rides along as validation context, so a contract can hold the answer to what was asked
        # (a summary that shares no word with its source); validated anywhere else, the context is absent.
        context = {"input": value}
        try:
            return self.answer.model_validate_json(raw, context=context)
        except ValidationError as exc:
            if not any(e["type"] == "json_invalid" for e in exc.errors()):
                raise
            # Small models put raw newlines and tabs inside strings; JSON's lenient mode reads those, and the
            # contract still checks every field and bound.
            try:
                data = json.loads(raw, strict=False)
            except ValueError:
                raise exc from None
            return self.answer.model_validate(data, context=context)

    async def _answer(self, messages: list[Message], ctx: StepContext | None) -> tuple[str, LLMCall]:
        """Ask until the model answers (running the tools it calls in between): the answer's text and the
        call that gave it (kept by the caller once it knows whether the answer is valid)."""
        provider, model = self._provider()
        for _ in range(MAX_TOOL_ROUNDS + 1):
            completion, call = await self._call(provider, model, messages, ctx)
            if not completion.tool_calls:
                return completion.text or "", call
            await _keep(ctx, call, "tool_calls")
            if ctx is not None:
                await ctx.aflush()  # in the store before the tools act on the world
            messages.append(Message("assistant", completion.text or "", tool_calls=completion.tool_calls))
            # One after the other, as the model listed them: plain tools need not be safe to run at once.
            for tool_call in completion.tool_calls:
                messages.append(await self._run_tool(tool_call))
        raise ContractViolation(
            contract=self.answer.__name__,
            errors=[{"field": "(root)", "message": f"no answer after {MAX_TOOL_ROUNDS} tool rounds", "type": "tools"}],
            step=self.name,
            where="the model's answer",
        )

    async def _run_tool(self, call: ToolCall) -> Message:
        tool = next((t for t in self.tools if t.name == call.name), None)
        content = await tool.acall(call.arguments) if tool else json.dumps({"error": f"no tool named {call.name!r}"})
        return Message("tool", content, tool_call_id=call.id, name=call.name)

    def _provider(self) -> tuple[Any, str]:
        if isinstance(self.model, str):
            provider_name, model = split_model(self.model)
            return get_provider(provider_name), model
        return self.model, getattr(self.model, "model", "")

    async def _call(
        self, provider: Any, model: str, messages: list[Message], ctx: StepContext | None
    ) -> tuple[Any, LLMCall]:
        if ctx is not None:
            if ctx.abandoned:  # its attempt ran past the step's timeout: this call would belong to none
                raise StepTimeout(ctx.step, ctx.timeout or 0.0, ctx.attempt)
            await ctx.aflush()  # what was spent so far is in the store before more is
        provider_name = getattr(provider, "name", type(provider).__name__)
        priced = f"{provider_name}:{model}" if model else provider_name
        tools = [t.spec for t in self.tools]
        settings = current_settings()
        limits = limits_for(provider_name, model, settings=settings)
        prompt = _PromptTokens(messages, self.schema, tools)
        held = await self._hold(ctx, priced, prompt)
        # When the call itself starts, not its wait for a rate limit's capacity.
        clock = [utcnow(), time.perf_counter()]

        async def ask() -> Completion:
            clock[:] = [utcnow(), time.perf_counter()]
            return await _complete(
                provider,
                model,
                list(messages),
                schema=self.schema,
                schema_name=self.answer.__name__,
                tools=tools,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            )

        def failed(exc: BaseException) -> LLMCall:
            latency = (time.perf_counter() - clock[1]) * 1000
            return LLMCall(provider_name, model, 0, 0, latency, 0.0, "error", clock[0], redact(str(exc))[:500])

        async def refused(exc: BaseException) -> None:
            await _keep(ctx, failed(exc), "error")  # a 429 waited out within the limits: kept, then asked again

        try:
            if limits:
                store = ctx.store if ctx is not None and ctx.store is not None else open_store(settings=settings)
                completion = await within_limits(
                    limits,
                    tokens=prompt.count() + self.max_tokens,
                    key=_key_of(provider) if any(lim.per_key for lim in limits) else None,
                    backend=backend_for(store, settings, ctx.runtime if ctx is not None else "local"),
                    call=ask,
                    used=lambda c: c.input_tokens + c.output_tokens,
                    on_refused=refused,
                )
            else:
                completion = await ask()
        except BaseException as exc:
            if held is not None:
                if isinstance(exc, Exception):
                    await _settle(ctx, held, 0, 0.0)
                else:  # cancelled in flight (a timeout): the provider may bill it all, so count the worst case
                    await _settle(ctx, held, held.tokens, held.usd)
            if not isinstance(exc, Exception):
                raise
            await _keep(ctx, failed(exc), "error")
            raise
        started, t0 = clock
        call = LLMCall(
            provider=provider_name,
            model=completion.model,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            latency_ms=(time.perf_counter() - t0) * 1000,
            cost_usd=cost_of(priced, completion.input_tokens, completion.output_tokens),
            outcome="answer",
            started_at=started,
        )
        if held is not None:
            await _settle(ctx, held, completion.input_tokens + completion.output_tokens, call.cost_usd)
        return completion, call

    async def _hold(self, ctx: StepContext | None, priced: str, prompt: _PromptTokens) -> budgets.Hold | None:
        """Hold the call's worst case against its run's budgets, if it has any (see `baton.budgets`)."""
        if ctx is None or ctx.store is None:
            return None
        store = ctx.store
        if ctx.budgets is None:
            ctx.budgets = tuple(await in_store_thread(store, budgets.budgets_of, ctx, store))
        if not ctx.budgets:
            return None
        taking = functools.partial(
            budgets.hold, ctx, store, model=priced, prompt_tokens=prompt.count(), max_tokens=self.max_tokens
        )
        holding = asyncio.ensure_future(in_store_thread(store, taking))
        try:
            return await asyncio.shield(holding)
        except asyncio.CancelledError:
            # Cancelled (the step's timeout) while the store took the hold: it may commit all the same, and no
            # call will settle it.
            with contextlib.suppress(Exception):
                held = await holding
                if held is not None:
                    await _settle(ctx, held, 0, 0.0)
            raise


class _PromptTokens:
    """What a call sends the provider, counted once when asked (a budget, a rate limit's tokens): the messages,
    the answer's schema and the tools' (on the embedded model's tokenizer, an estimate of what the provider
    will count)."""

    __slots__ = ("_count", "_parts")

    def __init__(self, messages: list[Message], schema: dict[str, Any], tools: list[ToolSpec]) -> None:
        self._parts = (messages, schema, tools)
        self._count: int | None = None

    def count(self) -> int:
        """The prompt's tokens."""
        if self._count is None:
            messages, schema, tools = self._parts
            sent = [m.content for m in messages] + [json.dumps(schema)] + [json.dumps(t.parameters) for t in tools]
            self._count = count_tokens("\n".join(sent))
        return self._count


def _key_of(provider: Any) -> str | None:
    """The fingerprint of the API key `provider` calls with (for limits kept per key), never the key itself."""
    key = getattr(provider, "api_key", None)
    return fingerprint(key) if isinstance(key, str) and key else None


async def _complete(provider: Any, model: str, messages: list[Message], **options: Any) -> Completion:
    """The provider's answer, awaited: its `acomplete`, or its sync `complete` on a worker thread."""
    acomplete = getattr(provider, "acomplete", None)
    if callable(acomplete):
        return await acomplete(model, messages, **options)
    # A provider written before agents were async: on a thread, so that it never blocks the loop.
    return await in_work_thread(functools.partial(provider.complete, model, messages, **options), pool=call_threads())


async def _settle(ctx: StepContext | None, held: budgets.Hold, tokens: int, usd: float | None) -> None:
    """Count what a call spent against the budgets it held, and give the hold back (even when cancelled)."""
    assert ctx is not None and ctx.store is not None
    store = ctx.store
    settling = functools.partial(budgets.settle, store, held, tokens=tokens, usd=usd)
    await asyncio.shield(in_store_thread(store, settling))


async def _keep(ctx: StepContext | None, call: LLMCall, outcome: str) -> None:
    call.outcome = outcome
    if ctx is not None:
        await ctx.akeep(call)
