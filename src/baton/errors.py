"""The error tree: one root, split by audience.

`UserError` is the user's mistake (a bad definition, bad input, an unknown run), raised as early as possible.
`RunError` and its children are failures that happen while a run executes. Every class survives pickling,
because errors cross process boundaries on distributed runtimes.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BatonError",
    "Cancelled",
    "ContractViolation",
    "DefinitionError",
    "InvalidInput",
    "MissingExtra",
    "RunError",
    "RunNotFound",
    "RunNotQueued",
    "RunNotResumable",
    "EffectsWouldRepeat",
    "StepFailed",
    "StepTimeout",
    "BudgetExceeded",
    "StoreUnavailable",
    "BrokerUnavailable",
    "EffectUncertain",
    "TransientError",
    "UserError",
]


class BatonError(Exception):
    """Root of every error baton raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__.copy(), self.args))


def _rebuild(cls: type[BatonError], state: dict[str, Any], args: tuple[Any, ...]) -> BatonError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


# -- the user's mistakes ---------------------------------------------------------------------------------


class UserError(BatonError):
    """A mistake in how baton is used: a bad definition, bad input, an unknown run."""


class DefinitionError(UserError):
    """A step or pattern is defined wrongly; raised when it is defined, not when it runs."""


class RunNotFound(UserError):
    """No run has the given id (or the prefix is ambiguous, or too short to name one)."""


class RunNotResumable(UserError):
    """A run cannot be resumed: it already succeeded, is live elsewhere, or its code changed."""


class MissingExtra(UserError, ModuleNotFoundError):
    """A part of baton needs an optional dependency that is not installed; the message says which extra."""

    # Also a ModuleNotFoundError, so that `import baton.web` without the extra fails as imports fail, and code
    # that probes for an optional part (`except ImportError`) keeps working.
    def __init__(self, what: str, extra: str, module: str) -> None:
        self.what, self.extra, self.module = what, extra, module
        super().__init__(f'{what} needs the {extra} extra (no module {module!r}): pip install "baton-llm[{extra}]"')


class EffectsWouldRepeat(RunNotResumable):
    """A retry from a step would do again side effects already done (an e-mail sent): it needs a person's yes."""


# -- failures during a run -------------------------------------------------------------------------------


class ContractViolation(BatonError):
    """A value crossing a boundary does not satisfy its contract."""

    def __init__(
        self,
        *,
        contract: str,
        errors: list[dict[str, str]],
        step: str | None,
        where: str,
        raw_output: str | None = None,
    ) -> None:
        self.contract = contract
        self.errors = errors
        self.step = step
        self.where = where
        # For a model's answer: the text it gave, kept so a person can read what went wrong.
        self.raw_output = raw_output
        fields = "; ".join(f"field '{e['field']}': {e['message']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        who = f"step '{step}': {where}" if step else where
        super().__init__(f"{who} violates contract {contract}: {fields}{more}")

    @classmethod
    def from_validation_error(cls, exc: Any, *, contract: str, step: str | None, where: str) -> ContractViolation:
        """Build from a `pydantic.ValidationError`, keeping each field's path and message."""
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"]) or "(root)",
                "message": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors(include_url=False)
        ]
        return cls(contract=contract, errors=errors, step=step, where=where)


class InvalidInput(ContractViolation, UserError):
    """The input of a run does not satisfy the first step's contract; the run is not started."""


class RunError(BatonError):
    """A failure while a run executes."""


class StoreUnavailable(BatonError):
    """The run store cannot be reached (the database is down, or the URL points nowhere)."""


class BrokerUnavailable(BatonError):
    """The Celery broker cannot be reached (Redis is down, or BATON_BROKER_URL points nowhere)."""


class RunNotQueued(BrokerUnavailable):
    """A run was recorded, then the broker refused its message: it waits, pending, for `baton resume RUN_ID`."""

    def __init__(self, run_id: str, why: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} is recorded but not queued: {why}; queue it with: baton resume {run_id}")


class StepFailed(RunError):
    """A run ended failed; names the step and carries the recorded error."""

    def __init__(self, run_id: str, step: str, error_type: str, message: str) -> None:
        self.run_id = run_id
        self.step = step
        self.error_type = error_type
        self.error_message = message
        super().__init__(f"run {run_id} failed at step '{step}': {error_type}: {message}")


class EffectUncertain(RunError):
    """A side effect was started and its process died before recording whether it happened.

    baton never repeats it on its own: a person checks (was the e-mail received?) and says so with
    `baton effects mark KEY --done` (with `--result JSON` when the step uses what it returned) or `--not-done`,
    then resumes the run.
    """


class TransientError(RunError):
    """Raise (or subclass) this from a step for a failure worth retrying: the step's Retry policy applies."""


class StepTimeout(TransientError, TimeoutError):
    """An attempt ran past its step's `timeout`: transient (retried under the step's Retry); what it produces
    later is thrown away, never checkpointed."""

    def __init__(self, step: str, seconds: float, attempt: int | None = None) -> None:
        self.step, self.seconds, self.attempt = step, seconds, attempt
        which = f" (attempt {attempt})" if attempt is not None else ""
        super().__init__(f"step '{step}' ran past its timeout of {seconds:g} s{which}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (StepTimeout, (self.step, self.seconds, self.attempt))


class BudgetExceeded(RunError):
    """A model call would take a run past its budget: no call was made, the step and the run fail.

    `baton resume RUN_ID --budget-usd X` (or `--budget-tokens N`; with `--budget-chain` when it was the event
    chain's budget) continues it with a larger budget.
    """

    def __init__(self, step: str, limit: str, spent: str, call: str, budget: str = "run") -> None:
        self.step, self.limit, self.spent, self.call, self.budget = step, limit, spent, call, budget
        super().__init__(
            f"step '{step}': a model call of up to {call} would take the {budget}'s spend of {spent} past its "
            f"budget of {limit}; no call was made"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (BudgetExceeded, (self.step, self.limit, self.spent, self.call, self.budget))


class Cancelled(BaseException):
    """The run was cancelled. A `BaseException`, so that `except Exception` in user code cannot swallow it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} was cancelled")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Cancelled, (self.run_id,))
