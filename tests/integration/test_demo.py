"""`baton demo` as a new user runs it."""

import json
import os
import subprocess
import sys

import pytest

from baton.demo import Classification


@pytest.fixture
def env(sqlite_url):
    return {k: v for k, v in os.environ.items() if not k.startswith("BATON_")} | {"BATON_DATABASE_URL": sqlite_url}


def demo(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "baton", "demo", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_demo_runs_the_four_step_document_pipeline(env):
    result = demo(env, "--json")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert [s["name"] for s in run["steps"]] == ["extract", "chunk", "summarise", "classify"]
    assert all(s["status"] == "succeeded" for s in run["steps"])
    extraction = run["steps"][0]["output"]
    assert 1 <= len(extraction["key_facts"]) <= 10
    assert "48.2 million euros" in " ".join(extraction["key_facts"])
    result_model = Classification.model_validate(run["output"])
    assert len(result_model.summary) <= 500


def test_the_demo_prints_progress_the_result_and_the_run_id(env):
    result = demo(env)
    assert result.returncode == 0, result.stderr
    assert "✓ classify" in result.stderr
    run_id = json.loads(
        subprocess.run(
            [sys.executable, "-m", "baton", "runs", "--json"], env=env, capture_output=True, text=True, check=True
        ).stdout
    )[0]["id"]
    assert run_id in result.stdout and '"label"' in result.stdout


def test_the_demo_reads_your_own_markdown(env, tmp_path):
    (tmp_path / "notes.md").write_text("# Contract review\n\nThe court ruled the contract void in 2024.\n")
    result = demo(env, "--file", str(tmp_path / "notes.md"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"]["title"] == "Contract review"


def test_the_demo_refuses_a_pdf_for_now_with_a_clear_error(env, tmp_path):
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4")
    result = demo(env, "--file", str(tmp_path / "report.pdf"))
    assert result.returncode == 2 and "PDF" in result.stderr
