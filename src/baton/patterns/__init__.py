"""Coordination patterns: how steps are put together."""

from baton.patterns.pipeline import Pipeline

__all__ = ["Pipeline"]
