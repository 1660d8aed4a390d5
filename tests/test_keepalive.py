"""A refusal never leaves a keep-alive connection unusable.

Every error response carries its JSON body with an exact Content-Length. If the service closes the
connection afterwards (it refused before reading a body the client is sending), the response says
`Connection: close`; otherwise the next request on the same connection is answered.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from .conftest import World

S = f"lectures/{World.lecture}/assignments/{World.released}/submissions"
JSON = b'{"code": "new", "name": "New"}'


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"


def raw(method: str, path: str, token: str | None = None, body: bytes | None = None, **headers: str) -> bytes:
    """A request; `body` None sends no body headers at all."""
    lines = [f"{method} /api/v1/{path} HTTP/1.1", "Host: x"]
    if token:
        lines.append(f"Authorization: token {token}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if body is not None and "Transfer-Encoding" not in {k.replace("_", "-") for k in headers}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without a complete response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert "content-length" in headers, f"an error response without Content-Length: {head!r}"
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    assert len(body) == int(headers["content-length"]), "more bytes than Content-Length"
    return int(lines[0].split()[1]), headers, body


def closes(sock: socket.socket) -> bool:
    """The service closes the connection, sending nothing more after the response."""
    sock.settimeout(5)
    try:
        extra = sock.recv(65536)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    assert extra == b"", f"bytes after a response that closes the connection: {extra!r}"
    return True


def cases(world: World) -> dict[str, tuple[bytes, int, bool]]:
    """name -> (request, expected status, whether the connection may stay open)."""
    student, instructor = world.tokens["student"], world.tokens["instructor"]
    big = str(60 * 1024 * 1024)
    return {
        "401 no token": (raw("GET", "lectures"), 401, True),
        "401 unknown token": (raw("GET", "lectures", "x" * 64), 401, True),
        "401 no token, JSON body": (raw("POST", "lectures", None, JSON), 401, False),
        "401 no token, chunked body": (
            raw("POST", "lectures", None, chunked(JSON), Transfer_Encoding="chunked"),
            401,
            False,
        ),
        "401 no token, empty body": (raw("POST", "lectures", None, b""), 401, True),
        "403 bodiless": (raw("DELETE", f"lectures/{world.lecture}", student), 403, True),
        "403 JSON body": (raw("POST", "lectures", student, JSON), 403, True),
        "403 chunked body": (
            raw("POST", "lectures", student, chunked(JSON), Transfer_Encoding="chunked"),
            403,
            True,
        ),
        "404 unknown path": (raw("GET", "nothing/here", student), 404, True),
        "404 unknown path, no token": (raw("GET", "nothing/here"), 404, True),
        "404 unknown path, body": (raw("POST", "nothing/here", student, JSON), 404, False),
        "404 unknown assignment": (
            raw("GET", f"lectures/{world.lecture}/assignments/nope", student),
            404,
            True,
        ),
        "405 method of no handler": (raw("DELETE", "user", student), 405, True),
        "405 method tornado does not know": (raw("PROPFIND", "lectures", student), 405, False),
        "400 malformed JSON": (raw("PATCH", f"lectures/{world.lecture}", instructor, b"{bad"), 400, True),
        "400 malformed JSON, chunked": (
            raw(
                "PATCH",
                f"lectures/{world.lecture}",
                instructor,
                chunked(b"{bad"),
                Transfer_Encoding="chunked",
            ),
            400,
            True,
        ),
        "400 invalid Content-Length": (
            raw("PATCH", f"lectures/{world.lecture}", instructor, Content_Length="12abc"),
            400,
            False,
        ),
        "400 Content-Length in other digits": (
            raw("PATCH", f"lectures/{world.lecture}", instructor, Content_Length="12").replace(
                b"12", b"\xb2"
            ),
            400,
            False,
        ),
        "413 JSON body by its Content-Length": (
            raw("PATCH", f"lectures/{world.lecture}", instructor, Content_Length=str(2 << 20)),
            413,
            False,
        ),
        "413 upload by its Content-Length": (
            raw("POST", S, student, Content_Length=big, Content_Type="application/zip"),
            413,
            False,
        ),
        "413 upload without a token": (
            raw("POST", S, None, Content_Length=big, Content_Type="application/zip"),
            413,
            False,
        ),
        "415 upload of an unknown type": (
            raw("POST", S, student, b"hello", Content_Type="text/plain"),
            415,
            True,
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "401 no token",
        "401 unknown token",
        "401 no token, JSON body",
        "401 no token, chunked body",
        "401 no token, empty body",
        "403 bodiless",
        "403 JSON body",
        "403 chunked body",
        "404 unknown path",
        "404 unknown path, no token",
        "404 unknown path, body",
        "404 unknown assignment",
        "405 method of no handler",
        "405 method tornado does not know",
        "400 malformed JSON",
        "400 malformed JSON, chunked",
        "400 invalid Content-Length",
        "400 Content-Length in other digits",
        "413 JSON body by its Content-Length",
        "413 upload by its Content-Length",
        "413 upload without a token",
        "415 upload of an unknown type",
    ],
)
def test_refusal_leaves_the_connection_usable_or_says_close(world: World, name: str) -> None:
    request, status, stays_open = cases(world)[name]
    with socket.create_connection(("127.0.0.1", world.service.port), timeout=15) as sock:
        sock.sendall(request)
        got, headers, body = read_response(sock)
        assert got == status, body
        error = json.loads(body)
        assert set(error) == {"error", "message"} and error["message"], error
        if headers.get("connection", "").lower() == "close":
            assert not stays_open, f"{name}: the connection could have stayed open"
            assert closes(sock), f"{name}: said Connection: close but left the connection open"
        else:
            assert stays_open, f"{name}: the service closes this connection: it must say Connection: close"
            sock.sendall(raw("GET", "health"))
            assert read_response(sock)[0] == 200, f"{name}: the connection is unusable after the refusal"


def test_oversized_chunked_body_is_a_json_413(world: World) -> None:
    """A chunked body has no length up front: it is refused as it crosses the limit, in JSON."""
    token = world.tokens["instructor"]
    with socket.create_connection(("127.0.0.1", world.service.port), timeout=15) as sock:
        sock.sendall(raw("PATCH", f"lectures/{world.lecture}", token, Transfer_Encoding="chunked"))
        block = f"{1 << 16:x}\r\n".encode() + b" " * (1 << 16) + b"\r\n"
        try:
            for _ in range(20):  # 1.25 MiB, past the 1 MiB limit of a JSON body
                sock.sendall(block)
        except OSError:
            pass  # the service answered and closed while we were still sending
        got, headers, body = read_response(sock)
    assert got == 413 and headers["connection"] == "close"
    assert "exceeds the limit" in json.loads(body)["message"]


def test_a_client_keeps_one_connection_across_refusals(world: World) -> None:
    """http.client on one keep-alive connection: refusals of every kind, each followed by a request
    that must be answered (on the same connection, or on a new one after Connection: close)."""
    conn = http.client.HTTPConnection("127.0.0.1", world.service.port, timeout=15)
    student = {"Authorization": f"token {world.tokens['student']}"}
    sequence = [
        ("GET", "lectures", None, {}),
        ("GET", "lectures", None, {"Authorization": "token nope"}),
        ("POST", "lectures", JSON, {}),
        ("DELETE", f"lectures/{world.lecture}", None, student),
        ("POST", "lectures", JSON, student),
        ("GET", "nothing", None, student),
        ("DELETE", "user", None, student),
        (
            "PATCH",
            f"lectures/{world.lecture}",
            b"{bad",
            {"Authorization": f"token {world.tokens['instructor']}"},
        ),
        ("POST", S, b"x", {**student, "Content-Type": "text/plain"}),
    ]
    reused = 0
    for method, path, body, headers in sequence:
        conn.request(method, "/api/v1/" + path, body=body, headers=headers)
        response = conn.getresponse()
        error = json.loads(response.read())
        assert 400 <= response.status < 500 and set(error) == {"error", "message"}
        sock_before = conn.sock
        conn.request("GET", "/api/v1/health")
        health = conn.getresponse()
        assert health.status == 200, (method, path)
        health.read()
        reused += conn.sock is sock_before and sock_before is not None
    conn.close()
    assert reused >= len(sequence) - 2  # only the refusals of a body not yet read close the connection


def test_connection_close_from_the_client_is_honoured(world: World) -> None:
    with socket.create_connection(("127.0.0.1", world.service.port), timeout=15) as sock:
        sock.sendall(raw("GET", "lectures", Connection="close"))
        got, headers, _ = read_response(sock)
        assert got == 401 and headers["connection"] == "close"
        start = time.perf_counter()
        assert closes(sock) and time.perf_counter() - start < 5
