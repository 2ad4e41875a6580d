"""Issue 12: rate limits shared through Redis (``KB_REDIS_URL``), per process without it.

Runs against the real Redis at ``KB_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``);
skipped, saying so, where none answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from api.app import create_app
from api.deps import get_assistant
from api.ratelimit import LocalRateLimiter, RedisRateLimiter, make_limiter
from assist.answer import AssistResult
from kb.identity import add_user, create_token
from kb.settings import Settings

REDIS_URL = os.environ.get("KB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parent.parent


def _redis_answers() -> bool:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError):
        return False
    return True


needs_redis = pytest.mark.skipif(not _redis_answers(), reason=f"no Redis at {REDIS_URL}")


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"canon-test:{uuid.uuid4().hex}:"
    yield value
    if _redis_answers():
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{value}*"):
            client.delete(key)


_WORKER = textwrap.dedent("""
    import sys
    from fastapi import HTTPException
    from api.ratelimit import RedisRateLimiter
    limiter = RedisRateLimiter(sys.argv[1], int(sys.argv[2]), prefix=sys.argv[3])
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    allowed = 0
    for _ in range(int(sys.argv[2])):
        try:
            limiter.check("token-1")
            allowed += 1
        except HTTPException as exc:
            assert exc.status_code == 429 and int(exc.headers["Retry-After"]) >= 1
    print(allowed, flush=True)
""")


@needs_redis
def test_two_processes_share_one_bucket(prefix: str) -> None:
    per_minute = 40
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, REDIS_URL, str(per_minute),
                               prefix], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT) for _ in range(2)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    started = time.monotonic()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    counts = [int(p.communicate(timeout=60)[0].strip()) for p in procs]
    elapsed = time.monotonic() - started
    assert all(p.returncode == 0 for p in procs)
    # Per-process buckets would let 2 x 40 through; one shared bucket lets 40 (plus what
    # refilled, at 40/min, while the two processes ran).
    refill = elapsed * per_minute / 60
    assert per_minute <= sum(counts) <= per_minute + refill + 1, (counts, elapsed)
    assert all(c > 0 for c in counts) or sum(counts) == per_minute


class _Answering:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.asked = 0

    def ask(self, q: Any) -> AssistResult:
        self.asked += 1
        return AssistResult(query_id=uuid.uuid4().hex, status="no_answer")


@pytest.fixture
def tokens(engine: Engine) -> dict[str, dict[str, str]]:
    out = {}
    with Session(engine, expire_on_commit=False) as s:
        for name in ("agent-1", "agent-2"):
            add_user(s, name=name, role="agent", audiences=["vendor:acme"], by="test")
            out[name] = {"Authorization": "Bearer " + create_token(
                s, user=name, expires_in=None, by="test")[1]}
        s.commit()
    return out


def _client(settings: Settings, engine: Engine) -> TestClient:
    app = create_app(settings)
    app.state.engine = engine
    stub = _Answering(settings)
    app.dependency_overrides[get_assistant] = lambda: stub
    return TestClient(app)


@needs_redis
def test_two_app_instances_share_the_limit(settings: Settings, engine: Engine,
                                           tokens: dict[str, dict[str, str]]) -> None:
    shared = settings.model_copy(update={"redis_url": REDIS_URL, "assist_rate_per_minute": 3})
    workers = [_client(shared, engine), _client(shared, engine)]
    assert isinstance(workers[0].app.state.limiter, RedisRateLimiter)  # type: ignore[attr-defined]
    codes = [workers[i % 2].post("/v1/assist", json={"question": "refund window"},
                                 headers=tokens["agent-1"]).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    refused = workers[1].post("/v1/assist", json={"question": "x"}, headers=tokens["agent-1"])
    assert int(refused.headers["Retry-After"]) >= 1 and "rate limit of 3" in refused.text
    # another token has its own bucket
    assert workers[1].post("/v1/assist", json={"question": "x"},
                           headers=tokens["agent-2"]).status_code == 200


def test_without_redis_each_process_counts_its_own(settings: Settings, engine: Engine,
                                                   tokens: dict[str, dict[str, str]]) -> None:
    local = settings.model_copy(update={"assist_rate_per_minute": 2})
    assert isinstance(make_limiter(local), LocalRateLimiter)
    workers = [_client(local, engine), _client(local, engine)]
    codes = [w.post("/v1/assist", json={"question": "refund"}, headers=tokens["agent-1"])
             .status_code for w in workers for _ in range(3)]
    assert codes == [200, 200, 429, 200, 200, 429]


def test_redis_away_is_a_clear_503_not_unlimited(settings: Settings, engine: Engine,
                                                 tokens: dict[str, dict[str, str]]) -> None:
    gone = settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    client = _client(gone, engine)
    r = client.post("/v1/assist", json={"question": "refund"}, headers=tokens["agent-1"])
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "unavailable" and "Redis" in r.json()["detail"]
    assert client.app.state.limiter.ping().startswith("error: Redis")  # type: ignore[attr-defined]
    spec = client.app.openapi()  # type: ignore[attr-defined]
    assert "503" in spec["paths"]["/v1/assist"]["post"]["responses"]
