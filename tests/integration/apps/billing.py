"""The issue's example, as a user writes it."""

from pydantic import BaseModel, Field

from baton import Pipeline, Retry, step


class Invoice(BaseModel):
    customer: str = Field(max_length=80)
    amounts: list[float] = Field(max_length=50)


class Totals(BaseModel):
    customer: str
    total: float


class Letter(BaseModel):
    body: str = Field(max_length=500)


@step
def add_up(inv: Invoice) -> Totals:
    return Totals(customer=inv.customer, total=sum(inv.amounts))


@step(retry=Retry(max_attempts=4, backoff=0.5, max_delay=30, jitter=True))
def write_letter(t: Totals) -> Letter:
    return Letter(body=f"Dear {t.customer}, you owe {t.total:.2f}.")


billing = Pipeline("billing", [add_up, write_letter])
