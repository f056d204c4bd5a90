"""Rate limits: declared with `baton.limit` or BATON_LIMITS, checked when declared, found for a call, paced
so that a server counting per minute never refuses; `within_limits` on a real SQLite store."""

from __future__ import annotations

import asyncio
import bisect
import random
import re
import time
from dataclasses import replace

import pytest

from baton import DefinitionError, TransientProviderError, UserError
from baton.ratelimits import (
    Limit,
    Rate,
    backend_for,
    clear_limits,
    declared_limits,
    fingerprint,
    limit,
    limits_for,
    within_limits,
)
from baton.ratelimits.backends.redis import RedisBackend
from baton.ratelimits.backends.store import StoreBackend
from baton.ratelimits.meter import allowed_at, next_due
from baton.settings import Settings, WorkerSettings


@pytest.fixture(autouse=True)
def no_declared_limits():
    clear_limits()
    yield
    clear_limits()


def with_limits(text: str) -> Settings:
    return Settings.from_env({"BATON_LIMITS": text})


# -- declaring --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "options", "says"),
    [
        ("nowhere:model", {"rpm": 5}, "baton.limit('nowhere:model'): no provider 'nowhere'; valid providers: "),
        ("openai", {"rpm": 0}, "baton.limit('openai'): rpm=0 is not a positive whole number"),
        ("openai", {"tpm": -5}, "tpm=-5 is not a positive whole number"),
        ("openai", {"concurrent": 2.5}, "concurrent=2.5 is not a positive whole number"),
        ("openai", {"rpm": True}, "rpm=True is not a positive whole number"),
        ("openai", {}, "baton.limit('openai'): give at least one of rpm, tpm or concurrent"),
        ("openai:", {"rpm": 5}, "names no model after the colon (write 'openai')"),
        ("openai gpt", {"rpm": 5}, "the target 'openai gpt' is not 'provider' or 'provider:model'"),
        ("openai", {"rpm": 5, "per_key": "yes"}, "per_key='yes' is not True or False"),
    ],
)
def test_a_bad_limit_is_refused_when_declared_naming_the_limit_and_the_field(target, options, says):
    with pytest.raises(DefinitionError, match=re.escape(says)):
        limit(target, **options)
    assert declared_limits(Settings()) == []


def test_declaring_a_target_again_replaces_its_limit():
    limit("openai:gpt-4o-mini", rpm=500)
    again = limit("openai:gpt-4o-mini", tpm=1000, concurrent=2)
    assert declared_limits(Settings()) == [again]
    assert (again.provider, again.model, again.rpm) == ("openai", "gpt-4o-mini", None)


def test_baton_limits_is_read_with_the_settings_one_entry_a_target():
    settings = with_limits("openai:gpt-4o-mini rpm=500 tpm=200000 concurrent=8;\n anthropic rpm=50 per_key;")
    assert declared_limits(settings) == [
        Limit("openai:gpt-4o-mini", rpm=500, tpm=200000, concurrent=8),
        Limit("anthropic", rpm=50, per_key=True),
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nowhere rpm=5", "BATON_LIMITS entry 'nowhere rpm=5': no provider 'nowhere'"),
        ("openai rpm=five", "BATON_LIMITS entry 'openai rpm=five': rpm='five' is not a positive whole number"),
        ("openai rpm=0", "rpm=0 is not a positive whole number"),
        ("openai rps=5", "BATON_LIMITS entry 'openai rps=5': 'rps=5' is not rpm=N, tpm=N, concurrent=N or per_key"),
        ("openai rpm=5 rpm=6", "rpm is given twice"),
        ("openai", "BATON_LIMITS entry 'openai': give at least one of rpm, tpm or concurrent"),
        ("openai rpm=5; openai tpm=9", "'openai' is limited twice in BATON_LIMITS"),
    ],
)
def test_a_bad_baton_limits_fails_when_the_settings_are_read_naming_it_and_the_entry(text, says):
    with pytest.raises(UserError, match=re.escape(says)):
        with_limits(text)


# -- finding the limits of a call -----------------------------------------------------------------------


def test_a_call_obeys_its_models_limit_and_its_providers_and_no_other():
    model = limit("openai:gpt-4o-mini", rpm=500)
    provider = limit("openai", concurrent=4)
    limit("openai:gpt-4o", rpm=10)
    limit("anthropic", rpm=50)
    settings = Settings()
    assert limits_for("openai", "gpt-4o-mini", settings=settings) == [model, provider]
    assert limits_for("openai", "o3", settings=settings) == [provider]
    assert limits_for("local", "", settings=settings) == []


def test_no_limit_anywhere_means_no_limit_for_any_call():
    assert limits_for("openai", "gpt-4o-mini", settings=Settings()) == []
    assert limits_for("openai", "gpt-4o-mini") == []


def test_code_wins_over_baton_limits_for_the_same_target_and_the_setting_keeps_the_others():
    settings = with_limits("openai:gpt-4o-mini rpm=500; openai concurrent=8")
    mine = limit("openai:gpt-4o-mini", rpm=100)
    assert limits_for("openai", "gpt-4o-mini", settings=settings) == [mine, Limit("openai", concurrent=8)]


def test_an_api_key_is_known_by_a_short_fingerprint_never_by_itself():
    print_ = fingerprint("sk-secret-key-123456")
    assert print_ == fingerprint("sk-secret-key-123456") != fingerprint("sk-other-key-1234567")
    assert re.fullmatch(r"[0-9a-f]{16}", print_) and "secret" not in print_


# -- pacing ---------------------------------------------------------------------------------------------


def _most_in_a_minute(times: list[float], costs: list[int]) -> int:
    """The most a server counting in any sliding 60 s window sees."""
    order = sorted(range(len(times)), key=times.__getitem__)
    arrived = [times[i] for i in order]
    totals = [0]
    for i in order:
        totals.append(totals[-1] + costs[i])
    return max(totals[j + 1] - totals[bisect.bisect_right(arrived, arrived[j] - 60.0)] for j in range(len(arrived)))


@pytest.mark.parametrize("per_minute", [10, 60, 600, 10_000])
def test_waiting_calls_are_paced_to_nearly_the_whole_limit_and_never_past_a_minutes_count(per_minute):
    rate, due, now = Rate.per_minute(per_minute), 0.0, 0.0
    rng = random.Random(per_minute)
    starts = []
    for _ in range(per_minute * 4):  # four minutes of calls, always more waiting
        start = allowed_at(due, now, 1, rate)
        due = next_due(due, start, 1, rate)
        starts.append(start)
        now = start + rng.uniform(0, 0.002)  # the next asks a moment later
    # Each request reaches the server up to half a second late, in any order.
    arrived = [s + rng.uniform(0, 0.5) for s in starts]
    assert _most_in_a_minute(arrived, [1] * len(arrived)) <= per_minute
    assert len(starts) / (starts[-1] / 60) >= 0.95 * per_minute


def test_tokens_are_paced_by_each_calls_cost_and_a_call_larger_than_the_burst_still_goes():
    rate, due, now = Rate.per_minute(200_000), 0.0, 0.0
    rng = random.Random(7)
    costs = [rng.randint(100, 3_000) for _ in range(1_000)]
    starts = []
    for cost in costs:
        start = allowed_at(due, now, cost, rate)
        due = next_due(due, start, cost, rate)
        starts.append(start)
        now = start
    assert _most_in_a_minute(starts, costs) <= 200_000
    assert sum(costs[:-1]) / (starts[-1] / 60) >= 0.95 * 200_000
    huge = Rate.per_minute(1_000)  # a burst of 16 tokens; a call of 500 goes on a full bucket
    assert allowed_at(0.0, 100.0, 500, huge) == 100.0


# -- the backend --------------------------------------------------------------------------------------


def test_the_celery_runtime_shares_limits_in_its_redis_and_everything_else_in_the_store(store):
    settings = Settings()
    on_store = backend_for(store, settings, "local")
    assert isinstance(on_store, StoreBackend) and backend_for(store, settings, "local") is on_store
    on_redis = backend_for(store, settings, "celery")
    assert isinstance(on_redis, RedisBackend) and on_redis.url == settings.worker.broker_url
    chords = replace(settings, worker=WorkerSettings(broker_url="amqp://h//", result_backend="redis://h:6379/3"))
    assert backend_for(store, chords, "celery").url == "redis://h:6379/3"  # type: ignore[attr-defined]
    rabbit_only = replace(settings, worker=WorkerSettings(broker_url="amqp://h//"))
    assert backend_for(store, rabbit_only, "celery") is on_store
    assert on_store.lease == settings.store.lease_seconds
    # Local runs and celery workers calling the same models at once share one of the two, as they are told.
    one_place = Settings.from_env({"BATON_LIMITS_BACKEND": "store"})
    assert isinstance(backend_for(store, one_place, "celery"), StoreBackend)
    on_redis_too = Settings.from_env({"BATON_LIMITS_BACKEND": "redis"})
    assert isinstance(backend_for(store, on_redis_too, "local"), RedisBackend)
    nowhere = replace(on_redis_too, worker=WorkerSettings(broker_url="amqp://h//"))
    with pytest.raises(UserError, match="BATON_LIMITS_BACKEND=redis"):
        backend_for(store, nowhere, "local")


# -- within_limits, on a real SQLite store ------------------------------------------------------------


class Calls:
    """A model call that answers, or raises what it is told to, and counts."""

    def __init__(self, *raises: BaseException) -> None:
        self.raises = list(raises)
        self.made = 0

    async def __call__(self) -> int:
        self.made += 1
        if self.raises:
            raise self.raises.pop(0)
        return 7


def refused(after: float | None) -> TransientProviderError:
    return TransientProviderError("openai", "rate limited", status=429, retry_after=after)


def call_within(backend, limits, calls, **options):
    options = {"tokens": 10, "key": None, "used": lambda result: result} | options
    return asyncio.run(within_limits(limits, backend=backend, call=calls, **options))


def test_a_call_with_no_limit_is_made_at_once(store):
    calls = Calls()
    assert call_within(StoreBackend(store, lease=5), [], calls) == 7 and calls.made == 1


def test_a_429_holds_the_limit_back_for_its_retry_after_then_the_call_is_made_again(store):
    seen: list[BaseException] = []

    async def note(exc: BaseException) -> None:
        seen.append(exc)

    first = refused(0.4)
    calls = Calls(first)
    t0 = time.monotonic()
    result = call_within(StoreBackend(store, lease=5), [limit("openai", rpm=6000)], calls, on_refused=note)
    assert result == 7 and calls.made == 2 and seen == [first]
    assert time.monotonic() - t0 >= 0.4


def test_past_max_refusals_the_last_429_is_raised_and_not_passed_to_on_refused(store):
    seen: list[BaseException] = []

    async def note(exc: BaseException) -> None:
        seen.append(exc)

    calls = Calls(refused(0.01), refused(0.01), refused(0.01))
    with pytest.raises(TransientProviderError) as raised:
        call_within(StoreBackend(store, lease=5), [limit("openai", rpm=6000)], calls, on_refused=note, max_refusals=2)
    assert calls.made == 3 and len(seen) == 2 and raised.value not in seen


def test_another_error_is_raised_at_once_freeing_the_slot_and_giving_the_tokens_back(store):
    backend = StoreBackend(store, lease=30)
    # 600 tokens a minute: without the 50 given back, the next call would wait about five seconds.
    limits = [limit("openai:gpt-4o-mini", tpm=600, concurrent=1)]
    calls = Calls(ValueError("bad request"))
    with pytest.raises(ValueError):
        call_within(backend, limits, calls, tokens=50)
    t0 = time.monotonic()
    assert call_within(backend, limits, calls, tokens=50, used=lambda _: 50) == 7
    assert calls.made == 2 and time.monotonic() - t0 < 1.0
