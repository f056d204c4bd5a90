"""Validation at boundaries: every value that crosses one is checked against its contract.

Beyond the contract, a value must be storable: a string holding NUL (U+0000) is refused here, on every store,
because PostgreSQL cannot keep it in text or JSON (SQLite can, and a run would then work on one store only).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from baton.errors import ContractViolation, InvalidInput

__all__ = ["is_contract", "refuse_nul", "validate_input", "validate_json", "validate_output"]

M = TypeVar("M", bound=BaseModel)

# How a JSON serializer writes NUL: a value's JSON without it holds no NUL, so most values cost one search.
_NUL_ESCAPE = "\\u0000"
_NUL_MESSAGE = "holds a NUL character (\\u0000), which the store refuses (PostgreSQL cannot keep it)"


def is_contract(tp: Any) -> bool:
    """True when `tp` can serve as a contract: a Pydantic model class."""
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def validate_input(contract: type[M], value: Any, *, step: str | None) -> M:
    """Validate a run's input; a violation is the caller's mistake (`InvalidInput`) and nothing starts."""
    try:
        if isinstance(value, (str, bytes)):
            validated = contract.model_validate_json(value)
        else:
            if isinstance(value, BaseModel):
                value = value.model_dump()
            validated = contract.model_validate(value)
    except ValidationError as exc:
        raise InvalidInput.from_validation_error(
            exc, contract=contract.__name__, step=step, where="input of the run"
        ) from None
    refuse_nul(
        validated.model_dump_json(), contract=contract.__name__, step=step, where="input of the run", error=InvalidInput
    )
    return validated


def validate_output(contract: type[M], value: Any, *, step: str) -> tuple[M, str]:
    """Check what a step returned, and give it back with its JSON.

    The JSON is validated again, not the object, because objects built in code can skip validation
    (`model_construct`, mutation after construction); what is checkpointed is what is checked.
    """
    try:
        if isinstance(value, BaseModel) and not isinstance(value, contract):
            raise TypeError(f"returned a {type(value).__name__}, not a {contract.__name__}")
        raw = value.model_dump_json() if isinstance(value, BaseModel) else _json_of(contract, value)
        validated = contract.model_validate_json(raw)
        if type(value) is not contract:
            # A subclass carries fields the contract does not have; only the contract crosses the boundary.
            raw = validated.model_dump_json()
    except ValidationError as exc:
        raise ContractViolation.from_validation_error(
            exc, contract=contract.__name__, step=step, where="output"
        ) from None
    except TypeError as exc:
        raise ContractViolation(
            contract=contract.__name__,
            errors=[{"field": "(root)", "message": str(exc), "type": "type_error"}],
            step=step,
            where="output",
        ) from None
    refuse_nul(raw, contract=contract.__name__, step=step, where="output")
    return validated, raw


def validate_json(contract: type[M], raw: str | bytes, *, step: str | None, where: str) -> M:
    """Validate stored JSON (a checkpoint being replayed, a loaded input) against a contract."""
    try:
        validated = contract.model_validate_json(raw)
    except ValidationError as exc:
        raise ContractViolation.from_validation_error(exc, contract=contract.__name__, step=step, where=where) from None
    refuse_nul(raw, contract=contract.__name__, step=step, where=where)
    return validated


def refuse_nul(
    raw: str | bytes,
    *,
    contract: str,
    step: str | None,
    where: str,
    error: type[ContractViolation] = ContractViolation,
) -> None:
    """Raise `error` naming every field (or key) of the JSON `raw` whose string holds NUL, if any does."""
    if (_NUL_ESCAPE.encode() if isinstance(raw, bytes) else _NUL_ESCAPE) not in raw:
        return
    # Rare: the escape is there (perhaps only as an escaped backslash); decode it to name the fields.
    found: list[dict[str, str]] = []
    _find_nul(json.loads(raw), (), found)
    if found:
        raise error(contract=contract, errors=found, step=step, where=where)


def _json_of(contract: type[BaseModel], value: Any) -> str:
    # A step may return a plain dict; validate it into the contract first so errors name the fields.
    return contract.model_validate(value).model_dump_json()


def _find_nul(value: Any, path: tuple[str, ...], found: list[dict[str, str]]) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            found.append({"field": _field(path), "message": f"the string {_NUL_MESSAGE}", "type": "nul_character"})
    elif isinstance(value, dict):
        for key, item in value.items():
            where = (*path, key.replace("\x00", _NUL_ESCAPE))
            if "\x00" in key:
                found.append({"field": _field(where), "message": f"the key {_NUL_MESSAGE}", "type": "nul_character"})
            _find_nul(item, where, found)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _find_nul(item, (*path, str(i)), found)


def _field(path: tuple[str, ...]) -> str:
    # Spelled as pydantic's errors spell a location, so that both kinds of error read alike.
    return ".".join(path) or "(root)"
