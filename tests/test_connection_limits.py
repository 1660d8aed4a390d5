"""Connections cannot be held for free: header, keep-alive and body timeouts, and a connection cap.

Each limit is configured small here; the bounds on when a connection closes are generous (the machine is
shared), but far below tornado's defaults (an hour, or never), which the tests would otherwise wait for.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import World
from .service import ServiceProcess

TIMEOUTS = """
c.GraderService.header_timeout = 1
c.GraderService.keep_alive_timeout = 3
c.GraderService.body_timeout = 1
c.GraderService.body_min_rate = 2000
c.GraderService.grading = False
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("limits")
    svc = ServiceProcess(tmp / "data", f"sqlite:///{tmp / 'limits.sqlite'}", config=TIMEOUTS)
    svc.start()
    try:
        yield World(svc)
    finally:
        svc.stop()


def connect(world: World) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", world.service.port))
    sock.settimeout(15)
    return sock


def seconds_until_closed(sock: socket.socket, start: float) -> float:
    """Read (and drop) whatever comes until the service closes the connection."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.perf_counter() - start


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), headers, body


def is_open(sock: socket.socket) -> bool:
    """No EOF waiting on the socket (nothing else is expected on it)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def test_connections_that_send_nothing_are_closed_after_header_timeout(world: World) -> None:
    start = time.perf_counter()
    socks = [connect(world) for _ in range(200)]
    closed_after = [seconds_until_closed(sock, start) for sock in socks]
    for sock in socks:
        sock.close()
    assert max(closed_after) < 1 + 4, max(closed_after)
    assert requests.get(world.service.api + "health", timeout=10).status_code == 200


def test_headers_sent_slowly_are_cut_off(world: World) -> None:
    """Progress does not buy time: the whole header block is due within header_timeout."""
    sock = connect(world)
    start = time.perf_counter()
    sock.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
    closed = False
    while time.perf_counter() - start < 10 and not closed:
        try:
            sock.sendall(b"X-Slow: 1\r\n")
        except OSError:
            closed = True
        closed = closed or not is_open(sock)
        time.sleep(0.2)
    assert closed and time.perf_counter() - start < 1 + 4
    sock.close()


def test_kept_alive_connection_waits_keep_alive_timeout_for_its_next_request(world: World) -> None:
    sock = connect(world)
    sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(sock)[0] == 200
    time.sleep(1.8)  # past header_timeout: a connection between requests gets keep_alive_timeout
    assert is_open(sock)
    sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(sock)[0] == 200
    start = time.perf_counter()
    waited = seconds_until_closed(sock, start)
    assert 3 * 0.8 < waited < 3 + 4, waited
    sock.close()


def body_request(world: World, length: int) -> bytes:
    return (
        f"PATCH /api/v1/lectures/{world.lecture} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: token {world.tokens['instructor']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def assert_timed_out(sock: socket.socket, start: float) -> None:
    status, headers, body = read_response(sock)
    elapsed = time.perf_counter() - start
    assert status == 408, body
    assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)
    message = json.loads(body)["message"]
    assert "too slowly" in message and "body_min_rate" in message, message
    assert elapsed < 1 + 4, elapsed
    assert seconds_until_closed(sock, start) < 1 + 6


def test_stalled_body_is_answered_408(world: World) -> None:
    sock = connect(world)
    start = time.perf_counter()
    sock.sendall(body_request(world, 1000) + b'{"name": ')
    assert_timed_out(sock, start)
    sock.close()


def test_trickling_body_is_answered_408(world: World) -> None:
    sock = connect(world)
    start = time.perf_counter()
    sock.sendall(body_request(world, 1000))
    sock.settimeout(0.2)
    try:
        for _ in range(50):  # one byte every 0.2 s: 5 B/s, far below 2000 B/s
            sock.sendall(b" ")
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
    except OSError:
        pass
    sock.settimeout(15)
    assert_timed_out(sock, start)
    sock.close()


def test_body_at_a_fair_rate_takes_as_long_as_it_needs(world: World) -> None:
    """A body arriving at 3x the minimum rate may take well past body_timeout."""
    payload = b'{"name": "ML, slowly"' + b" " * 12000 + b"}"
    sock = connect(world)
    start = time.perf_counter()
    sock.sendall(body_request(world, len(payload)))
    for i in range(0, len(payload), 600):
        sock.sendall(payload[i : i + 600])
        time.sleep(0.1)  # 6000 B/s
    status, _, body = read_response(sock)
    assert status == 200, body
    assert time.perf_counter() - start > 1.5  # it did take longer than body_timeout
    sock.close()


def test_connections_past_the_cap_are_refused_with_503(tmp_path: Path) -> None:
    config = "c.GraderService.max_connections = 20\nc.GraderService.grading = False\n"
    svc = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'cap.sqlite'}", config=config)
    svc.start()
    try:
        time.sleep(0.5)  # the start-up health check's connection is closed by now
        held = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(20)]
        time.sleep(0.5)
        assert all(is_open(sock) for sock in held)
        extra = socket.create_connection(("127.0.0.1", svc.port))
        extra.settimeout(10)
        status, headers, body = read_response(extra)
        assert status == 503 and headers["connection"] == "close" and headers["retry-after"].isdigit()
        assert json.loads(body)["error"] == "Service Unavailable"
        assert "20 connections open" in json.loads(body)["message"]
        assert seconds_until_closed(extra, time.perf_counter()) < 5
        for sock in held[:5]:
            sock.close()
        time.sleep(0.5)
        assert requests.get(svc.api + "health", timeout=10).status_code == 200
        for sock in held[5:]:
            sock.close()
        assert "connections open, the limit" in svc.read_log()
    finally:
        svc.stop()
