"""What an effect returns, when its step uses it: the type it is validated into, and the JSON schema the ledger
keeps so that a person's word (`baton effects mark KEY --done --result JSON`) is checked without the step's code.

An effect declares its result with `returns=` (a Pydantic model, a TypedDict, `list[str]`...) or with its act's
return annotation; an effect that declares neither (a lambda, say) has a result nobody checks, and `--done`
alone settles it.
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic.errors import PydanticUserError

from baton.errors import ContractViolation, DefinitionError

__all__ = ["ResultShape", "declared_shape", "describe", "misfits"]


@dataclass(frozen=True, slots=True)
class ResultShape:
    """The declared result of an effect: how to validate it, and its JSON schema for the ledger."""

    label: str
    adapter: TypeAdapter[Any]
    schema: dict[str, Any]

    def accept(self, value: Any, *, step: str, where: str) -> Any:
        """`value` validated into the declared type, or a ContractViolation naming the field."""
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            raise ContractViolation.from_validation_error(exc, contract=self.label, step=step, where=where) from None

    def dump(self, value: Any) -> Any:
        """The validated `value` as JSON, as the ledger records it."""
        return self.adapter.dump_python(value, mode="json")


def declared_shape(name: str, act: Any, returns: Any) -> ResultShape | None:
    """The result effect `name` declares (`returns`, else `act`'s return annotation), or None if it declares none."""
    declared = returns if returns is not None else _annotation(name, act)
    if declared is None or declared is type(None):
        return None  # `-> None` says the result is not used
    try:
        return _shape(declared)
    except TypeError:  # unhashable (an Annotated with a dict inside): built each time
        return _build(declared)


def _annotation(name: str, act: Any) -> Any:
    try:
        annotation = inspect.signature(act, eval_str=True).return_annotation
    except (ValueError, TypeError):
        return None  # no signature to read (a builtin): nothing declared
    except Exception as exc:  # an annotation that names something not importable here
        raise DefinitionError(
            f"effect '{name}': its act's return annotation cannot be read ({type(exc).__name__}: {exc}); "
            "pass returns=THE_TYPE"
        ) from None
    return None if annotation is inspect.Signature.empty else annotation


@functools.lru_cache(maxsize=256)
def _shape(declared: Any) -> ResultShape:
    return _build(declared)


def _build(declared: Any) -> ResultShape:
    label = declared.__name__ if isinstance(declared, type) else repr(declared)
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(declared)
        schema = adapter.json_schema()
    except (PydanticUserError, TypeError, ValueError) as exc:
        raise DefinitionError(
            f"an effect's result type {label} cannot be described as JSON ({exc}); declare returns= a Pydantic "
            "model or a JSON type (dict, list[str], a TypedDict)"
        ) from None
    return ResultShape(label=label, adapter=adapter, schema=schema)


def misfits(schema: dict[str, Any], value: Any, *, limit: int = 3) -> list[str]:
    """Why `value` does not fit `schema`, field by field (empty when it fits)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    found = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(e) for e in found[:limit]]


def _describe(error: Any) -> str:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next((f for f in error.validator_value if f not in error.instance), None)
        if missing is not None:
            return f"field '{'.'.join([*path, missing])}': missing"
    shown = json.dumps(error.instance, ensure_ascii=False)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    what = error.message if error.validator not in ("type", "enum", "const") else _short(error, shown)
    return f"field '{'.'.join(path) or '(root)'}': {what}"


def _short(error: Any, shown: str) -> str:
    expected = error.validator_value
    if error.validator == "type":
        return f"{shown} is not of type {expected if isinstance(expected, str) else ' or '.join(expected)}"
    if error.validator == "enum":
        return f"{shown} is not one of {json.dumps(expected)}"
    return f"{shown} is not {json.dumps(expected)}"


def describe(schema: dict[str, Any]) -> str:
    """A few words on a result's JSON schema, for a person: `Receipt: an object with id, amount`."""
    title = schema.get("title")
    fields = list(schema.get("properties", {}))
    kind = schema.get("type") if isinstance(schema.get("type"), str) else "JSON value"
    shown = f"an object with {', '.join(fields)}" if fields else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    return f"{title}: {shown}" if title else shown
