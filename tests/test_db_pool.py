"""An exhausted connection pool never blocks the event loop: requests wait, bounded, then get 503.

The service runs in this process (real HTTP on a free port, the real database) so that the test can take
every pooled connection itself, as a burst of slow work would, and watch the event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from traitlets.config import Config

from grader_service import db
from grader_service.app import GraderService
from grader_service.orm import ApiToken, User
from grader_service.orm.api_token import PREFIX_LENGTH, hash_token, new_token

from .postgres import free_port

WAIT = 1.0  # db_wait_timeout


async def loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late 10 ms sleeps wake up: a blocked event loop shows as a long one."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - t - 0.01)


async def fetch(url: str, token: str | None = None) -> HTTPResponse:
    headers = {"Authorization": f"token {token}"} if token else {}
    return await AsyncHTTPClient().fetch(url, headers=headers, raise_error=False, request_timeout=30)


async def scenario(db_url: str, data_dir: Path) -> None:
    config = Config()
    config.GraderService.db_pool_size = 3
    config.GraderService.db_max_overflow = 1
    config.GraderService.db_wait_timeout = WAIT
    config.GraderService.grading = False
    config.LocalAutogradeExecutor.fork_server = False
    service = GraderService(
        config=config, data_dir=str(data_dir), db_url=db_url, upgrade_db=True, port=free_port()
    )
    await service.start_serving()
    api = f"http://127.0.0.1:{service.port}/api/v1/"
    token = new_token()
    with db.session_scope(service.session_factory) as session:
        user = User(name="alice")
        session.add(user)
        session.flush()
        session.add(ApiToken(user_id=user.id, prefix=token[:PREFIX_LENGTH], hashed=hash_token(token)))
    stop, lags = asyncio.Event(), []
    watcher = asyncio.ensure_future(loop_lag(stop, lags))
    try:
        assert (await fetch(api + "user", token)).code == 200
        held = [service.engine.connect() for _ in range(4)]  # the whole pool: 3 + 1 overflow

        # Health never waits: it says the database is busy, at once.
        t = asyncio.get_running_loop().time()
        health = await fetch(api + "health")
        assert health.code == 503 and json.loads(health.body)["database"] == "busy"
        assert asyncio.get_running_loop().time() - t < 0.5

        # A request waits db_wait_timeout for a connection, then gets 503 with Retry-After...
        t = asyncio.get_running_loop().time()
        busy = await fetch(api + "user", token)
        waited = asyncio.get_running_loop().time() - t
        assert busy.code == 503, busy.body
        body = json.loads(busy.body)
        assert body["error"] == "Service Unavailable" and "connections are in use" in body["message"]
        assert busy.headers["Retry-After"].isdigit()
        assert WAIT * 0.9 <= waited < WAIT + 2, waited

        # ...or gets its answer as soon as there is room again within the wait. The gate keeps two
        # connections for work that does not wait (health, the scheduler): health answers with one free.
        waiting = asyncio.ensure_future(fetch(api + "user", token))
        await asyncio.sleep(WAIT / 4)
        held.pop().close()
        assert (await fetch(api + "health")).code == 200
        held.pop().close()
        await asyncio.sleep(WAIT / 4)
        assert not waiting.done()
        held.pop().close()
        assert (await waiting).code == 200

        # All the while the event loop ran: nothing waited on the pool synchronously.
        assert max(lags) < 0.25, max(lags)
        for connection in held:
            connection.close()
        assert (await fetch(api + "health")).code == 200
        assert (await fetch(api + "user", token)).code == 200
    finally:
        stop.set()
        await watcher
        await service.stop_serving()


def test_exhausted_pool_answers_503_without_blocking(db_url: str, tmp_path: Path) -> None:
    asyncio.run(scenario(db_url, tmp_path / "data"))


@pytest.mark.parametrize("sqlite_url", ["sqlite:///{tmp}/x.sqlite"])
def test_engine_checkout_never_waits(sqlite_url: str, tmp_path: Path) -> None:
    """The pool raises at once when exhausted (a wait would be a wait on the event loop)."""
    import time

    from sqlalchemy.exc import TimeoutError as PoolTimeout

    engine = db.make_engine(sqlite_url.format(tmp=tmp_path), pool_size=1, max_overflow=0)
    with engine.connect():
        t = time.perf_counter()
        with pytest.raises(PoolTimeout):
            engine.connect()
        assert time.perf_counter() - t < 0.1


async def in_memory_scenario(data_dir: Path) -> None:
    config = Config()
    config.GraderService.grading = False
    config.LocalAutogradeExecutor.fork_server = False
    service = GraderService(config=config, data_dir=str(data_dir), db_url="sqlite://", port=free_port())
    await service.start_serving()
    try:
        token = new_token()
        with db.session_scope(service.session_factory) as session:
            user = User(name="alice")
            session.add(user)
            session.flush()
            session.add(ApiToken(user_id=user.id, prefix=token[:PREFIX_LENGTH], hashed=hash_token(token)))
        api = f"http://127.0.0.1:{service.port}/api/v1/"
        for _ in range(3):
            response = await fetch(api + "user", token)
            assert response.code == 200, response.body
            assert json.loads(response.body)["name"] == "alice"
    finally:
        await service.stop_serving()


def test_in_memory_sqlite_serves_requests(tmp_path: Path) -> None:
    """Its pool (one connection per thread) counts no checkouts: the gate lets every request through.

    (It used to ask that pool for `checkedout()`, which only a queue pool has: every request got 500.)
    """
    asyncio.run(in_memory_scenario(tmp_path / "data"))
