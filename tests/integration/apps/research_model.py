"""A scripted model for the research example's agents (the provider `research`), for tests on both runtimes.

Each agent gets a valid answer for its contract. The drafter invents a claim no fact states while
`draft.invent` exists in BATON_TEST_DIR (holding how many drafts more do so); the checker ties a claim to
fact 1 unless it is the invented one. Load it before the example, with BATON_MODEL=research:script.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from baton import ScriptedModel
from baton.providers import register_provider

INVENTED = "ACME will double its revenue next year."


def _invent() -> bool:
    switch = Path(os.environ["BATON_TEST_DIR"]) / "draft.invent"
    if not switch.exists() or int(switch.read_text() or 0) <= 0:
        return False
    switch.write_text(str(int(switch.read_text()) - 1))
    return True


def answer(schema_name: str, request: dict[str, Any]) -> dict[str, Any]:
    """A valid answer to the agent whose output contract is `schema_name`, given its input."""
    if schema_name == "SourceFacts":
        return {"facts": [f"{request['name']} says ACME revenue grew 12% in Q3.", "ACME lost its largest customer."]}
    if schema_name == "AnalysisResult" and (Path(os.environ["BATON_TEST_DIR"]) / "analysis.junk").exists():
        # Recorded from the embedded model on a real document: the contract's shape, and nothing in it.
        return {"findings": ["Revenue grew."], "risk_flags": ["105348769"], "recommended_actions": []}
    if schema_name == "AnalysisResult":
        return {
            "findings": ["Revenue grew while the customer base shrank."],
            "risk_flags": ["Dependence on a few large customers."],
            "recommended_actions": ["Win back the lost customer or replace its revenue."],
        }
    if schema_name == "Draft":
        claims = ["ACME revenue grew 12% in Q3.", "ACME lost its largest customer."]
        if _invent():
            claims.append(INVENTED)
        return {"title": "ACME in Q3", "summary": "ACME revenue grew; it lost its largest customer.", "claims": claims}
    if schema_name == "Check":
        return {
            "verdicts": [
                {"claim": n, "fact_ids": [] if claim == INVENTED else [1]}
                for n, claim in enumerate(request["claims"], start=1)
            ]
        }
    raise AssertionError(f"no scripted answer for {schema_name}")


class ResearchModel(ScriptedModel):
    """Answers each agent of the research example from its input."""

    name = "research"

    def __init__(self) -> None:
        super().__init__([{}], model="script")

    def complete(self, model: str, messages: list[Any], *, schema: dict[str, Any], schema_name: str, **kw: Any) -> Any:
        """The answer for the contract `schema_name`, from the agent's input (its user message)."""
        request = json.loads(messages[1].content)
        self.answers = [answer(schema_name, request)]
        self.requests.clear()
        return super().complete(model, messages, schema=schema, schema_name=schema_name, **kw)


register_provider("research", ResearchModel)
