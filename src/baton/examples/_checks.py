"""What the shipped examples' contracts refuse of a model's answer: junk that has the right JSON shape.

A grammar forces a small model's answer into the contract's shape, not into sense: on real documents the
embedded model wrote facts such as `]\\n{` or `name=`, a summary `{{(1)`, risk flags `105348769`. These
annotated types and checks refuse such answers, so that the agent re-asks with what was wrong and, if the
junk persists, fails at that boundary with the raw answer kept. They are heuristics tuned for the examples
(private, not a promise): a user's own contracts write their own with Pydantic validators the same way.

Checks against the source read it from Pydantic's validation context, which an agent fills with its input
(`info.context["input"]`); validated anywhere else (a checkpoint replayed), only the shape checks apply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, GetJsonSchemaHandler, StringConstraints, ValidationInfo
from pydantic.json_schema import JsonSchemaValue

__all__ = [
    "Sentence",
    "Words",
    "content_words",
    "grounded",
    "one_line",
    "source_of",
    "words_of",
]

# A word is two or more letters in a row (any script); digits and punctuation are not words.
_WORD = re.compile(r"[^\W\d_]{2,}")
# What JSON, markup or template debris leaves in a string; prose needs none of these.
_DEBRIS_CHARS = '{}[]<>=\\|"'
_DEBRIS = re.compile(f"[{re.escape(_DEBRIS_CHARS)}]")
# Words too common to show that two texts are about the same thing.
_STOP = frozenset(
    {
        "about", "above", "after", "again", "against", "also", "among", "and", "any", "are", "because", "been",
        "before", "being", "below", "between", "both", "but", "can", "could", "did", "does", "doing", "down",
        "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "her", "here", "hers",
        "him", "his", "how", "into", "its", "itself", "just", "more", "most", "much", "must", "not", "now", "off",
        "once", "only", "other", "our", "ours", "out", "over", "own", "same", "she", "should", "some", "such",
        "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those",
        "through", "too", "under", "until", "very", "was", "were", "what", "when", "where", "which", "while", "who",
        "whom", "why", "will", "with", "would", "you", "your", "yours", "one", "two", "three", "new", "all", "per",
        "via", "document", "text", "summary", "fact", "facts",
    }
)  # fmt: skip


def one_line(value: object) -> object:
    """Runs of whitespace become one space: small models break lines inside what is one line of prose."""
    return " ".join(value.split()) if isinstance(value, str) else value


def words_of(text: str) -> list[str]:
    """The words of `text`: runs of two or more letters, lower-cased."""
    return [w.lower() for w in _WORD.findall(text)]


def _stem(word: str) -> str:
    # Crude on purpose: "revenues" meets "revenue", "operating" meets "operations".
    return word[:6]


def content_words(text: str) -> set[str]:
    """The stems of the words of `text` that say what it is about (three letters or more, not a stop word)."""
    return {_stem(w) for w in words_of(text) if len(w) >= 3 and w not in _STOP}


def _prose(min_words: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value and not value[0].isalnum():
            raise ValueError(f"must start with a letter or a digit, not {value[0]!r}")
        debris = sorted(set(_DEBRIS.findall(value)))
        if debris:
            shown = " ".join(repr(d) for d in debris)
            raise ValueError(f"must be plain prose, without JSON or template characters (found {shown})")
        words = words_of(value)
        if len(words) < min_words:
            raise ValueError(f"must be a sentence of at least {min_words} words (found {len(words)})")
        letters = sum(len(w) for w in words)
        visible = sum(1 for c in value if not c.isspace())
        if letters * 2 < visible:
            raise ValueError("must be mostly words, not digits or punctuation")
        return value

    return check


@dataclass(frozen=True)
class _NoDebrisPattern:
    """Writes the debris rule into the JSON schema, so that a grammar-forced model cannot even produce it."""

    max_length: int
    # What the first character may be: a digit too, but for a line that a number alone could pass for.
    first: str = "A-Za-z0-9"

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        result = handler(schema)
        # The characters the validator refuses, spelled so that llama.cpp's grammar reads them too; a line break
        # is refused here only, as `one_line` would undo it anyway. (A pattern of words, not only characters,
        # made the embedded model slower and its answers worse.)
        result["pattern"] = f'^[{self.first}][^{{}}\\[\\]<>=\\\\|"\\n\\r\\t]{{0,{self.max_length - 1}}}$'
        return result


def Words(min_words: int, max_length: int, *, letter_first: bool = False) -> Any:
    """A one-line string of at least `min_words` words, mostly letters, with no JSON or template debris
    (beginning with a letter, with `letter_first`: a grammar-forced model cannot answer a bare number)."""
    return Annotated[
        str,
        BeforeValidator(one_line),
        StringConstraints(max_length=max_length),
        AfterValidator(_prose(min_words)),
        _NoDebrisPattern(max_length, "A-Za-z" if letter_first else "A-Za-z0-9"),
    ]


# A fact, a claim, a finding or a risk flag: a short sentence of at least three words.
Sentence = Words(3, 300)


def source_of(info: ValidationInfo, fields: Iterable[str]) -> str | None:
    """The text of `fields` of the agent's input (from the validation context), or None when validated elsewhere."""
    value = (info.context or {}).get("input")
    if not isinstance(value, BaseModel):
        return None
    data = value.model_dump()
    return " ".join(_flatten(data.get(name)) for name in fields)


def _flatten(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(_flatten(v) for v in value.values())
    if isinstance(value, list | tuple):
        return " ".join(_flatten(v) for v in value)
    return ""


def grounded(text: str, source: str, *, what: str, least: int = 1) -> None:
    """Raise unless `text` shares at least `least` content words with `source` (all of them if it has fewer)."""
    own = content_words(text)
    shared = own & content_words(source)
    if len(shared) < min(least, len(own)) or not shared:
        raise ValueError(f"{text[:60]!r} shares no words with {what}: use the words of {what}, not new ones")
