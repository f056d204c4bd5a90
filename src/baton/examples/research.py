"""The research-report example: the seed's do-everything agent, split into narrow agents.

    research (a supervisor)                               research.gathered          research-report
    gather --+--> extract (facts, source by source) --+--> collect ----------------> write --> send
             +--> analyse (findings, risks, actions) -+        (.approval: send waits for a person)

- `gather` reads a folder of sources (text, Markdown, PDF), at most 10 files and 6,000 characters each, and
  routes them to the two workers, which run in parallel.
- `extract` asks one small agent per source for at most 8 facts; `analyse` asks one for the seed's
  AnalysisResult (at most 5 findings, 5 risk flags, 5 recommended actions), from excerpts.
- `collect` numbers the facts and hands everything over as the event `research.gathered`.
- `write` asks the drafter for a report made only of those contracts, and the checker to tie each claim of
  it to the facts' numbers; a claim tied to no fact sends the draft back to the drafter with what was
  wrong, at most `max_revisions` times, after which the step fails and names the claims.
- `send` e-mails the summary over BATON_SMTP_URL, once (`side_effect=True`: a retry or a worker lost after
  the send does not send it again). With `"approval": true` it waits for `baton approve RUN_ID` first.

The agents use BATON_MODEL (the embedded model by default).

    baton run baton.examples.research:research --input '{"topic": "ACME Q3", "sources": "docs/acme",
        "email_to": "team@example.com"}'
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from baton import Agent, Pipeline, Retry, RunError, Supervisor, emit, on, step
from baton.examples._checks import Words, grounded, source_of
from baton.mail import send_email

__all__ = [
    "AnalysisResult",
    "Brief",
    "Draft",
    "Report",
    "ResearchRequest",
    "UnsupportedClaims",
    "approved_report",
    "report",
    "research",
]

SUFFIXES = (".txt", ".md", ".markdown", ".pdf")
MAX_SOURCES = 10
MAX_CHARS = 6000
EXCERPT_CHARS = 1500

# One sentence of words: never empty, never an essay, never JSON or markup debris ("]\n{", "105348769").
Sentence = Words(3, 300)
Title = Words(1, 120)
Summary = Words(3, 500)

# Unknown fields are refused, not dropped: {"emial_to": ...} names the misspelt field instead of losing it.
STRICT = ConfigDict(extra="forbid")


class ResearchRequest(BaseModel):
    """What to research, from which sources, and whom to tell."""

    model_config = STRICT

    topic: str = Field(min_length=1, max_length=200)
    sources: str = Field(min_length=1, max_length=500, description="a folder of .txt, .md and .pdf files")
    email_to: str = Field(min_length=3, max_length=200, pattern=r"^[^@\s]+@[^@\s]+$")
    approval: bool = Field(default=False, description="wait for a person's approval before the e-mail")
    max_revisions: int = Field(default=2, ge=0, le=5, description="how often the drafter may revise")

    @field_validator("sources")
    @classmethod
    def _a_folder_with_sources(cls, value: str) -> str:
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise ValueError(f"{value!r} is not a folder")
        if not any(p.suffix.lower() in SUFFIXES for p in folder.iterdir()):
            raise ValueError(f"{value!r} holds no .txt, .md or .pdf file")
        return str(folder.resolve())


class Brief(BaseModel):
    """What the report needs of the request, handed along (the sources stay where `gather` read them)."""

    model_config = STRICT

    topic: str = Field(min_length=1, max_length=200)
    email_to: str = Field(min_length=3, max_length=200, pattern=r"^[^@\s]+@[^@\s]+$")
    approval: bool = False
    max_revisions: int = Field(default=2, ge=0, le=5)


class Document(BaseModel):
    """One source, as read (cut at its limit)."""

    model_config = STRICT

    name: str = Field(max_length=200)
    text: str = Field(max_length=MAX_CHARS)


class Sources(BaseModel):
    """The extractor's worklist."""

    model_config = STRICT

    request: Brief
    documents: list[Document] = Field(min_length=1, max_length=MAX_SOURCES)


class Excerpts(BaseModel):
    """What the analyst reads: the topic, and the start of each source."""

    model_config = STRICT

    topic: str = Field(max_length=200)
    excerpts: list[Document] = Field(min_length=1, max_length=MAX_SOURCES)


class Route(BaseModel):
    """The router's decision: both workers, each with its input."""

    model_config = STRICT

    extract: Sources | None = None
    analyse: Excerpts | None = None


class SourceFacts(BaseModel):
    """The extraction agent's answer for one source."""

    model_config = STRICT

    facts: list[Sentence] = Field(min_length=1, max_length=8, description="short facts stated in the source")

    @field_validator("facts")
    @classmethod
    def _stated_in_the_source(cls, facts: list[str], info: ValidationInfo) -> list[str]:
        source = source_of(info, ("name", "text"))
        if source is not None:
            for fact in facts:
                grounded(fact, source, what="the source")
        return facts


class Fact(BaseModel):
    """A fact, numbered, with the source it comes from."""

    model_config = STRICT

    id: int = Field(ge=1)
    source: str = Field(max_length=200)
    text: str = Field(max_length=300)


class Facts(BaseModel):
    """Every source's facts."""

    model_config = STRICT

    request: Brief
    facts: list[Fact] = Field(max_length=MAX_SOURCES * 8)


class AnalysisResult(BaseModel):
    """The seed's analysis: findings, risk flags and recommended actions, a few of each."""

    model_config = STRICT

    findings: list[Sentence] = Field(min_length=1, max_length=5)
    risk_flags: list[Sentence] = Field(max_length=5)
    recommended_actions: list[Sentence] = Field(max_length=5)


class Gathered(BaseModel):
    """What the workers produced (the merge's input)."""

    model_config = STRICT

    extract: Facts | None = None
    analyse: AnalysisResult | None = None


class ResearchBundle(BaseModel):
    """What the report is written from, and nothing else."""

    model_config = STRICT

    request: Brief
    facts: list[Fact] = Field(min_length=1, max_length=MAX_SOURCES * 8)
    analysis: AnalysisResult


class DraftBrief(BaseModel):
    """The drafter's input: the topic, the numbered facts, the analysis, and what was wrong last time."""

    model_config = STRICT

    topic: str = Field(max_length=200)
    facts: list[Fact]
    analysis: AnalysisResult
    unsupported: list[Sentence] = Field(default_factory=list, max_length=8, description="claims to drop or fix")


class Draft(BaseModel):
    """The drafter's answer."""

    model_config = STRICT

    title: Title
    summary: Summary
    claims: list[Sentence] = Field(min_length=1, max_length=8, description="each claim one sentence, from the facts")

    @field_validator("summary")
    @classmethod
    def _summary_of_the_facts(cls, summary: str, info: ValidationInfo) -> str:
        source = source_of(info, ("topic", "facts", "analysis"))
        if source is not None:
            grounded(summary, source, what="the facts", least=2)
        return summary


class CheckBrief(BaseModel):
    """The checker's input: the claims, numbered from 1, and the numbered facts."""

    model_config = STRICT

    claims: list[Sentence] = Field(max_length=8)
    facts: list[Fact]


class Verdict(BaseModel):
    """The checker's verdict on one claim."""

    model_config = STRICT

    claim: int = Field(ge=1, le=8, description="the claim's number")
    fact_ids: list[int] = Field(max_length=5, description="the numbers of the facts that state it; empty if none")


class Check(BaseModel):
    """The checker's answer."""

    model_config = STRICT

    verdicts: list[Verdict] = Field(max_length=8)


class CheckedClaim(BaseModel):
    """A claim of the report, with the facts behind it."""

    model_config = STRICT

    text: str = Field(max_length=300)
    fact_ids: list[int] = Field(min_length=1, max_length=5)


class Report(BaseModel):
    """The checked report."""

    model_config = STRICT

    request: Brief
    title: str = Field(max_length=120)
    summary: str = Field(max_length=500)
    claims: list[CheckedClaim] = Field(min_length=1, max_length=8)
    analysis: AnalysisResult
    sources: list[str] = Field(max_length=MAX_SOURCES)
    revisions: int = Field(ge=0, le=5)


class Sent(BaseModel):
    """The summary e-mail that went out."""

    model_config = STRICT

    message_id: str
    to: list[str]


class UnsupportedClaims(RunError):
    """The report still made claims the sources do not state after every revision allowed."""


extractor = Agent(
    "extract-facts",
    instructions="You read one source document. List short facts it states, each one sentence, nothing else.",
    input=Document,
    output=SourceFacts,
    max_tokens=400,
)

analyst = Agent(
    "analyse-sources",
    instructions=(
        "You are an analyst. From the excerpts, give the main findings about the topic, the risks they show, "
        "and the actions you recommend. A few short sentences each."
    ),
    input=Excerpts,
    output=AnalysisResult,
    max_tokens=500,
)

drafter = Agent(
    "draft-report",
    instructions=(
        "You write a short research report from the numbered facts and the analysis only: a title, a summary, "
        "and claims, each one sentence that the facts state. If claims are listed as unsupported, drop or "
        "correct them."
    ),
    input=DraftBrief,
    output=Draft,
    max_tokens=600,
)

checker = Agent(
    "check-claims",
    instructions=(
        "You check a report against its sources. For each numbered claim, give the numbers of the facts "
        "that state it. Give no number for a claim that no fact states."
    ),
    input=CheckBrief,
    output=Check,
    max_tokens=400,
)

# A model's transient failures are retried; an answer that breaks its contract is re-asked by the agent.
RETRY = Retry(max_attempts=3, backoff=0.5, max_delay=5.0)


def read_sources(folder: str) -> list[Document]:
    """The sources in `folder`, by name, each cut at 6,000 characters; PDFs through pypdf."""
    documents = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() not in SUFFIXES or not path.is_file():
            continue
        if path.suffix.lower() == ".pdf":
            from pypdf import PdfReader

            text = "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
        documents.append(Document(name=path.name[:200], text=" ".join(text.split())[:MAX_CHARS]))
        if len(documents) == MAX_SOURCES:
            break
    return documents


@step(retry=RETRY)
def gather(request: ResearchRequest) -> Route:
    """Read the sources and hand them to both workers: the whole text to extract, excerpts to analyse."""
    documents = read_sources(request.sources)
    excerpts = [Document(name=d.name, text=d.text[:EXCERPT_CHARS]) for d in documents]
    return Route(
        extract=Sources(request=Brief(**request.model_dump(exclude={"sources"})), documents=documents),
        analyse=Excerpts(topic=request.topic, excerpts=excerpts),
    )


@step(retry=RETRY)
def extract(sources: Sources) -> Facts:
    """Ask for each source's facts, one source at a time, and number them."""
    facts: list[Fact] = []
    for document in sources.documents:
        for text in extractor.execute(document).facts:
            facts.append(Fact(id=len(facts) + 1, source=document.name, text=text[:300]))
    return Facts(request=sources.request, facts=facts)


@step(retry=RETRY)
def analyse(excerpts: Excerpts) -> AnalysisResult:
    """Ask for the findings, risk flags and recommended actions."""
    return analyst.execute(excerpts)


@step(retry=RETRY)
def collect(gathered: Gathered) -> ResearchBundle:
    """Put the workers' contracts together and announce them (to the report, or to a person first)."""
    if gathered.extract is None or gathered.analyse is None:
        raise RunError("the research needs both the facts and the analysis")
    bundle = ResearchBundle(request=gathered.extract.request, facts=gathered.extract.facts, analysis=gathered.analyse)
    emit("research.gathered.approval" if bundle.request.approval else "research.gathered", bundle)
    return bundle


research = Supervisor("research", router=gather, workers={"extract": extract, "analyse": analyse}, merge=collect)


def check_draft(draft: Draft, facts: list[Fact]) -> tuple[list[CheckedClaim], list[str]]:
    """Ask the checker, then hold its answer to the facts: (claims backed by real facts, the others)."""
    verdicts = checker.execute(CheckBrief(claims=draft.claims, facts=facts)).verdicts
    known = {f.id for f in facts}
    backed: dict[int, list[int]] = {}
    for v in verdicts:
        ids = [i for i in v.fact_ids if i in known]  # a fact number that does not exist backs nothing
        if ids and 1 <= v.claim <= len(draft.claims):
            backed.setdefault(v.claim, ids)
    supported = [CheckedClaim(text=draft.claims[n - 1][:300], fact_ids=ids[:5]) for n, ids in sorted(backed.items())]
    unsupported = [c for n, c in enumerate(draft.claims, start=1) if n not in backed]
    return supported, unsupported


@step(retry=RETRY)
def write(bundle: ResearchBundle) -> Report:
    """Draft, check every claim against the facts, and send the draft back while a claim has none."""
    unsupported: list[str] = []
    for revision in range(bundle.request.max_revisions + 1):
        brief = DraftBrief(
            topic=bundle.request.topic, facts=bundle.facts, analysis=bundle.analysis, unsupported=unsupported[:8]
        )
        draft = drafter.execute(brief)
        supported, unsupported = check_draft(draft, bundle.facts)
        if not unsupported:
            return Report(
                request=bundle.request, title=draft.title, summary=draft.summary, claims=supported,
                analysis=bundle.analysis, sources=sorted({f.source for f in bundle.facts}), revisions=revision,
            )  # fmt: skip
    raise UnsupportedClaims(
        f"after {bundle.request.max_revisions} revision(s), {len(unsupported)} claim(s) of the draft are stated by "
        f"no source: " + "; ".join(repr(c) for c in unsupported)
    )


def summary_email(r: Report) -> tuple[str, str]:
    """The e-mail's subject and body: the summary, each claim with its facts, the risks and the actions."""
    lines = [r.summary, "", "Claims (with the facts that state them):"]
    lines += [f"- {c.text} [facts {', '.join(map(str, c.fact_ids))}]" for c in r.claims]
    lines += ["", "Risk flags:"] + [f"- {x}" for x in r.analysis.risk_flags or ["none"]]
    lines += ["", "Recommended actions:"] + [f"- {x}" for x in r.analysis.recommended_actions or ["none"]]
    lines += ["", f"Sources: {', '.join(r.sources)}"]
    return f"Research report: {r.title}", "\n".join(lines)


@step(side_effect=True, retry=RETRY)
def send(r: Report) -> Sent:
    """E-mail the summary, once."""
    subject, body = summary_email(r)
    return Sent(**send_email(r.request.email_to, subject, body))


@step(name="send_approved", side_effect=True, approval=True, retry=RETRY)
def send_approved(r: Report) -> Sent:
    """E-mail the summary, once, after a person approved it."""
    subject, body = summary_email(r)
    return Sent(**send_email(r.request.email_to, subject, body))


report = on("research.gathered")(Pipeline("research-report", [write, send]))
approved_report = on("research.gathered.approval")(Pipeline("research-report-approved", [write, send_approved]))
