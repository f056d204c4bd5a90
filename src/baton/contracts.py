"""Validation at boundaries: every value that crosses one is checked against its contract."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from baton.errors import ContractViolation, InvalidInput

__all__ = ["is_contract", "validate_input", "validate_json", "validate_output"]

M = TypeVar("M", bound=BaseModel)


def is_contract(tp: Any) -> bool:
    """True when `tp` can serve as a contract: a Pydantic model class."""
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def validate_input(contract: type[M], value: Any, *, step: str | None) -> M:
    """Validate a run's input; a violation is the caller's mistake (`InvalidInput`) and nothing starts."""
    try:
        if isinstance(value, (str, bytes)):
            return contract.model_validate_json(value)
        if isinstance(value, BaseModel):
            value = value.model_dump()
        return contract.model_validate(value)
    except ValidationError as exc:
        raise InvalidInput.from_validation_error(
            exc, contract=contract.__name__, step=step, where="input of the run"
        ) from None


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
        return validated, raw
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


def validate_json(contract: type[M], raw: str | bytes, *, step: str | None, where: str) -> M:
    """Validate stored JSON (a checkpoint being replayed, a loaded input) against a contract."""
    try:
        return contract.model_validate_json(raw)
    except ValidationError as exc:
        raise ContractViolation.from_validation_error(exc, contract=contract.__name__, step=step, where=where) from None


def _json_of(contract: type[BaseModel], value: Any) -> str:
    # A step may return a plain dict; validate it into the contract first so errors name the fields.
    return contract.model_validate(value).model_dump_json()
