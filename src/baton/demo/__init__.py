"""The document-processing demo: extract -> chunk -> summarise -> classify, on the embedded model.

Three agents and one plain step, each boundary a bounded contract: the extractor keeps at most 10 key
facts and a summary under 500 characters; the chunker hands the summariser a few facts at a time; the
classifier sees only the short summaries and picks a label from a fixed set.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints

from baton.agents import Agent
from baton.errors import UserError
from baton.patterns import Pipeline
from baton.steps import step

__all__ = [
    "Chunks",
    "Classification",
    "Document",
    "ExtractionResult",
    "Summaries",
    "document_pipeline",
    "load_document",
]

# What fits the embedded model's context with room for its answer (about 1,500 tokens of text).
MAX_TEXT = 6_000

Label = Literal["finance", "operations", "legal", "technology", "other"]

# Bounds on every string: the grammar that forces the model's JSON also caps each string, so even a tiny
# model that starts repeating itself ends its answer inside the contract.


def _one_line(value: object) -> object:
    # Small models break lines inside a fact; a fact is one line of prose, so runs of whitespace become one space.
    return " ".join(value.split()) if isinstance(value, str) else value


# A fact or a line is a short sentence: at least 8 characters, so stray JSON ("]", "{") is refused.
Fact = Annotated[str, BeforeValidator(_one_line), StringConstraints(min_length=8, max_length=80)]
Line = Annotated[str, BeforeValidator(_one_line), StringConstraints(min_length=8, max_length=150)]


class Document(BaseModel):
    """A document to process."""

    title: str = Field(max_length=200)
    text: str = Field(min_length=1, max_length=MAX_TEXT)


class ExtractionResult(BaseModel):
    """What extraction keeps of a document: at most 10 key facts and a summary under 500 characters."""

    key_facts: list[Fact] = Field(
        min_length=1, max_length=10, description="the document's key facts (figures, names, decisions), each short"
    )
    raw_data_summary: str = Field(max_length=500, description="what the document is about, in two sentences")
    confidence_score: float = Field(ge=0, le=1, description="0 to 1: how sure the extraction is")
    extraction_warnings: list[Line] = Field(
        default_factory=list, max_length=3, description="anything unclear in the document; often empty"
    )


class Chunk(BaseModel):
    """A few facts, small enough for one model call."""

    index: int = Field(ge=0)
    facts: list[Fact] = Field(min_length=1, max_length=3, description="up to three key facts")


class Chunks(BaseModel):
    """The key facts cut into chunks: all the summariser needs, and nothing else."""

    chunks: list[Chunk] = Field(min_length=1, max_length=4)


class Summaries(BaseModel):
    """One short summary line per chunk, and an overall summary under 500 characters."""

    summaries: list[Line] = Field(min_length=1, max_length=4, description="one short sentence per chunk of facts")
    overall: str = Field(max_length=300, description="the whole document in at most two sentences")


class Classification(BaseModel):
    """The document's label, from a fixed set, with a confidence."""

    label: Label = Field(description="one of finance, operations, legal, technology, other")
    confidence: float = Field(ge=0, le=1, description="0 to 1: how sure the label is")


def _agents(model: str | Any | None) -> tuple[Agent, Agent, Agent]:
    extract = Agent(
        "extract",
        instructions=(
            "You are a data extraction specialist. Read the document's text and return its key facts: one "
            "short sentence each, with the figures, names and decisions, at most 10. Example of a key fact: "
            "'Revenue was 10.5 million euros, up 4 percent.' Also give a summary of at most two sentences, a "
            "confidence_score between 0 and 1, and warnings about anything unclear. Reply with JSON only."
        ),
        input=Document,
        output=ExtractionResult,
        model=model,
        reasks=2,
        max_tokens=700,
    )
    summarise = Agent(
        "summarise",
        instructions=(
            "Summarise each chunk of facts in one short sentence, then write an overall summary of at most "
            "two sentences. Reply with JSON only."
        ),
        input=Chunks,
        output=Summaries,
        model=model,
        reasks=2,
        max_tokens=400,
    )
    classify = Agent(
        "classify",
        instructions=(
            "Classify the document from its summaries. label is one of: finance, operations, legal, "
            "technology, other. confidence is between 0 and 1. Reply with JSON only."
        ),
        input=Summaries,
        output=Classification,
        model=model,
        reasks=2,
        max_tokens=40,
    )
    return extract, summarise, classify


@step
def chunk(extraction: ExtractionResult) -> Chunks:
    """Cut the key facts into chunks of at most three, so each model call reads a few facts, not a document."""
    facts = extraction.key_facts
    chunks = [Chunk(index=i, facts=facts[start : start + 3]) for i, start in enumerate(range(0, len(facts), 3))]
    return Chunks(chunks=chunks)


def document_pipeline(model: str | Any | None = None) -> Pipeline:
    """The demo pipeline: extract -> chunk -> summarise -> classify (agents on `model`, default BATON_MODEL)."""
    extract, summarise, classify = _agents(model)
    return Pipeline("demo-documents", [extract, chunk, summarise, classify], target="baton.demo:pipeline")


def load_document(path: str | None = None) -> tuple[Document, list[str]]:
    """The bundled sample, or the user's own text, Markdown or PDF file; with warnings (e.g. truncation)."""
    if path is None:
        text = resources.files("baton.demo").joinpath("sample.txt").read_text(encoding="utf-8")
        title = text.splitlines()[0].strip()
        return Document(title=title, text=text[len(title) :].strip()), []
    file = Path(path)
    if file.suffix.lower() == ".pdf":
        text = _pdf_text(file)
    else:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {file} as UTF-8 text: {exc}") from None
    text = re.sub(r"[ \t]+", " ", text).strip()
    if not text:
        raise UserError(f"{file} has no text")
    first = next((line.strip("# ").strip() for line in text.splitlines() if line.strip()), file.stem)
    warnings = []
    if len(text) > MAX_TEXT:
        warnings.append(f"{file.name} has {len(text):,} characters; the demo reads the first {MAX_TEXT:,}")
        text = text[:MAX_TEXT]
    return Document(title=first[:200], text=text), warnings


def _pdf_text(file: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(file)
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (OSError, PdfReadError) as exc:
        raise UserError(f"cannot read {file} as a PDF: {exc}") from None


pipeline = document_pipeline()
