"""The document-processing demo: extract -> chunk -> summarise -> classify, over a bundled sample.

Until baton's model providers land, the four steps are plain Python (sentence scoring and keyword
matching), so the demo runs anywhere; the contracts between them are the ones the agents will keep.
"""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from baton.errors import UserError
from baton.patterns import Pipeline
from baton.steps import step

__all__ = [
    "Chunks",
    "Classification",
    "Document",
    "ExtractionResult",
    "Summary",
    "document_pipeline",
    "load_document",
]

Label = Literal["finance", "operations", "legal", "technology", "other"]


class Document(BaseModel):
    """A document to process."""

    title: str = Field(max_length=200)
    text: str = Field(min_length=1, max_length=200_000)


class ExtractionResult(BaseModel):
    """What extraction keeps of a document: at most 10 key facts and a short summary of the raw data."""

    title: str = Field(max_length=200)
    key_facts: list[str] = Field(max_length=10)
    raw_data_summary: str = Field(max_length=500)
    confidence_score: float = Field(ge=0, le=1)
    extraction_warnings: list[str] = Field(default_factory=list, max_length=10)
    paragraphs: list[str] = Field(max_length=200)


class Chunk(BaseModel):
    """A piece of the document small enough for one model call."""

    index: int = Field(ge=0)
    text: str = Field(max_length=2_000)


class Chunks(BaseModel):
    """The document cut into chunks, with the facts extraction found."""

    title: str = Field(max_length=200)
    key_facts: list[str] = Field(max_length=10)
    chunks: list[Chunk] = Field(max_length=100)


class Summary(BaseModel):
    """A summary under 500 characters, with the key facts it rests on."""

    title: str = Field(max_length=200)
    summary: str = Field(max_length=500)
    key_facts: list[str] = Field(max_length=10)


class Classification(BaseModel):
    """The document's label, from a fixed set, with a confidence."""

    title: str = Field(max_length=200)
    label: Label
    confidence: float = Field(ge=0, le=1)
    summary: str = Field(max_length=500)


_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "finance": ("revenue", "margin", "euros", "cash", "debt", "profit", "cost", "budget", "dollars"),
    "operations": ("warehouse", "delivery", "route", "capacity", "driver", "logistics", "stock", "trucks"),
    "legal": ("contract", "court", "regulation", "compliance", "lawsuit", "union", "liability"),
    "technology": ("system", "software", "cyber", "portal", "data", "cloud", "model", "tracking"),
}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@step
def extract(doc: Document) -> ExtractionResult:
    """Pick the sentences that carry figures as key facts."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc.text) if p.strip()]
    if paragraphs and paragraphs[0].lstrip("# ").strip() == doc.title:
        paragraphs = paragraphs[1:] or paragraphs  # the heading is the title, not content
    sentences = [s.strip() for p in paragraphs for s in _SENTENCE.split(p) if s.strip()]
    factual = [s for s in sentences if re.search(r"\d", s)]
    warnings = []
    if not factual:
        warnings.append("no sentence carries a figure; key facts fall back to the first sentences")
        factual = sentences
    if len(paragraphs) > 200:
        warnings.append(f"{len(paragraphs)} paragraphs; only the first 200 are kept")
    facts = [_clip(s, 300) for s in factual[:10]]
    return ExtractionResult(
        title=_clip(doc.title, 200),
        key_facts=facts,
        raw_data_summary=_clip(" ".join(sentences[:3]), 500),
        confidence_score=round(min(1.0, len(factual) / max(1, len(sentences))), 2),
        extraction_warnings=warnings,
        paragraphs=paragraphs[:200],
    )


@step
def chunk(extraction: ExtractionResult) -> Chunks:
    """Cut the paragraphs into chunks of at most 2,000 characters."""
    pieces: list[str] = []
    current = ""
    for paragraph in extraction.paragraphs:
        for part in [paragraph[i : i + 2000] for i in range(0, len(paragraph), 2000)]:
            if current and len(current) + len(part) + 2 > 2000:
                pieces.append(current)
                current = ""
            current = f"{current}\n\n{part}" if current else part
    if current:
        pieces.append(current)
    return Chunks(
        title=extraction.title,
        key_facts=extraction.key_facts,
        chunks=[Chunk(index=i, text=t) for i, t in enumerate(pieces[:100])],
    )


@step
def summarise(chunks: Chunks) -> Summary:
    """Summarise with the lead sentence of each chunk, under 500 characters."""
    leads = [_SENTENCE.split(c.text.strip(), maxsplit=1)[0] for c in chunks.chunks]
    return Summary(title=chunks.title, summary=_clip(" ".join(leads), 500), key_facts=chunks.key_facts)


@step
def classify(summary: Summary) -> Classification:
    """Label the document by the keywords its summary and facts use most."""
    words = Counter(re.findall(r"[a-z]+", " ".join([summary.summary, *summary.key_facts]).lower()))
    scores = {label: sum(words[w] for w in keywords) for label, keywords in _KEYWORDS.items()}
    best = max(scores, key=lambda label: scores[label])
    total = sum(scores.values())
    label: Label = best if scores[best] > 0 else "other"  # type: ignore[assignment]
    confidence = round(scores[best] / total, 2) if total else 0.0
    return Classification(title=summary.title, label=label, confidence=confidence, summary=summary.summary)


def document_pipeline() -> Pipeline:
    """The demo pipeline: extract -> chunk -> summarise -> classify."""
    return Pipeline("demo-documents", [extract, chunk, summarise, classify], target="baton.demo:pipeline")


def load_document(path: str | None = None) -> Document:
    """The bundled sample, or the user's own text or Markdown file."""
    if path is None:
        text = resources.files("baton.demo").joinpath("sample.txt").read_text(encoding="utf-8")
        return Document(title=text.splitlines()[0].strip(), text=text)
    file = Path(path)
    if file.suffix.lower() == ".pdf":
        raise UserError(f"{file}: PDF input arrives with baton's model providers; give a text or Markdown file")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {file} as UTF-8 text: {exc}") from None
    if not text.strip():
        raise UserError(f"{file} is empty")
    first = next((line.strip("# ").strip() for line in text.splitlines() if line.strip()), file.stem)
    return Document(title=_clip(first, 200), text=_clip(text, 200_000))


pipeline = document_pipeline()
