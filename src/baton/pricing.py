"""What model calls cost: a price table in US dollars per million tokens, which users extend."""

from __future__ import annotations

__all__ = ["PRICES", "cost_of", "register_price"]

# (input, output) US dollars per million tokens. Prices change: register_price() overrides any of them.
PRICES: dict[str, tuple[float, float]] = {
    "local": (0.0, 0.0),
    "scripted": (0.0, 0.0),
    "openai:gpt-4o": (2.50, 10.00),
    "openai:gpt-4o-mini": (0.15, 0.60),
    "openai:gpt-4.1": (2.00, 8.00),
    "openai:gpt-4.1-mini": (0.40, 1.60),
    "openai:gpt-4.1-nano": (0.10, 0.40),
    "anthropic:claude-3-5-haiku-latest": (0.80, 4.00),
    "anthropic:claude-sonnet-4-5": (3.00, 15.00),
    "anthropic:claude-opus-4-1": (15.00, 75.00),
}


def register_price(model: str, input_per_million: float, output_per_million: float) -> None:
    """Set the price of `model` (as written in `Agent(model=...)`, or a provider name for all its models)."""
    if input_per_million < 0 or output_per_million < 0:
        raise ValueError("prices are >= 0")
    PRICES[model] = (float(input_per_million), float(output_per_million))


def cost_of(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """The cost in US dollars of a call, or None when the price of `model` is unknown."""
    price = PRICES.get(model) or PRICES.get(model.partition(":")[0])
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000
