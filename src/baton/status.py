"""Run and step statuses: defined once, here."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RunStatus", "StepStatus"]


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

    @property
    def finished(self) -> bool:
        """True when nothing more will happen to the run unless someone resumes it."""
        return self in _FINISHED

    @property
    def resumable(self) -> bool:
        """True when `resume` may continue the run."""
        return self in (RunStatus.FAILED, RunStatus.INTERRUPTED)


_FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.CANCELLED})


class StepStatus(StrEnum):
    """Where one step of a run stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
