"""The customer-triage example: three narrow agents that never call each other, only react to events.

    customer.request --intake--> ticket.received --triage--> ticket.triaged --response--> ReplyDraft

`intake` turns a customer's free text into a Ticket, `triage` gives it a category from a fixed set, a
priority and a sentiment, and `response` drafts the reply. Each is a step that asks one small agent, then
emits what the next one needs: the customer is answered (202, with the event's id) before any agent runs.
The agents use BATON_MODEL (the embedded model by default).

    baton serve --import baton.examples.triage
    curl -X POST localhost:8000/events/customer.request -d '{"customer": "Ada", "text": "I was charged twice"}'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from baton import Agent, Retry, emit, on, step
from baton.examples._checks import Words, grounded, source_of

__all__ = [
    "CustomerRequest",
    "ReplyDraft",
    "Ticket",
    "Triage",
    "TriagedTicket",
    "intake",
    "response",
    "triage",
]

Category = Literal["billing", "technical", "account", "shipping", "other"]
Priority = Literal["low", "normal", "high", "urgent"]
Sentiment = Literal["negative", "neutral", "positive"]

# A model's text must be words (no JSON or markup debris), and the summary must use the customer's words.
OneSentence = Words(3, 300)
Subject = Words(2, 120)
Body = Words(5, 1200)

# Unknown fields are refused, not dropped: {"txt": ...} names the misspelt field instead of losing it.
STRICT = ConfigDict(extra="forbid")


class CustomerRequest(BaseModel):
    """What a customer wrote."""

    model_config = STRICT

    customer: str = Field(min_length=1, max_length=100)
    text: str = Field(min_length=1, max_length=2000)


class Summary(BaseModel):
    """The intake agent's answer."""

    model_config = STRICT

    summary: OneSentence = Field(description="the customer's request in one sentence")

    @field_validator("summary")
    @classmethod
    def _in_the_customers_words(cls, summary: str, info: ValidationInfo) -> str:
        source = source_of(info, ("text",))
        if source is not None:
            grounded(summary, source, what="the customer's request")
        return summary


class Ticket(BaseModel):
    """A request on its way through support: who, what in one sentence, and their words."""

    model_config = STRICT

    customer: str = Field(max_length=100)
    summary: str = Field(max_length=300)
    request: str = Field(max_length=2000)


class Triage(BaseModel):
    """The triage agent's answer: only values from fixed sets."""

    model_config = STRICT

    category: Category = Field(description="billing, technical, account, shipping or other")
    priority: Priority = Field(description="low, normal, high or urgent")
    sentiment: Sentiment = Field(description="how the customer feels: negative, neutral or positive")


class TriagedTicket(BaseModel):
    """A ticket with its triage."""

    model_config = STRICT

    ticket: Ticket
    triage: Triage


class Reply(BaseModel):
    """The response agent's answer."""

    model_config = STRICT

    subject: Subject = Field(description="the reply's subject line")
    body: Body = Field(description="a short, polite reply to the customer")


class ReplyDraft(BaseModel):
    """The reply, ready for a person to check and send."""

    model_config = STRICT

    customer: str = Field(max_length=100)
    category: Category
    priority: Priority
    subject: str = Field(max_length=120)
    body: str = Field(max_length=1200)


summariser = Agent(
    "summarise-request",
    instructions="You work in customer support. Restate the customer's request in one short sentence.",
    input=CustomerRequest,
    output=Summary,
    max_tokens=200,
)

classifier = Agent(
    "classify-ticket",
    instructions=(
        "You triage customer support tickets. Choose the category, how urgent it is, and how the customer "
        "feels. Charges, refunds and invoices are billing; errors and bugs are technical; login and profile "
        "are account; deliveries are shipping."
    ),
    input=Ticket,
    output=Triage,
    max_tokens=100,
)

writer = Agent(
    "draft-reply",
    instructions=(
        "You write replies for customer support. Thank the customer, say what happens next for their "
        "ticket, and keep it short and polite. Do not promise refunds or dates."
    ),
    input=TriagedTicket,
    output=Reply,
    max_tokens=400,
)

# A model's transient failures (a busy server) are retried; an answer that breaks its contract is re-asked
# by the agent itself before it counts.
RETRY = Retry(max_attempts=3, backoff=0.5, max_delay=5.0)


@on("customer.request")
@step(retry=RETRY)
def intake(request: CustomerRequest) -> Ticket:
    """A customer's free text becomes a Ticket, announced as `ticket.received`."""
    summary = summariser.execute(request)
    ticket = Ticket(customer=request.customer, summary=summary.summary, request=request.text)
    emit("ticket.received", ticket)
    return ticket


@on("ticket.received")
@step(retry=RETRY)
def triage(ticket: Ticket) -> TriagedTicket:
    """A ticket gets its category, priority and sentiment, announced as `ticket.triaged`."""
    triaged = TriagedTicket(ticket=ticket, triage=classifier.execute(ticket))
    emit("ticket.triaged", triaged)
    return triaged


@on("ticket.triaged")
@step(retry=RETRY)
def response(triaged: TriagedTicket) -> ReplyDraft:
    """A triaged ticket gets a drafted reply."""
    reply = writer.execute(triaged)
    return ReplyDraft(
        customer=triaged.ticket.customer,
        category=triaged.triage.category,
        priority=triaged.triage.priority,
        subject=reply.subject,
        body=reply.body,
    )
