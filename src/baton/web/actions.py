"""What a person may do to a run, one implementation for the API's endpoints and the dashboard's forms."""

from __future__ import annotations

from typing import Any

from baton import api
from baton._redo import refuse_redo
from baton.budgets import Budget, rebudget
from baton.effects import NO_RESULT, settle
from baton.errors import UserError
from baton.patterns.registry import find_pattern
from baton.run import Run
from baton.runtime import get_runtime
from baton.status import RunStatus
from baton.store import RunStore
from baton.store.effects import EffectRecord

__all__ = ["Actions"]


class Actions:
    """What a person may do to a run, the same through the API and the dashboard's forms."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def resume(self, run_id: str, *, budget: Budget | None = None) -> str:
        """Continue a failed or interrupted run where it stopped (under `budget`, if given); its id."""
        recorded = self.store.runs.get(run_id)
        pattern = find_pattern(recorded.pipeline, recorded.target)
        rebudget(self.store, recorded, budget, f"resume of run {recorded.id}")
        # Pending at once (a run that cannot resume answers 409), then continued on its own runtime.
        return get_runtime(recorded.runtime).resume(self.store, pattern, recorded.id)

    def retry(self, run_id: str, from_step: str, *, confirm: bool = False, confirm_with: str = "confirm") -> str:
        """Run a finished run again from `from_step`; its id. Side effects that the steps it re-runs already did
        are done again only with `confirm` (else `EffectsWouldRepeat` names them; `confirm_with` says how)."""
        recorded = self.store.runs.get(run_id)
        pattern = find_pattern(recorded.pipeline, recorded.target)
        if not confirm:
            refuse_redo(self.store, recorded, pattern, from_step, confirm_with=confirm_with)
        return pattern.retry(recorded.id, from_step, store=self.store, runtime=recorded.runtime)

    def cancel(self, run_id: str) -> RunStatus:
        """Cancel a run: at once when idle, after its current step when running."""
        return self.store.runs.cancel(run_id)

    def approve(self, run_id: str) -> str:
        """Let a run awaiting approval go on; its id."""
        return api.approve(run_id, store=self.store)

    def reject(self, run_id: str, reason: str) -> Run:
        """Stop a run awaiting approval, cancelled with `reason`."""
        return api.reject(run_id, reason=reason, store=self.store)

    def settle_effect(
        self, run_id: str, key: str, *, done: bool, result: Any = NO_RESULT, given_as: str = "result"
    ) -> EffectRecord | None:
        """A person's word on an uncertain side effect of the run (see `baton.effects.settle`)."""
        resolved = self.store.runs.resolve_id(run_id)
        found = self.store.effects.get(key)
        if found is None or found.run_id != resolved:
            raise UserError(f"run {resolved} has no side effect with key {key!r}")
        return settle(self.store, key, done=done, result=result, given_as=given_as)
