"""The shipped research example with the scripted model of `research_model.py` registered first."""

import research_model  # noqa: F401 - registers the provider `research` (BATON_MODEL=research:script)

from baton.examples.research import approved_report, report, research

__all__ = ["approved_report", "report", "research"]
