"""A short chain on events, for `baton run` following it: the pipeline `orders` places an order and emits
`order.placed`, whose subscriber `ship` ships it (or, with `approval`, `order.approval`, whose subscriber
`ship-approved` waits for a person first). `plain` emits nothing. Steps obey the switches of `switches.py`
(count, fail, block, crash) under their names."""

from pydantic import BaseModel, Field
from switches import _control

from baton import Pipeline, Retry, emit, on, step

ONCE = Retry(max_attempts=1)


class Order(BaseModel):
    item: str = Field(min_length=1, max_length=50)
    approval: bool = False


class Shipped(BaseModel):
    item: str = Field(max_length=50)
    carrier: str = Field(max_length=20)


@step(retry=ONCE)
def place(order: Order) -> Order:
    _control("place")
    emit("order.approval" if order.approval else "order.placed", order)
    return order


@step(retry=ONCE)
def ship(order: Order) -> Shipped:
    _control("ship")
    return Shipped(item=order.item, carrier="post")


@step(name="ship_approved", retry=ONCE, approval=True)
def ship_approved(order: Order) -> Shipped:
    _control("ship_approved")
    return Shipped(item=order.item, carrier="post")


@step(retry=ONCE)
def keep(order: Order) -> Order:
    _control("keep")
    return order


orders = Pipeline("orders", [place])
shipping = on("order.placed")(Pipeline("ship", [ship]))
approved_shipping = on("order.approval")(Pipeline("ship-approved", [ship_approved]))
plain = Pipeline("plain", [keep])
