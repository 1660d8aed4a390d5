"""Tornado's HTTP server with the connection limits a service on the open network needs.

Tornado's defaults let a client hold a connection for an hour doing nothing, and accept any number of
connections. `GraderHTTPServer` adds:

- a header timeout: a new connection must deliver its request headers within `header_timeout` seconds;
- a keep-alive timeout: between requests, a connection may wait `keep_alive_timeout` seconds for the
  next request's headers (tornado has one timeout for both; this server uses the first for a
  connection's first request and the second for the requests after it);
- a connection cap: past `max_connections` open connections a new one is answered 503 (JSON, with
  Retry-After) and closed at once.

The request body's minimum rate is enforced by the API's handlers, which know when a body is expected
(`api.base.APIHandler`); `body_timeout` here is only the backstop for everything else.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any

from tornado import iostream
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPConnection, HTTPMessageDelegate

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
# At most one "connection limit reached" warning in this many seconds.
WARN_INTERVAL = 10.0


def refusal_response(status: int, reason: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection: JSON body, exact length."""
    body = json.dumps({"error": reason, "message": message}).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json; charset=UTF-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GraderHTTPServer(HTTPServer):
    """`HTTPServer` with separate header and keep-alive timeouts and a cap on open connections."""

    def initialize(  # type: ignore[override]  # tornado's Configurable passes constructor arguments here
        self,
        request_callback: Any,
        *,
        header_timeout: float,
        keep_alive_timeout: float,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().initialize(request_callback, idle_connection_timeout=header_timeout, **kwargs)
        self.max_connections = max_connections
        self._keep_alive_params = copy.copy(self.conn_params)
        self._keep_alive_params.header_timeout = keep_alive_timeout
        self._open = 0
        self._served: set[object] = set()  # connections past their first request
        self._last_warning = 0.0

    def handle_stream(self, stream: iostream.IOStream, address: tuple) -> None:
        if self._open >= self.max_connections:
            self._refuse(stream, address)
            return
        self._open += 1
        super().handle_stream(stream, address)

    def start_request(self, server_conn: object, request_conn: HTTPConnection) -> HTTPMessageDelegate:
        # Called before each request's headers are read: choose the timeout for that wait.
        if server_conn in self._served:
            request_conn.params = self._keep_alive_params  # type: ignore[attr-defined]  # an HTTP1Connection's
        else:
            self._served.add(server_conn)
        return super().start_request(server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        self._served.discard(server_conn)
        self._open -= 1

    def _refuse(self, stream: iostream.IOStream, address: tuple) -> None:
        now = time.monotonic()
        if now - self._last_warning > WARN_INTERVAL:
            self._last_warning = now
            log.warning(
                "%d connections open, the limit (c.GraderService.max_connections): refusing new ones, "
                "e.g. from %s",
                self._open,
                address[0] if address else "?",
            )
        response = refusal_response(
            503,
            "Service Unavailable",
            f"The service has {self.max_connections} connections open, its limit; retry in a moment",
            RETRY_AFTER_SECONDS,
        )

        def close(written: Any) -> None:
            if not written.cancelled():
                written.exception()  # a client that left first is no error
            stream.close()

        try:
            stream.write(response).add_done_callback(close)
        except iostream.StreamClosedError:
            stream.close()
