"""The document-processing demo: extract -> chunk -> summarise -> classify, on the embedded model.

Three agents and one plain step, each boundary a bounded contract: the extractor keeps at most 10 key
facts and a summary under 500 characters; the chunker hands the summariser a few facts at a time; the
classifier sees only the short summaries and picks a label from a fixed set.

The extractor's model is shown the document's sentences numbered and answers with the numbers of the key
ones (`Picks`): a 135M-parameter model cannot copy a fact without garbling it, but it can pick one, and the
key facts it hands on are then the document's own sentences.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from baton.agents import Agent
from baton.demo._sentences import MAX_SENTENCES, beyond, numbered, sentences
from baton.errors import UserError
from baton.examples._checks import Words, content_words, grounded, source_of, words_of
from baton.patterns import Pipeline
from baton.providers import Message
from baton.steps import step

__all__ = [
    "Chunks",
    "Classification",
    "Classifier",
    "Document",
    "ExtractionResult",
    "Extractor",
    "LabelPick",
    "Picks",
    "Summaries",
    "document_pipeline",
    "document_sentences",
    "evidence_lines",
    "load_document",
]

# What fits the embedded model's context with room for its answer (about 1,500 tokens of text).
MAX_TEXT = 6_000

Label = Literal["finance", "operations", "legal", "technology", "other"]

# Bounds on every string: the grammar that forces the model's JSON also caps each string, so even a tiny
# model that starts repeating itself ends its answer inside the contract. Beyond the shape, each string must
# be words (baton.examples._checks): a fact of "]\n{" or "name=" is re-asked, never handed on. A key fact is
# a sentence of the document quoted word for word (its extractor picks it by number): room for a long one.
FACT_LENGTH = 200
Fact = Words(3, FACT_LENGTH)
# A warning: the embedded model, asked for one, wrote the numbers of the sentences it had picked again.
Line = Words(2, 150, letter_first=True)
Summary = Words(3, 500)
Overall = Words(3, 300)
EVIDENCE_LENGTH = 120
Evidence = Words(1, EVIDENCE_LENGTH)

# Unknown fields are refused, not dropped: {"txt": ...} names the misspelt field instead of losing it.
STRICT = ConfigDict(extra="forbid")

# Words that mark each label: a label's evidence must hold one, so a label is shown, not guessed ("other" needs
# none). Stems, matched at the start of a word of the evidence.
CUES: dict[str, tuple[str, ...]] = {
    "finance": (
        "revenue", "profit", "cost", "price", "money", "euro", "dollar", "budget", "cash", "debt", "margin",
        "invoice", "payment", "tax", "financ", "fund", "invest", "bank", "loan", "earning", "sales", "income",
        "expens", "million", "billion", "pay", "spend", "fee",
    ),
    "operations": (
        "operat", "logistic", "warehouse", "deliver", "shipping", "supply", "route", "capacity", "staff",
        "driver", "customer", "process", "production", "inventory", "stock", "facilit", "fleet", "schedul",
        "site", "truck", "workforce", "employee", "team", "plan",
    ),
    "legal": (
        "legal", "law", "court", "contract", "licen", "agreement", "regulat", "complian", "right", "liabil",
        "clause", "patent", "copyright", "warrant", "lawsuit", "attorney", "terms", "permission", "damages",
        "ruling", "ruled", "void",
    ),
    "technology": (
        "software", "code", "python", "system", "data", "comput", "network", "api", "librar", "package",
        "program", "test", "cyber", "digital", "server", "model", "version", "install", "platform", "tech",
        "app", "web", "internet", "algorithm", "database", "portal", "tool", "valid", "json", "type", "module",
    ),
}  # fmt: skip


class Document(BaseModel):
    """A document to process."""

    model_config = STRICT

    title: str = Field(max_length=200)
    text: str = Field(min_length=1, max_length=MAX_TEXT)


class ExtractionResult(BaseModel):
    """What extraction keeps of a document: at most 10 key facts and a summary under 500 characters."""

    model_config = STRICT

    key_facts: list[Fact] = Field(
        min_length=1, max_length=10, description="sentences of the document, each a key fact with its figures or names"
    )
    raw_data_summary: Summary = Field(description="what the document is about, in two sentences")
    confidence_score: float = Field(ge=0, le=1, description="0 to 1: how sure the extraction is")
    extraction_warnings: list[Line] = Field(
        default_factory=list, max_length=3, description="anything unclear in the document; often empty"
    )

    @field_validator("key_facts")
    @classmethod
    def _facts_from_the_document(cls, facts: list[str], info: ValidationInfo) -> list[str]:
        source = source_of(info, ("title", "text"))
        if source is not None:
            quoted = " ".join(source.split())
            for fact in facts:
                if fact not in quoted:
                    raise ValueError(f"{fact[:60]!r} is not a sentence of the document: quote it, word for word")
        return facts

    @field_validator("raw_data_summary")
    @classmethod
    def _summary_of_the_document(cls, summary: str, info: ValidationInfo) -> str:
        return _of_the_document(summary, info)


def _of_the_document(summary: str, info: ValidationInfo) -> str:
    source = source_of(info, ("title", "text"))
    if source is not None:
        grounded(summary, source, what="the document", least=2)
    return summary


def document_sentences(document: Document) -> tuple[str, ...]:
    """The sentences of the document the extractor is shown, numbered from 1, to pick its key facts from."""
    return sentences(document.text, FACT_LENGTH)


SentenceNumber = Annotated[int, Field(ge=1, le=MAX_SENTENCES)]


class Picks(BaseModel):
    """What the extractor's model answers: the numbers of the document's key sentences, and a summary."""

    model_config = STRICT

    key_sentences: list[SentenceNumber] = Field(
        min_length=1, max_length=10, description="the numbers of the sentences that hold key facts, at most 10"
    )
    raw_data_summary: Summary = Field(description="what the document is about, in two sentences")
    confidence_score: float = Field(ge=0, le=1, description="0 to 1: how sure the extraction is")
    extraction_warnings: list[Line] = Field(
        default_factory=list, max_length=3, description="anything unclear in the document; often empty"
    )

    @field_validator("key_sentences")
    @classmethod
    def _numbers_of_sentences_shown(cls, numbers: list[int], info: ValidationInfo) -> list[int]:
        value = (info.context or {}).get("input")
        if isinstance(value, Document):
            beyond(numbers, document_sentences(value), "the document")
        return numbers

    @field_validator("raw_data_summary")
    @classmethod
    def _summary_of_the_document(cls, summary: str, info: ValidationInfo) -> str:
        return _of_the_document(summary, info)


class Extractor(Agent):
    """An agent whose model reads the document's sentences numbered and picks the key ones by number."""

    def prompt(self, value: Document) -> list[Message]:
        """The instructions, then the document's title and its sentences, one per line, numbered from 1."""
        system, _ = super().prompt(value)
        return [system, Message("user", f"{value.title}\n\n{numbered(document_sentences(value))}")]

    def finish(self, answer: Picks, value: Document) -> ExtractionResult:
        """The picked sentences as the key facts (each once, in the model's order), with the model's summary."""
        shown = document_sentences(value)
        facts = [shown[n - 1] for n in dict.fromkeys(answer.key_sentences)]
        data = answer.model_dump(exclude={"key_sentences"}) | {"key_facts": facts}
        return ExtractionResult.model_validate(data, context={"input": value})


class Chunk(BaseModel):
    """A few facts, small enough for one model call."""

    model_config = STRICT

    index: int = Field(ge=0)
    facts: list[Fact] = Field(min_length=1, max_length=3, description="up to three key facts")


class Chunks(BaseModel):
    """The key facts cut into chunks: all the summariser needs, and nothing else."""

    model_config = STRICT

    chunks: list[Chunk] = Field(min_length=1, max_length=4)


class Summaries(BaseModel):
    """One short summary line per chunk, and an overall summary under 500 characters."""

    model_config = STRICT

    summaries: list[Line] = Field(min_length=1, max_length=4, description="one short sentence per chunk of facts")
    overall: Overall = Field(description="the whole document in at most two sentences")

    @field_validator("summaries")
    @classmethod
    def _lines_from_the_facts(cls, lines: list[str], info: ValidationInfo) -> list[str]:
        source = source_of(info, ("chunks",))
        if source is not None:
            for line in lines:
                grounded(line, source, what="the facts")
        return lines

    @field_validator("overall")
    @classmethod
    def _overall_from_the_facts(cls, overall: str, info: ValidationInfo) -> str:
        source = source_of(info, ("chunks",))
        if source is not None:
            grounded(overall, source, what="the facts", least=2)
        return overall


class Classification(BaseModel):
    """The document's label, from a fixed set, with the words that show it and a confidence."""

    model_config = STRICT

    # First, so that a model writing its answer in order picks the label after quoting what shows it.
    evidence: Evidence = Field(description="a few words quoted from the summaries that show the label")
    label: Label = Field(description="one of finance, operations, legal, technology, other")
    confidence: float = Field(ge=0, le=1, description="0 to 1: how sure the label is")

    @model_validator(mode="after")
    def _evidence_shows_the_label(self, info: ValidationInfo) -> Classification:
        _marks(self.evidence, self.label)
        source = source_of(info, ("summaries", "overall"))
        if source is not None:
            missing = sorted(content_words(self.evidence) - content_words(source))
            if missing or not content_words(self.evidence):
                raise ValueError(
                    f"the evidence {self.evidence!r} must be words quoted from the summaries "
                    f"(not found: {', '.join(missing) or 'any word'})"
                )
        return self


def _marks(evidence: str, label: str) -> None:
    cues = CUES.get(label, ())
    if cues and not any(w.startswith(cues) for w in words_of(evidence)):
        raise ValueError(
            f"the evidence {evidence!r} has no word that marks {label!r} (such as "
            f"{', '.join(cues[:4])}): quote words that show the label, or choose another label"
        )


def evidence_lines(summaries: Summaries) -> tuple[str, ...]:
    """The sentences of the summaries the classifier may quote as evidence, each short enough to be one."""
    return tuple(
        piece for line in (*summaries.summaries, summaries.overall) for piece in sentences(line, EVIDENCE_LENGTH)
    )


class LabelPick(BaseModel):
    """What the classifier's model answers: the number of the sentence of the summaries that shows its label."""

    model_config = STRICT

    evidence: SentenceNumber = Field(description="the number of the sentence that shows the label")
    label: Label = Field(description="one of finance, operations, legal, technology, other")
    confidence: float = Field(ge=0, le=1, description="0 to 1: how sure the label is")

    @model_validator(mode="after")
    def _evidence_shows_the_label(self, info: ValidationInfo) -> LabelPick:
        value = (info.context or {}).get("input")
        if isinstance(value, Summaries):
            lines = evidence_lines(value)
            beyond([self.evidence], lines, "the summaries")
            _marks(lines[self.evidence - 1], self.label)
        return self


class Classifier(Agent):
    """An agent whose model reads the summaries' sentences numbered and gives a label with the one that shows it."""

    def prompt(self, value: Summaries) -> list[Message]:
        """The instructions, then the sentences of the summaries, one per line, numbered from 1."""
        system, _ = super().prompt(value)
        return [system, Message("user", numbered(evidence_lines(value)))]

    def finish(self, answer: LabelPick, value: Summaries) -> Classification:
        """The label, with the picked sentence quoted as its evidence."""
        evidence = evidence_lines(value)[answer.evidence - 1]
        data = answer.model_dump() | {"evidence": evidence}
        return Classification.model_validate(data, context={"input": value})


def _agents(model: str | Any | None) -> tuple[Agent, Agent, Agent]:
    extract = Extractor(
        "extract",
        instructions=(
            "You are a data extraction specialist. The document's sentences are numbered. Pick the key "
            "facts: the numbers of the sentences with figures, names and decisions, at most 10. Also give a "
            "summary of at most two sentences in the document's words, a confidence_score between 0 and 1, "
            "and warnings about anything unclear. Reply with JSON only."
        ),
        input=Document,
        output=ExtractionResult,
        answer=Picks,
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
    classify = Classifier(
        "classify",
        instructions=(
            "Classify the document from its summaries, whose sentences are numbered. First give the number "
            "of the sentence that shows the label best, then the label it shows: finance, operations, legal, "
            "technology, or other. confidence is between 0 and 1. Reply with JSON only."
        ),
        input=Summaries,
        output=Classification,
        answer=LabelPick,
        model=model,
        reasks=2,
        max_tokens=100,
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
    document = Document(title=first[:200], text=text)
    if not document_sentences(document):
        # Refused before any model call: the extractor picks whole sentences, and would be shown none.
        raise UserError(
            f"{file} has no sentence the demo can pick key facts from (three words or more, without quotes, "
            "brackets or markup)"
        )
    return document, warnings


def _pdf_text(file: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(file)
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (OSError, PdfReadError) as exc:
        raise UserError(f"cannot read {file} as a PDF: {exc}") from None


pipeline = document_pipeline()
