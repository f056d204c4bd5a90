"""`baton demo` as a new user runs it: the document pipeline on the embedded model, offline."""

import json
import os
import subprocess
import sys
from importlib.metadata import metadata

import pytest

from baton import ScriptedModel
from baton.demo import (
    Chunks,
    Classification,
    Document,
    ExtractionResult,
    Summaries,
    document_pipeline,
    document_sentences,
    load_document,
)
from tests.parallel import MODEL


@pytest.fixture
def env(sqlite_url):
    return {k: v for k, v in os.environ.items() if not k.startswith("BATON_")} | {"BATON_DATABASE_URL": sqlite_url}


def demo(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "baton", "demo", *args], env=env, capture_output=True, text=True, timeout=600
    )


def real_documents(tmp_path) -> list[str]:
    """A document every checkout has: an installed package's README (the bundled sample has a test of its own;
    one document more for the time on 2 cores)."""
    readme = tmp_path / "pydantic-README.md"
    readme.write_text(metadata("pydantic").get_payload() or "")
    return [str(readme)]


def assert_refused_or_valid(run: dict, document: Document) -> None:
    """A run either ends with answers that pass the contracts checked against their sources, or fails at an
    agent with a ContractViolation keeping the model's raw answer, and nothing after it ran: never junk on."""
    steps = {s["name"]: s for s in run["steps"]}
    if run["status"] == "succeeded":
        extraction = ExtractionResult.model_validate(steps["extract"]["output"], context={"input": document})
        chunks = Chunks.model_validate(steps["chunk"]["output"])
        summaries = Summaries.model_validate(steps["summarise"]["output"], context={"input": chunks})
        Classification.model_validate(run["output"], context={"input": summaries})
        assert 1 <= len(extraction.key_facts) <= 10
        return
    assert run["status"] == "failed", run
    failed = next(s for s in run["steps"] if s["status"] == "failed")
    assert failed["name"] in ("extract", "summarise", "classify")
    assert failed["error"]["type"] == "ContractViolation" and failed["error"]["raw_output"], failed["error"]
    later = run["steps"][[s["name"] for s in run["steps"]].index(failed["name"]) + 1 :]
    assert all(s["status"] == "pending" and s["output"] is None for s in later)


@MODEL
def test_the_demo_on_real_documents_hands_on_valid_answers_or_fails_at_the_agent(env, tmp_path):
    # The embedded model is 135M parameters: on real documents it often writes junk in the contract's shape.
    # Whatever it writes, what goes on passes the contracts checked against the document.
    for path in real_documents(tmp_path):
        result = demo(env, "--json", *(["--file", path] if path else []))
        assert result.returncode in (0, 1), result.stderr
        run = json.loads(result.stdout)
        assert [s["name"] for s in run["steps"]] == ["extract", "chunk", "summarise", "classify"]
        assert_refused_or_valid(run, load_document(path)[0])
        extract = run["steps"][0]
        assert extract["calls"] and extract["calls"][0]["provider"] == "local"
        assert extract["tokens"]["input"] > 0 and extract["tokens"]["output"] > 0
        assert run["input_boundary_tokens"] > 100  # the document the extractor reads


@MODEL
def test_the_demo_on_the_bundled_sample_succeeds_on_the_embedded_model(env):
    # A new user's first command. The model picks sentences by number (it cannot copy them) and the
    # contracts still hold every answer against its source; the embedded model is deterministic (seed 0).
    result = demo(env, "--json")
    assert result.returncode == 0, result.stdout[-2000:]
    run = json.loads(result.stdout)
    assert [(s["name"], s["status"]) for s in run["steps"]] == [
        ("extract", "succeeded"), ("chunk", "succeeded"), ("summarise", "succeeded"), ("classify", "succeeded"),
    ]  # fmt: skip
    document = load_document()[0]
    assert_refused_or_valid(run, document)
    facts = run["steps"][0]["output"]["key_facts"]
    assert facts and set(facts) <= set(document_sentences(document))
    assert run["output"]["label"] == "finance" and "revenue" in run["output"]["evidence"]


@MODEL
def test_the_demo_prints_progress_the_result_tokens_and_the_run_id(env, tmp_path):
    (tmp_path / "notes.md").write_text(
        "# Contract review\n\nThe court ruled the supply contract void on 3 May 2024. Damages were set at "
        "1.2 million euros, payable within 30 days.\n"
    )
    result = demo(env, "--file", str(tmp_path / "notes.md"))
    # A 135M-parameter model may still give an answer that breaks a contract after its re-asks; then the
    # run fails at that step, visibly. Either way the user sees the progress, the tokens and the run id.
    assert result.returncode in (0, 1), result.stderr
    assert "▶ extract" in result.stderr
    assert "n_ctx" not in result.stderr + result.stdout and "llama_" not in result.stderr  # llama.cpp kept quiet
    runs = subprocess.run(
        [sys.executable, "-m", "baton", "runs", "--json"], env=env, capture_output=True, text=True, check=True
    )
    run_id = json.loads(runs.stdout)[0]["id"]
    assert run_id in result.stdout and "tokens in/out" in result.stdout


def test_the_same_pipeline_runs_on_a_scripted_model(store):
    model = ScriptedModel(
        [
            {
                "key_sentences": [7, 1],
                "raw_data_summary": "The Q3 report of Northwind Logistics.",
                "confidence_score": 0.9,
            },
            {"summaries": ["Revenue grew 12 percent."], "overall": "Delivery rose to 94.1 percent."},
            {"evidence": 1, "label": "finance", "confidence": 0.8},
        ]
    )
    doc, _ = load_document()
    run = document_pipeline(model).run(doc, store=store)
    # The label comes with the sentence of the summaries that shows it (a label with no evidence is refused).
    assert run.output == {"evidence": "Revenue grew 12 percent.", "label": "finance", "confidence": 0.8}
    assert json.loads(model.requests[1][1].content) == {
        "chunks": [{"index": 0, "facts": ["On-time delivery rose to 94.1 percent.", document_sentences(doc)[0]]}],
    }


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, written by hand (no PDF library needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_the_demo_reads_a_pdf(tmp_path):
    (tmp_path / "report.pdf").write_bytes(minimal_pdf("Revenue rose 12 percent in the third quarter."))
    doc, warnings = load_document(str(tmp_path / "report.pdf"))
    assert "Revenue rose 12 percent" in doc.text and warnings == []


def test_a_long_file_is_cut_with_a_warning(tmp_path):
    (tmp_path / "long.txt").write_text("word " * 5000)
    doc, warnings = load_document(str(tmp_path / "long.txt"))
    assert len(doc.text) <= 6000 and "reads the first" in warnings[0]


def test_an_unreadable_pdf_is_a_clear_error(env, tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    result = demo(env, "--file", str(tmp_path / "broken.pdf"))
    assert result.returncode == 2 and "PDF" in result.stderr


def test_a_markdown_list_is_read_as_sentences_without_its_markers(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text(
        "# Release notes\n\n- Added a new export of reports to CSV files.\n- Removed the old API that nobody "
        "used.\n## Upgrading\n1. Stop the server before you upgrade it.\n"
    )
    assert document_sentences(load_document(str(notes))[0]) == (
        "Added a new export of reports to CSV files.", "Removed the old API that nobody used.",
        "Stop the server before you upgrade it.",
    )  # fmt: skip


def test_a_document_with_no_sentence_to_pick_is_refused_before_any_model_call(env, tmp_path):
    (tmp_path / "figures.md").write_text("# Q3\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    result = demo(env, "--file", str(tmp_path / "figures.md"))
    assert result.returncode == 2 and "has no sentence the demo can pick key facts from" in result.stderr
    runs = subprocess.run([sys.executable, "-m", "baton", "runs", "--json"], env=env, capture_output=True, text=True)
    assert runs.returncode == 2 or json.loads(runs.stdout) == []  # no store was made, or it holds no run
