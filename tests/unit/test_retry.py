import random

import pytest

from baton import DefinitionError, Retry, TransientError, register_transient
from baton.retry import TRANSIENT_ERRORS, is_transient


def test_delay_doubles_each_attempt_until_the_cap():
    policy = Retry(max_attempts=10, backoff=0.5, max_delay=3, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_draws_between_zero_and_the_exponential_delay():
    policy = Retry(max_attempts=10, backoff=1, max_delay=100, jitter=True)
    rng = random.Random(7)
    delays = [policy.delay(4, rng) for _ in range(500)]
    assert all(0 <= d <= 8 for d in delays)
    assert max(delays) > 6 and min(delays) < 2  # spread over the whole range, not a constant


def test_only_transient_errors_are_retried():
    policy = Retry(max_attempts=3)
    assert policy.should_retry(ConnectionError("reset"), 1)
    assert policy.should_retry(TimeoutError(), 2)
    assert policy.should_retry(TransientError("busy"), 1)
    assert not policy.should_retry(ValueError("bug"), 1)


def test_no_retry_after_the_last_attempt():
    policy = Retry(max_attempts=3)
    assert not policy.should_retry(ConnectionError(), 3)


def test_a_step_can_add_its_own_transient_errors():
    class RateLimited(Exception):
        pass

    assert not Retry().should_retry(RateLimited(), 1)
    assert Retry(on=(RateLimited,)).should_retry(RateLimited(), 1)


def test_register_transient_extends_the_documented_set():
    class Flaky(Exception):
        pass

    try:
        register_transient(Flaky)
        assert is_transient(Flaky())
    finally:
        TRANSIENT_ERRORS.remove(Flaky)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"max_attempts": 0}, "max_attempts"), ({"backoff": -1}, "backoff"), ({"max_delay": -1}, "max_delay")],
)
def test_bad_retry_options_fail_when_declared(kwargs, field):
    with pytest.raises(DefinitionError, match=field):
        Retry(**kwargs)
