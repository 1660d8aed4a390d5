"""A TCP proxy in front of the service that sees which of its connections carry an event stream.

The relay test points the Jupyter server at this proxy: every byte passes through unchanged, and the
proxy knows, per open connection, the last request line it carried. A connection whose last request
is `GET /api/v1/events` is an open upstream event stream (its response never ends by itself), so
`event_streams()` counts the real upstream connections the extension holds open.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading

REQUEST_LINE = re.compile(rb"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (\S+) HTTP/1\.[01]\r\n")


class CountingProxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.last_request: dict[int, bytes] = {}  # open connection id -> its last request path
        self.lock = threading.Lock()
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def event_streams(self) -> int:
        with self.lock:
            return sum(1 for path in self.last_request.values() if path.startswith(b"/api/v1/events"))

    def close(self) -> None:
        self.closing = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closing:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            key = id(downstream)
            with self.lock:
                self.last_request[key] = b""
            threading.Thread(target=self._pipe, args=(downstream, upstream, key), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, downstream, None), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, key: int | None) -> None:
        """Copy one direction; `key` is set for the browser-to-service direction, which is inspected."""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if key is not None:
                    match = REQUEST_LINE.match(data)
                    if match:
                        with self.lock:
                            self.last_request[key] = match.group(2)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            if key is not None:
                with self.lock:
                    self.last_request.pop(key, None)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
