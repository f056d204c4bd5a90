"""Run and step statuses: defined once, here."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ClaimOutcome", "RunStatus", "StepStatus"]


class RunStatus(StrEnum):
    """Where a run stands.

    `interrupted` means the process that was running it died (killed, machine lost); like `failed`, it can be
    resumed.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    # Stopped before a step declared `approval=True`, until a person approves (it goes on) or rejects it.
    AWAITING_APPROVAL = "awaiting_approval"

    @property
    def finished(self) -> bool:
        """True when nothing more will happen to the run unless someone resumes it."""
        return self in _FINISHED

    @property
    def resumable(self) -> bool:
        """True when `resume` may continue the run."""
        return self in (RunStatus.FAILED, RunStatus.INTERRUPTED)


# At rest: nothing more happens unless someone acts (resume, retry, approve).
_FINISHED = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.CANCELLED, RunStatus.AWAITING_APPROVAL}
)


class StepStatus(StrEnum):
    """Where one step of a run stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class ClaimOutcome(StrEnum):
    """What a worker's claim of a celery run's step found."""

    CLAIMED = "claimed"  # this worker holds the step now
    DONE = "done"  # it already succeeded (or was skipped)
    FAILED = "failed"  # it failed for good (a parallel branch: the join judges the run)
    BUSY = "busy"  # another worker holds it
    CANCEL = "cancel"  # a cancel was asked: nothing may start
    GONE = "gone"  # the run no longer runs (it ended, or was never there)
