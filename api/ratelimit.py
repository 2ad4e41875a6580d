"""Rate limits per API token: a token bucket of ``per_minute`` requests, refilled evenly.

:class:`LocalRateLimiter` counts in this process (the default). With ``KB_REDIS_URL`` set,
:class:`RedisRateLimiter` keeps each bucket in Redis and updates it in one Lua script (atomic,
on Redis's own clock), so every worker on every machine draws from the same bucket: N
workers no longer give a token N times its limit. While Redis does not answer, the call is
refused with 503 ``unavailable`` (never served unlimited, never a 500) and ``/readyz``
reports it; service resumes by itself when Redis is back.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol

from fastapi import HTTPException

from kb.errors import Unavailable
from kb.settings import Settings

__all__ = ["LocalRateLimiter", "RateLimiter", "RedisRateLimiter", "make_limiter"]


class RateLimiter(Protocol):
    per_minute: int

    def check(self, key: str) -> None:
        """Take one request from ``key``'s bucket, or raise 429 (with ``Retry-After``)."""

    def ping(self) -> str:
        """``ok ...`` or ``error: ...`` for /readyz."""


def _refuse(per_minute: int, retry_seconds: float) -> HTTPException:
    return HTTPException(429, detail=f"rate limit of {per_minute} requests per minute "
                                     "reached; retry later",
                         headers={"Retry-After": str(max(1, math.ceil(retry_seconds)))})


class LocalRateLimiter:
    """Buckets in this process's memory (one worker, or no Redis configured)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise _refuse(self.per_minute, (1.0 - tokens) / rate)
            self._buckets[key] = (tokens - 1.0, now)

    def ping(self) -> str:
        return "ok (per process)"


# KEYS[1] bucket; ARGV capacity, refill per second. Returns {allowed, tokens left}.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every process that uses the same ``url`` and ``prefix``."""

    def __init__(self, url: str, per_minute: int, *, prefix: str = "canon:rate:",
                 timeout_seconds: float = 0.5) -> None:
        import redis

        self.per_minute = per_minute
        self.prefix = prefix
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                            socket_connect_timeout=timeout_seconds)
        self._take = self._client.register_script(_TAKE)

    def check(self, key: str) -> None:
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        try:
            allowed, tokens = self._take(keys=[self.prefix + key],
                                         args=[self.per_minute, rate])
        except self._errors as exc:
            raise Unavailable(f"the rate-limit store (Redis) does not answer "
                              f"({type(exc).__name__}); retry shortly") from None
        if not int(allowed):
            raise _refuse(self.per_minute, (1.0 - float(tokens)) / rate)

    def ping(self) -> str:
        try:
            self._client.ping()
        except self._errors as exc:
            return f"error: Redis does not answer ({type(exc).__name__})"
        return "ok (redis)"

    def close(self) -> None:
        self._client.close()


def make_limiter(settings: Settings) -> RateLimiter:
    """Redis-shared when ``KB_REDIS_URL`` is set, else per process."""
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, settings.assist_rate_per_minute)
    return LocalRateLimiter(settings.assist_rate_per_minute)
