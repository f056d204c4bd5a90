"""The demo's numbered sentences: what a model too small to copy a sentence picks by its number."""

from __future__ import annotations

import re
import textwrap
from functools import lru_cache

from pydantic import TypeAdapter, ValidationError

from baton.examples._checks import Words

__all__ = ["MAX_SENTENCES", "beyond", "numbered", "sentences"]

# The sentences a model is shown: their numbers are a range the grammar spells out (at most 100 wide).
MAX_SENTENCES = 100
# A sentence ends at its full stop, a paragraph, or the next item of a list or a heading (Markdown).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n\s*(?=(?:[-*+]|#+|\d+[.)])\s)")
# A list item's or a heading's marker: not part of the sentence a model is shown (what is left is still
# the document's words, in order).
_MARKER = re.compile(r"^(?:[-*+]|#+|\d+[.)])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


@lru_cache(maxsize=16)
def sentences(text: str, limit: int) -> tuple[str, ...]:
    """The sentences of `text` a model may pick by number, in order (at most MAX_SENTENCES).

    A sentence longer than `limit` is cut at its commas and semicolons (at word ends only if a clause is
    still too long); a list item's or a heading's marker is taken off; a piece that is not a sentence of
    three words or more, without quotes or markup (a short heading, a row of figures, a link), is left out.
    """
    sentence_of = _sentence_adapter(limit)
    found: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        for piece in _pieces(_MARKER.sub("", " ".join(sentence.split())), limit):
            try:
                found.append(sentence_of.validate_python(piece))
            except ValidationError:
                continue
            if len(found) == MAX_SENTENCES:
                return tuple(found)
    return tuple(found)


@lru_cache(maxsize=4)
def _sentence_adapter(limit: int) -> TypeAdapter[str]:
    return TypeAdapter(Words(3, limit))


def _pieces(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence] if sentence else []
    pieces: list[str] = []
    for clause in _CLAUSE_END.split(sentence):
        if pieces and len(pieces[-1]) + 1 + len(clause) <= limit:
            pieces[-1] = f"{pieces[-1]} {clause}"
        else:
            pieces.extend(textwrap.wrap(clause, limit))
    return pieces


def numbered(lines: tuple[str, ...]) -> str:
    """`lines` one per line, numbered from 1, as a model reads them."""
    return "\n".join(f"{n}. {line}" for n, line in enumerate(lines, 1))


def beyond(numbers: list[int], lines: tuple[str, ...], what: str) -> None:
    """Raise unless each of `numbers` is the number of one of `lines` (of `what`, named in the error)."""
    beyond = sorted({n for n in numbers if n > len(lines)})
    if beyond:
        listed = ", ".join(map(str, beyond))
        raise ValueError(f"{what} has {len(lines)} numbered sentences: {listed} is not one of their numbers")
