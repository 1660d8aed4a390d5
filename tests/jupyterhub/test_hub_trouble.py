"""A slow or broken hub: lookups never block the service, and failures are JSON 504/502, not 500."""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..postgres import free_port
from .hub import GraderServiceProcess

TIMEOUT = 2


class FakeHub(socketserver.ThreadingTCPServer):
    """Hangs on requests whose token contains "hang"; hangs up on all others."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int):
        super().__init__(("127.0.0.1", port), FakeHubHandler)
        self.release = threading.Event()


class FakeHubHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            data += chunk
        if b"hang" in data:
            self.server.release.wait(30)


@pytest.fixture(scope="module")
def troubled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraderServiceProcess]:
    port = free_port()
    hub = FakeHub(port)
    data_dir: Path = tmp_path_factory.mktemp("troubled") / "data"
    service = GraderServiceProcess(data_dir, f"sqlite:///{data_dir.parent / 'grader.sqlite'}")
    service.config_file.write_text(
        'c.GraderService.authenticator_class = "jupyterhub"\n'
        f'c.JupyterHubAuthenticator.hub_api_url = "http://127.0.0.1:{port}/hub/api"\n'
        'c.JupyterHubAuthenticator.api_token = "service-token"\n'
        f"c.JupyterHubAuthenticator.hub_request_timeout = {TIMEOUT}\n"
    )
    serving = threading.Thread(target=hub.serve_forever, daemon=True)
    try:
        service.start("--upgrade-db")
        serving.start()  # only now: the service's start (a fork) is better done without threads
        yield service
    finally:
        hub.release.set()
        service.stop()
        if serving.is_alive():
            hub.shutdown()
        hub.server_close()


def test_a_hanging_hub_blocks_nothing_and_times_out_as_504(troubled: GraderServiceProcess) -> None:
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        hanging = [pool.submit(troubled.client(f"hang-{i}").get, "user") for i in range(2)]
        time.sleep(0.3)
        # the event loop is free while both lookups wait for the hub
        health_start = time.monotonic()
        assert troubled.client(None).get("health").status_code == 200
        assert time.monotonic() - health_start < 1.0
        for future in hanging:
            r = future.result()
            assert r.status_code == 504, r.text
            assert r.json()["error"] == "Gateway Timeout"
        # the two lookups ran side by side, not one after the other
        assert time.monotonic() - started < 2 * TIMEOUT


def test_a_broken_hub_is_a_502(troubled: GraderServiceProcess) -> None:
    r = troubled.client("close-me").get("user")  # the fake hub closes the connection
    assert r.status_code == 502, r.text
    assert "JupyterHub" in r.json()["message"]
