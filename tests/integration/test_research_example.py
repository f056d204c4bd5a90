"""The shipped research example (baton.examples.research): a supervisor gathers facts and an analysis from a
folder of text, Markdown and PDF sources in parallel; the report is drafted, checked claim by claim against
the facts (sent back to the drafter while a claim has none), and e-mailed once to a real SMTP server, after
a person's approval when asked. On both runtimes with a scripted model, and once on the embedded model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.commands import baton, control, show, wait_until_finished
from tests.integration.test_demo import minimal_pdf
from tests.integration.test_effects import Inbox
from tests.parallel import MODEL

APPS = Path(__file__).parent / "apps"
RESEARCH = f"{APPS / 'research_app.py'}:research"


@pytest.fixture
def sources(tmp_path) -> Path:
    folder = tmp_path / "acme"
    folder.mkdir()
    (folder / "q3-results.txt").write_text("ACME revenue grew 12% in Q3, to 4.1 million euros.")
    (folder / "customers.md").write_text("# Customers\n\nACME lost its largest customer, Globex, in August.")
    (folder / "board-minutes.pdf").write_bytes(minimal_pdf("The board wants a plan to replace the lost revenue."))
    (folder / "notes.xlsx").write_bytes(b"ignored: not a source type")
    return folder


@pytest.fixture
def inbox():
    box = Inbox()
    yield box
    box.controller.stop()


def _chain(env, run_id: str, timeout: float = 120) -> list[dict]:
    """The two runs of the chain `run_id` started (research, then its report), once neither is going."""
    deadline = time.monotonic() + timeout
    while True:
        runs = json.loads(baton(env, "runs", "--json").stdout)
        chain = [r for r in runs if r["correlation_id"] == run_id]
        if len(chain) == 2 and all(r["status"] not in ("pending", "running") for r in chain):
            return sorted(chain, key=lambda r: r["id"])
        assert time.monotonic() < deadline, f"the chain did not end: {chain}"
        time.sleep(0.2)


@pytest.fixture(params=["local", "celery"])
def research_env(request, env, workers, inbox):
    env |= {"BATON_MODEL": "research:script", "BATON_SMTP_URL": inbox.url}
    if request.param == "celery":
        workers.start(imports=(str(APPS / "research_model.py"),))
    return request.param, env


def _start(runtime: str, env, ask: dict) -> str:
    args = ["run", RESEARCH, "--input", json.dumps(ask), "--json"]
    if runtime == "celery":
        return baton(env, *args[:-1], "--runtime", "celery", check=0).stdout.strip()
    return json.loads(baton(env, *args).stdout)["id"]


def test_a_report_checked_against_its_sources_is_sent_once(research_env, sources, inbox):
    runtime, env = research_env
    (control(env) / "draft.invent").write_text("1")  # the first draft makes a claim no source states
    run_id = _start(runtime, env, {"topic": "ACME in Q3", "sources": str(sources), "email_to": "board@example.com"})
    gathered, reported = _chain(env, run_id)
    assert gathered["pipeline"] == "research" and gathered["status"] == "succeeded", gathered
    assert reported["pipeline"] == "research-report" and reported["status"] == "succeeded", reported
    shown = json.loads(baton(env, "show", gathered["id"], "--json").stdout)
    facts = shown["steps"][1]["output"]["facts"]
    assert {f["source"] for f in facts} == {"q3-results.txt", "customers.md", "board-minutes.pdf"}
    assert any("board-minutes.pdf says" in f["text"] for f in facts)  # the PDF was read
    assert shown["steps"][2]["output"]["risk_flags"] == ["Dependence on a few large customers."]
    report = json.loads(baton(env, "show", reported["id"], "--json").stdout)
    written = report["steps"][0]["output"]
    assert written["revisions"] == 1 and len(written["claims"]) == 2  # sent back once, the invention dropped
    assert all(c["fact_ids"] == [1] for c in written["claims"])
    assert report["steps"][0]["calls"] and {c["model"] for c in report["steps"][0]["calls"]} == {"script"}
    (message,) = inbox.messages
    assert b"Subject: Research report: ACME in Q3" in message and b"board@example.com" in message
    assert b"Dependence on a few large customers." in message and b"double" not in message


def test_claims_no_source_states_fail_the_report_after_the_revisions_allowed(research_env, sources, inbox):
    runtime, env = research_env
    (control(env) / "draft.invent").write_text("9")
    ask = {"topic": "ACME in Q3", "sources": str(sources), "email_to": "board@example.com", "max_revisions": 1}
    _, reported = _chain(env, _start(runtime, env, ask))
    assert reported["status"] == "failed"
    shown = json.loads(baton(env, "show", reported["id"], "--json").stdout)
    error = shown["steps"][0]["error"]
    assert shown["steps"][0]["name"] == "write" and shown["steps"][1]["status"] == "pending"
    assert error["type"] == "UnsupportedClaims"
    assert "after 1 revision(s)" in error["message"] and "ACME will double its revenue" in error["message"]
    assert inbox.messages == []


def test_with_approval_the_email_waits_for_a_person(research_env, sources, inbox):
    runtime, env = research_env
    ask = {"topic": "ACME in Q3", "sources": str(sources), "email_to": "board@example.com", "approval": True}
    _, reported = _chain(env, _start(runtime, env, ask))
    assert reported["pipeline"] == "research-report-approved" and reported["status"] == "awaiting_approval"
    assert inbox.messages == []
    # The approving process runs the rest here on local: it loads the scripted model's provider as a user's own.
    baton(env, "approve", reported["id"], "--import", str(APPS / "research_model.py"), check=0)
    assert wait_until_finished(env, reported["id"])["status"] == "succeeded"
    assert len(inbox.messages) == 1


@pytest.fixture
def local_research(env, inbox):
    return env | {"BATON_MODEL": "research:script", "BATON_SMTP_URL": inbox.url}


def test_retrying_from_the_email_step_names_the_email_and_sends_it_again_only_with_yes(local_research, sources, inbox):
    env = local_research
    ask = {"topic": "ACME in Q3", "sources": str(sources), "email_to": "board@example.com"}
    _, reported = _chain(env, _start("local", env, ask))
    assert reported["status"] == "succeeded" and len(inbox.messages) == 1
    # The report's pattern is the shipped one, imported without the scripted model's provider: `send` calls
    # no model, and a refused retry none either.
    env = env | {"BATON_MODEL": "local"}
    refused = baton(env, "resume", reported["id"], "--from", "send")  # no terminal to ask on
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert f"the effect 'email' of step 'send' (key {reported['id']}/send/email, done 20" in line, line
    assert line.endswith("add --yes to do it again"), line
    assert len(inbox.messages) == 1 and show(env, reported["id"])["steps"][1]["attempts"] == 1
    again = json.loads(baton(env, "resume", reported["id"], "--from", "send", "--yes", "--json", check=0).stdout)
    assert again["status"] == "succeeded" and len(inbox.messages) == 2
    # Asked again, the latest e-mail (the second, under its own key) is the one named.
    line = baton(env, "resume", reported["id"], "--from", "write", check=2).stderr
    assert f"key {reported['id']}/send/email/2," in line and f"key {reported['id']}/send/email," not in line


def test_a_bad_request_names_the_field_before_anything_runs(env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for ask, field in (
        ({"topic": "x", "sources": str(tmp_path / "nope"), "email_to": "a@b.c"}, "is not a folder"),
        ({"topic": "x", "sources": str(empty), "email_to": "a@b.c"}, "holds no .txt, .md or .pdf"),
        ({"topic": "x", "sources": str(empty), "email_to": "not-an-address"}, "email_to"),
    ):
        refused = baton(env, "run", RESEARCH, "--input", json.dumps(ask))
        assert refused.returncode == 2 and field in refused.stderr, refused.stderr
    assert json.loads(baton(env, "runs", "--json").stdout) == []


def _end_to_end(env, tmp_path, inbox, model: str) -> None:
    # A real model through every agent: its answers are forced into the contracts, and the checker holds
    # the draft to the facts. A model this small often writes claims no fact states: then the report fails
    # at `write`, naming them, and nothing is sent; a report that passes is sent once.
    folder = tmp_path / "acme"
    folder.mkdir()
    (folder / "q3.txt").write_text("ACME revenue grew 12% in Q3 to 4.1 million euros. ACME lost its largest customer.")
    env |= {"BATON_SMTP_URL": inbox.url}
    ask = {"topic": "ACME in Q3", "sources": str(folder), "email_to": "board@example.com", "max_revisions": 1}
    # Up to three answers per agent (two re-asks of junk), one at a time on two shared cores: minutes, at worst.
    args = ["run", "baton.examples.research:research", "--input", json.dumps(ask), "--json"]
    started = subprocess.run(
        [sys.executable, "-m", "baton", *args], env=env, capture_output=True, text=True, timeout=600
    )
    first = json.loads(started.stdout)
    if first["status"] == "failed":
        # Junk in the contract's shape (a fact of no words, a risk flag of digits) is refused at the agent that
        # wrote it: that worker fails with the raw answer kept, no report is written and nothing is sent.
        failed = [s for s in first["steps"] if s["status"] == "failed"]
        assert failed and {s["name"] for s in failed} <= {"extract", "analyse"}, first["steps"]
        assert all(s["error"]["type"] == "ContractViolation" and s["error"]["raw_output"] for s in failed), failed
        time.sleep(1)
        assert len(json.loads(baton(env, "runs", "--json").stdout)) == 1 and inbox.messages == []
        return
    gathered, reported = _chain(env, first["id"])
    assert gathered["status"] == "succeeded", gathered
    shown = json.loads(baton(env, "show", gathered["id"], "--json").stdout)
    facts = shown["steps"][1]["output"]["facts"]
    assert facts and {f["source"] for f in facts} == {"q3.txt"}
    assert {c["model"] for s in shown["steps"] for c in s["calls"]} == {model}
    report = json.loads(baton(env, "show", reported["id"], "--json").stdout)
    if report["status"] == "succeeded":
        claims = report["steps"][0]["output"]["claims"]
        assert claims and all(set(c["fact_ids"]) <= {f["id"] for f in facts} for c in claims)
        assert len(inbox.messages) == 1
    else:
        assert report["status"] == "failed", report
        assert report["steps"][0]["error"]["type"] == "UnsupportedClaims", report["steps"][0]["error"]
        assert inbox.messages == []


@MODEL
def test_end_to_end_on_the_embedded_model(env, tmp_path, inbox):
    _end_to_end(env, tmp_path, inbox, "smollm2-135m-instruct-q4_1")


def test_end_to_end_on_an_openai_compatible_server(env, tmp_path, inbox, llama_server):
    env |= {"BATON_MODEL": "openai:smollm2", "BATON_OPENAI_BASE_URL": llama_server, "OPENAI_API_KEY": "sk-loopback"}
    _end_to_end(env, tmp_path, inbox, "smollm2")


def test_a_misspelt_field_of_the_request_is_refused_naming_it_and_nothing_is_recorded(env, sources):
    ask = {"topic": "x", "sources": str(sources), "email_to": "a@b.c", "aproval": True}
    refused = baton(env, "run", RESEARCH, "--input", json.dumps(ask))
    assert refused.returncode == 2 and "field 'aproval': Extra inputs are not permitted" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert json.loads(baton(env, "runs", "--json").stdout) == []


def test_junk_analysis_fails_at_analyse_and_no_email_is_sent(research_env, sources, inbox):
    runtime, env = research_env
    (control(env) / "analysis.junk").write_text("1")  # the analyst answers "105348769" as a risk flag, always
    run_id = _start(runtime, env, {"topic": "ACME in Q3", "sources": str(sources), "email_to": "board@example.com"})
    shown = wait_until_finished(env, run_id)
    assert shown["status"] == "failed"
    analyse = next(s for s in shown["steps"] if s["name"] == "analyse")
    assert analyse["error"]["type"] == "ContractViolation" and "AnalysisResult" in analyse["error"]["message"]
    assert "105348769" in analyse["error"]["raw_output"]
    assert "risk_flags.0" in analyse["error"]["message"]
    time.sleep(1)
    assert [r for r in json.loads(baton(env, "runs", "--json").stdout) if r["pipeline"] != "research"] == []
    assert inbox.messages == []
