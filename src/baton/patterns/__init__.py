"""Coordination patterns: how steps are put together."""

from baton.patterns.pipeline import Pipeline
from baton.patterns.supervisor import Supervisor

__all__ = ["Pipeline", "Supervisor"]
