"""Docs that cannot rot: the README's example runs, its commands are CI's, and docs/cli.md is the real help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from baton.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CLI_DOC = ROOT / "docs" / "cli.md"


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_the_quick_start_has_exactly_two_one_line_commands_and_ci_runs_the_test_one():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in re.findall(r"```bash\n(.*?)```", quick_start, flags=re.S)]
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].endswith("baton demo")
    assert commands[1].endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 -E '^python3 -m venv \\.venv && .*pytest' README.md" in ci


def test_the_readme_pipeline_runs_as_the_readme_says(tmp_path, sqlite_url):
    (tmp_path / "billing.py").write_text(code_blocks("python")[0])
    command = next(line for block in code_blocks("bash") for line in block.splitlines() if "baton run" in line)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")} | {"BATON_DATABASE_URL": sqlite_url}
    args = [sys.executable, "-m", "baton", *_split(command)[1:], "--json"]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == {"body": "Dear Ada, you owe 3.00."}


def test_every_python_example_in_the_readme_runs():
    for block in code_blocks("python"):
        # dont_inherit: the examples run as a user's file would, without this module's __future__ imports.
        exec(compile(block, "README.md", "exec", dont_inherit=True), {"__name__": "readme_example"})


def _split(command: str) -> list[str]:
    import shlex

    return shlex.split(command)


def cli_reference() -> str:
    runner = CliRunner()
    parts = ["# Command line reference\n", "Generated from the real CLI; `tests/test_docs.py` checks it.\n"]
    commands = [[], *[[name] for name in sorted(main.commands)]]
    for path in commands:
        result = runner.invoke(main, [*path, "--help"], prog_name="baton", terminal_width=100)
        assert result.exit_code == 0, result.output
        parts.append(f"## `{' '.join(['baton', *path])}`\n\n```text\n{result.output.rstrip()}\n```\n")
    return "\n".join(parts)


def test_docs_cli_md_is_the_real_help_text():
    expected = cli_reference()
    if os.environ.get("BATON_UPDATE_DOCS") == "1":
        CLI_DOC.write_text(expected)
    assert CLI_DOC.read_text() == expected, "docs/cli.md is stale: run BATON_UPDATE_DOCS=1 pytest tests/test_docs.py"
