"""The embedded model's provider with a stand-in for llama.cpp: one model a process, one generation at a time,
none of them on the event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest

from baton.providers import local
from baton.providers.base import Message
from baton.providers.local import LocalProvider

OPTIONS = {"schema": {"type": "object"}, "schema_name": "Answer", "tools": [], "max_tokens": 8, "temperature": 0.0}
MESSAGES = [Message("system", "Answer."), Message("user", "{}")]


class FakeLlama:
    """Generates slowly enough for overlapping calls to show, and notes how many ran at once and where."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = self.calls = 0
        self.threads: set[int] = set()
        self.first_call_waits_for: threading.Event | None = None
        self.loop_ran_meanwhile: bool | None = None

    def create_chat_completion(self, **request):
        with self.lock:
            self.calls += 1
            first = self.calls == 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.threads.add(threading.get_ident())
        if first and self.first_call_waits_for is not None:
            # Only the loop can set it: it does so only if it goes on running while this generation runs.
            self.loop_ran_meanwhile = self.first_call_waits_for.wait(timeout=10)
        time.sleep(0.02)
        with self.lock:
            self.in_flight -= 1
        usage = {"prompt_tokens": 3, "completion_tokens": 2}
        return {"choices": [{"message": {"content": '{"ok": true}'}}], "usage": usage}

    def tokenize(self, text: bytes, add_bos: bool = False) -> list[int]:
        return list(range(len(text.split())))

    def close(self) -> None:
        pass


@pytest.fixture
def fake(monkeypatch) -> tuple[FakeLlama, list[int]]:
    """A fresh process-wide model slot whose loader gives a FakeLlama; the list counts the loads."""
    llm, loads = FakeLlama(), []
    monkeypatch.setattr(local, "_embedded", local._Embedded())
    monkeypatch.setattr(local, "_load", lambda settings: loads.append(1) or llm)
    return llm, loads


def test_async_generations_run_one_at_a_time_off_the_loop_with_sync_ones_in_between(fake):
    llm, loads = fake
    llm.first_call_waits_for = threading.Event()
    first, second = LocalProvider(), LocalProvider()

    async def main():
        async def meanwhile():
            await asyncio.sleep(0)
            llm.first_call_waits_for.set()

        sync_callers = [
            asyncio.to_thread(second.complete, "", MESSAGES, **OPTIONS),
            asyncio.to_thread(first.complete, "", MESSAGES, **OPTIONS),
        ]
        asyncs = [p.acomplete("", MESSAGES, **OPTIONS) for p in (first, second) * 4]
        results = await asyncio.gather(*asyncs, meanwhile(), *sync_callers)
        return threading.get_ident(), [r for r in results if r is not None]

    loop_thread, completions = asyncio.run(main())
    assert [c.text for c in completions] == ['{"ok": true}'] * 10
    assert llm.loop_ran_meanwhile is True and loop_thread not in llm.threads
    assert llm.calls == 10 and llm.most_in_flight == 1
    assert loads == [1]  # two providers, one model in the process


def test_counting_tokens_shares_the_one_model(fake):
    _, loads = fake
    assert LocalProvider().count_tokens("three small words") == 3
    asyncio.run(LocalProvider().acomplete("", MESSAGES, **OPTIONS))
    assert loads == [1]


def test_the_tokenizer_loaded_by_many_threads_at_once_leaves_the_process_its_output():
    # Loading silences llama.cpp by pointing stdout and stderr at /dev/null for a moment; two loads at once
    # used to leave them there for good, and the process went mute.
    script = (
        "import sys, threading\n"
        "from baton.tokens import count_tokens\n"
        "threads = [threading.Thread(target=count_tokens, args=('x',)) for _ in range(8)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print('still heard', file=sys.stderr)\n"
        "print('still heard')\n"
    )
    for _ in range(3):  # the race is not lost every time
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "still heard" in done.stdout
        assert "still heard" in done.stderr


def test_loading_the_embedded_model_prints_nothing_of_llama_cpp():
    # llama.cpp warns on every load that the context is shorter than the model's training one; that line is
    # for whoever debugs (the logger at debug level), not in the middle of a user's progress.
    script = (
        "import logging, sys\n"
        "from baton.providers.local import LocalProvider\n"
        "caught = []\n"
        "handler = logging.Handler(logging.DEBUG)\n"
        "handler.emit = lambda record: caught.append(record.getMessage())\n"
        "logging.getLogger('baton.providers.local').addHandler(handler)\n"
        "logging.getLogger('baton.providers.local').setLevel(logging.DEBUG)\n"
        "LocalProvider().count_tokens('three small words')\n"
        "print(sum('n_ctx' in line for line in caught))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "llama" not in done.stderr and "n_ctx" not in done.stderr, done.stderr
    assert int(done.stdout.strip()) >= 1  # the line went to the debug log instead
