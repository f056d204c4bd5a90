"""Counting tokens, with the embedded model's tokenizer (no download), for what crosses boundaries."""

from __future__ import annotations

import atexit
import functools
import threading
from typing import Any

__all__ = ["count_tokens"]

_lock = threading.Lock()
# Loading redirects the process's stdout and stderr for a moment: two threads loading at once would leave
# them pointing at /dev/null. One loads; the others wait for it.
_loading = threading.Lock()


def _vocab() -> Any:
    with _loading:
        return _load_vocab()


@functools.cache
def _load_vocab() -> Any:
    try:
        from llama_cpp import Llama
        from llama_cpp._utils import suppress_stdout_stderr

        from baton.providers.local import model_path

        # llama.cpp prints its loading chatter straight to the process's stderr; keep the CLI's output clean.
        with suppress_stdout_stderr(disable=False):
            vocab = Llama(model_path=model_path(), vocab_only=True, verbose=False)
        # Freed while the interpreter still works (see LocalProvider._model).
        atexit.register(vocab.close)
        return vocab
    except Exception:  # no llama-cpp or no model: fall back to the usual 4-characters-a-token estimate
        return None


def count_tokens(text: str) -> int:
    """Tokens of `text` in the embedded model's vocabulary (an estimate when it is not installed)."""
    vocab = _vocab()
    if vocab is None:
        return (len(text.encode()) + 3) // 4
    with _lock:
        return len(vocab.tokenize(text.encode(), add_bos=False, special=False))
