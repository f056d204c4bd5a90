"""Limits kept in Redis (the celery runtime's): each step a Lua script, atomic on the server, timed by its clock.

A meter is a hash `baton:limit:<name>` (`requests` and `tokens`: GCRA's theoretical arrival times; `blocked`:
until when a 429 holds calls back; seconds on Redis's clock) and a sorted set `baton:limit:<name>:slots` (the
calls in flight, scored by when their lease runs out). Both expire when unused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from baton._extras import require
from baton._urls import mask_url
from baton.errors import BrokerUnavailable, MissingExtra
from baton.ratelimits.backend import Backend, Taken
from baton.ratelimits.meter import Meter
from baton.runtime.aio import call_threads, in_work_thread

__all__ = ["PREFIX", "RedisBackend"]

T = TypeVar("T")
PREFIX = "baton:limit:"

# Shared by the scripts: the time, and each meter's numbers. ARGV holds the script's own values first (`own`
# of them), then five per meter: request period and burst, token period and burst, slots (0: none).
_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function meter(i)
  local a = OWN + (i - 1) * 5
  return KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
    tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
end
local function num(key, field)
  return tonumber(redis.call('HGET', key, field) or '0')
end
local function put(key, field, value)
  redis.call('HSET', key, field, string.format('%.6f', value))
end
local function keep(key)
  -- Unused state goes away a minute after it stops mattering.
  local last = math.max(num(key, 'requests'), num(key, 'tokens'), num(key, 'blocked'), now)
  redis.call('PEXPIRE', key, math.ceil((last - now + 60) * 1000))
end
"""

_TAKE = (
    "local OWN = 3\n"
    + _COMMON
    + """
local cost, holder, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local n = #KEYS / 2
local wait, full = 0, 0
for i = 1, n do
  local h, z, rp, rb, tp, tb, slots = meter(i)
  local blocked = num(h, 'blocked')
  if blocked > now then wait = math.max(wait, blocked - now) end
  if slots > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    if redis.call('ZCARD', z) >= slots then
      full = 1
      local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      wait = math.max(wait, tonumber(first[2]) - now)
    end
  end
end
if wait > 0 or full == 1 then return {0, string.format('%.6f', wait), full} end
-- Everything has room: the call starts when the last of its paces allows it.
local start = now
for i = 1, n do
  local h, z, rp, rb, tp, tb, slots = meter(i)
  if rp > 0 then start = math.max(start, num(h, 'requests') - math.max(0, rb - 1) * rp) end
  if tp > 0 then start = math.max(start, num(h, 'tokens') - math.max(0, tb - cost) * tp) end
end
for i = 1, n do
  local h, z, rp, rb, tp, tb, slots = meter(i)
  if rp > 0 then put(h, 'requests', math.max(num(h, 'requests'), start) + rp) end
  if tp > 0 then put(h, 'tokens', math.max(num(h, 'tokens'), start) + cost * tp) end
  keep(h)
  if slots > 0 then
    redis.call('ZADD', z, now + lease, holder)
    redis.call('PEXPIRE', z, math.ceil((lease + 60) * 1000))
  end
end
return {1, string.format('%.6f', start - now), 0}
"""
)

_RENEW = (
    "local OWN = 2\n"
    + _COMMON
    + """
local holder, lease = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS / 2 do
  local h, z, rp, rb, tp, tb, slots = meter(i)
  if slots > 0 then
    redis.call('ZADD', z, 'XX', now + lease, holder)
    redis.call('PEXPIRE', z, math.ceil((lease + 60) * 1000))
  end
end
return 1
"""
)

_FINISH = (
    "local OWN = 2\n"
    + _COMMON
    + """
local holder, charge = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS / 2 do
  local h, z, rp, rb, tp, tb, slots = meter(i)
  if slots > 0 then redis.call('ZREM', z, holder) end
  if tp > 0 and charge ~= 0 and redis.call('HEXISTS', h, 'tokens') == 1 then
    put(h, 'tokens', num(h, 'tokens') + charge * tp)
    keep(h)
  end
end
return 1
"""
)

_BLOCK = (
    "local OWN = 1\n"
    + _COMMON
    + """
local seconds = tonumber(ARGV[1])
for i = 1, #KEYS / 2 do
  local h, z, rp, rb, tp, tb, slots = meter(i)
  local till = math.max(num(h, 'blocked'), now + seconds)
  put(h, 'blocked', till)
  -- After the wait calls go paced again, without a burst.
  if rp > 0 then put(h, 'requests', math.max(num(h, 'requests'), till + (rb - 1) * rp)) end
  if tp > 0 then put(h, 'tokens', math.max(num(h, 'tokens'), till + (tb - 1) * tp)) end
  keep(h)
end
return 1
"""
)


class RedisBackend(Backend):
    """Limits shared through the Redis at `url` (a lease of `lease` seconds on each slot)."""

    def __init__(self, url: str, *, lease: float) -> None:
        require("celery", "rate limits on Redis")
        try:
            import redis  # installed with celery[redis], the celery extra's
        except ImportError:
            raise MissingExtra("rate limits on Redis", "celery", "redis") from None

        self.url, self.lease = url, lease
        self._errors: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
        self._client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._take = self._client.register_script(_TAKE)
        self._renew = self._client.register_script(_RENEW)
        self._finish = self._client.register_script(_FINISH)
        self._block = self._client.register_script(_BLOCK)

    async def take(self, meters: Sequence[Meter], *, tokens: int, holder: str) -> Taken:
        """See `Backend.take`."""
        taken, wait, full = await self._run(self._take, meters, tokens, holder, self.lease)
        return Taken(bool(taken), float(wait), bool(full))

    async def renew(self, meters: Sequence[Meter], *, holder: str) -> None:
        """See `Backend.renew`."""
        await self._run(self._renew, meters, holder, self.lease)

    async def finish(self, meters: Sequence[Meter], *, holder: str, tokens: int) -> None:
        """See `Backend.finish`."""
        await self._run(self._finish, meters, holder, tokens)

    async def block(self, meters: Sequence[Meter], *, seconds: float) -> None:
        """See `Backend.block`."""
        await self._run(self._block, meters, seconds)

    def close(self) -> None:
        """Release the connections."""
        self._client.close()

    async def _run(self, script: Callable[..., T], meters: Sequence[Meter], *own: Any) -> T:
        keys = [k for m in meters for k in (f"{PREFIX}{m.name}", f"{PREFIX}{m.name}:slots")]
        args = [*own, *(v for m in meters for v in _numbers(m))]
        try:
            # The client is sync: on a thread, so that the loop never waits for the network.
            return await in_work_thread(lambda: script(keys=keys, args=args), pool=call_threads())
        except self._errors as exc:
            raise BrokerUnavailable(f"rate limits: cannot reach Redis at {mask_url(self.url)}: {exc}") from None


def _numbers(meter: Meter) -> tuple[float, int, float, int, int]:
    requests, tokens = meter.requests, meter.tokens
    return (
        requests.period if requests else 0.0,
        requests.burst if requests else 0,
        tokens.period if tokens else 0.0,
        tokens.burst if tokens else 0,
        meter.slots or 0,
    )
