"""A support chain on events, for process-level tests: intake -> ticket.received -> triage -> ticket.triaged
-> respond. Its steps obey the switches of `switches.py` (count, fail, block, crash) under their names."""

from pydantic import BaseModel, Field
from switches import _control, _transient

from baton import Retry, emit, on, step


class Request(BaseModel):
    customer: str = Field(max_length=100)
    text: str = Field(max_length=500)


class Ticket(BaseModel):
    customer: str = Field(max_length=100)
    summary: str = Field(max_length=100)


class Triaged(BaseModel):
    ticket: Ticket
    category: str = Field(max_length=20)


class Reply(BaseModel):
    body: str = Field(max_length=300)


@on("customer.request")
@step(retry=Retry(max_attempts=1))
def intake(request: Request) -> Ticket:
    _control("intake")
    ticket = Ticket(customer=request.customer, summary=request.text[:100])
    emit("ticket.received", ticket)
    return ticket


@on("ticket.received")
@step(retry=Retry(max_attempts=1))
def triage(ticket: Ticket) -> Triaged:
    _control("triage")
    triaged = Triaged(ticket=ticket, category="billing" if "charge" in ticket.summary else "other")
    emit("ticket.triaged", triaged)
    return triaged


@on("ticket.triaged")
@step(retry=Retry(max_attempts=2, backoff=0.1, max_delay=0.2))
def respond(triaged: Triaged) -> Reply:
    _control("respond")
    _transient("respond")
    return Reply(body=f"Dear {triaged.ticket.customer}, your {triaged.category} ticket is with us.")
