"""The 3-agent pipeline that `concurrency.py` runs: extract -> summarise -> classify a support ticket.

A module of its own so that the Celery worker imports the same pipeline (`baton worker --import
bench/concurrency_app.py`). `STAGES` is what the floor (plain `openai.AsyncOpenAI`, no framework) sends as
well: the same instructions, the same JSON schemas, the same contracts to parse the answers with.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from baton import Agent, Pipeline

MODEL = "bench-model"


class Ticket(BaseModel):
    ticket_id: str = Field(min_length=1, max_length=40)
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=4000)


class Extracted(BaseModel):
    """What the ticket says, as facts."""

    customer: str = Field(min_length=1, max_length=80, description="the customer's name as written")
    product: str = Field(min_length=1, max_length=80)
    problem: str = Field(min_length=10, max_length=300, description="the problem in one sentence")
    order_id: str | None = Field(default=None, max_length=40)
    amount_eur: float | None = Field(ge=0, le=100_000, description="the amount in dispute, if any")
    quantity: int = Field(ge=1, le=1000)
    mentions: list[str] = Field(min_length=1, max_length=10, description="products or people named")


class Summary(BaseModel):
    headline: str = Field(min_length=5, max_length=120)
    summary: str = Field(min_length=20, max_length=600)
    sentiment: Literal["negative", "neutral", "positive"]
    urgency: int = Field(ge=1, le=5)
    key_points: list[str] = Field(min_length=1, max_length=5)


class Category(StrEnum):
    BILLING = "billing"
    SHIPPING = "shipping"
    DEFECT = "product_defect"
    ACCOUNT = "account"
    OTHER = "other"


class Tag(BaseModel):
    name: str = Field(min_length=2, max_length=30)
    weight: float = Field(gt=0, le=1)


class Classification(BaseModel):
    category: Category
    priority: Literal["p1", "p2", "p3", "p4"]
    confidence: float = Field(ge=0, le=1)
    route_to: str = Field(min_length=2, max_length=40, description="the team that takes the ticket")
    tags: list[Tag] = Field(min_length=1, max_length=5)
    escalate: bool


# (name, instructions, input contract, output contract), in order.
STAGES: list[tuple[str, str, type[BaseModel], type[BaseModel]]] = [
    (
        "extract",
        "Read the support ticket and extract the facts it states: who, which product, what went wrong, the "
        "order and amount if given. Do not guess what the ticket does not say.",
        Ticket,
        Extracted,
    ),
    (
        "summarise",
        "Summarise the extracted facts for a support agent: a headline, two or three sentences, the "
        "customer's sentiment, an urgency from 1 (can wait) to 5 (now), and the key points.",
        Extracted,
        Summary,
    ),
    (
        "classify",
        "Classify the summarised ticket: its category, a priority from p1 (highest) to p4, your confidence, "
        "the team to route it to, a few weighted tags, and whether a human must look at it today.",
        Summary,
        Classification,
    ),
]

PIPELINE = Pipeline(
    "bench-concurrency",
    [
        Agent(name, instructions=instructions, input=inp, output=out, model=f"openai:{MODEL}")
        for name, instructions, inp, out in STAGES
    ],
)


def ticket(i: int) -> Ticket:
    """The `i`th input: a plausible ticket, a little different each time."""
    products = ["router X2", "kettle K9", "desk lamp", "e-reader", "headphones"]
    product = products[i % len(products)]
    return Ticket(
        ticket_id=f"T-{i:06d}",
        subject=f"Problem with my {product} (order #{100_000 + i})",
        body=(
            f"Hello, I bought a {product} on order #{100_000 + i} and was charged {20 + i % 80}.99 EUR twice. "
            f"The parcel arrived late and the device stops after {1 + i % 9} minutes. I would like a refund of "
            "the second charge and a replacement, or my money back. Regards, Customer " + str(i)
        ),
    )
