"""Slow, stalled and big clients cannot stop the service, hold its database or grow its memory.

Hundreds of authenticated requests whose bodies stall or trickle, plus idle and slow-header
connections, run alongside normal users: health keeps answering, submissions are accepted and graded,
and nothing is left held after they leave. Timing bounds here are generous on purpose (the machine is
shared); benchmarks/slow_clients.py measures the real figures.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import statistics
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .attackers import Attack
from .conftest import DATA, World
from .service import ServiceProcess

SUBMIT = f"lectures/{World.lecture}/assignments/{World.released}/submissions"

# Four connections in the pool (two of them for requests): a few stalled clients would exhaust it if
# they held one.
SMALL_POOL = """
c.GraderService.db_pool_size = 3
c.GraderService.db_max_overflow = 1
c.GraderService.db_wait_timeout = 5
c.Scheduler.concurrency = 1
"""


def students(world: World, count: int, prefix: str) -> list[str]:
    """Tokens of `count` new students of the lecture (one per attacker: each has one upload going)."""
    admin = world.client("admin")
    tokens = []
    for i in range(count):
        name = f"{prefix}{i}"
        r = admin.put(f"lectures/{world.lecture}/roles/{name}", json={"role": "student"})
        assert r.status_code in (200, 201), r.text
        tokens.append(world.service.token(name))
    return tokens


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_graded(world: World, who: str, submission_id: int, timeout: float = 180) -> str:
    deadline = time.time() + timeout
    status = None
    while time.time() < deadline:
        status = world.client(who).get(f"{SUBMIT}/{submission_id}").json()["auto_status"]
        if status in ("graded", "failed"):
            return status
        time.sleep(0.5)
    return f"still {status}"


@pytest.fixture(scope="module")
def small_pool(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("slow") / "data"
    svc = ServiceProcess(data_dir, db_url, config=SMALL_POOL)
    svc.start("--upgrade-db")
    try:
        yield World(svc)
    finally:
        svc.stop()


def test_stalled_and_trickling_bodies_do_not_stop_the_service(small_pool: World) -> None:
    """250 authenticated bodies that stall or trickle (the pool has 4 connections), 40 idle and
    slow-header connections: health answers throughout, submissions are accepted and graded."""
    world = small_pool
    svc = world.service
    tokens = students(world, 250, "slow")
    counts = {"stalled": 150, "trickling": 100, "idle": 20, "slow-headers": 20}
    attack = Attack(svc.port, SUBMIT, tokens, counts, ramp=2)
    attack.start()
    try:
        deadline = time.time() + 30
        while sum(attack.open.values()) < 280 and time.time() < deadline:
            time.sleep(0.2)
        assert sum(attack.open.values()) >= 280, dict(attack.open)

        accepted = [world.submit("student"), world.submit("other_student")]
        assert [r.status_code for r in accepted] == [201, 201], [r.text for r in accepted]
        latencies = []
        session = requests.Session()
        for _ in range(50):
            t = time.perf_counter()
            r = session.get(svc.api + "health", timeout=10)
            latencies.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
            time.sleep(0.1)
        assert statistics.quantiles(latencies, n=100)[98] < 1.0, latencies
        # A JSON request with a body, and a download, work too.
        r = world.client("instructor").patch(f"lectures/{world.lecture}", json={"name": "ML"})
        assert r.status_code == 200, r.text
        assert world.client("student").get(f"lectures/{world.lecture}/assignments/{world.released}/files").ok
        for who, r in zip(("student", "other_student"), accepted, strict=True):
            assert wait_graded(world, who, r.json()["id"]) == "graded"
        # The attackers were held, not dropped: that is what the service withstood.
        assert attack.open["stalled"] + attack.open["trickling"] >= 240, dict(attack.open)
    finally:
        attack.close()
    r = world.submit("student")
    assert r.status_code == 201, r.text
    assert wait_graded(world, "student", r.json()["id"]) == "graded"


def test_sigterm_under_attack_finishes_within_shutdown_timeout(tmp_path: Path) -> None:
    config = SMALL_POOL + "c.GraderService.shutdown_timeout = 4\n"
    svc = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'term.sqlite'}", config=config)
    svc.start()
    world = World(svc)
    counts = {"stalled": 60, "trickling": 30, "idle": 20, "slow-headers": 10, "upload": 4}
    attack = Attack(svc.port, SUBMIT, students(world, 124, "t"), counts, upload_size=8 << 20)
    attack.start()
    try:
        time.sleep(3)
        t = time.perf_counter()
        svc.proc.send_signal(signal.SIGTERM)
        code = svc.proc.wait(30)
        elapsed = time.perf_counter() - t
    finally:
        attack.close()
        svc.stop()
    assert code == 0, svc.read_log()[-2000:]
    assert elapsed < 4 + 1.5, elapsed
    assert "Stopped" in svc.read_log()


def test_sigterm_does_not_wait_for_event_streams(tmp_path: Path) -> None:
    """An event stream lasts as long as its client wants: shutdown closes it instead of waiting."""
    svc = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'events.sqlite'}")
    svc.start()
    world = World(svc)
    params = {"lecture": world.lecture, "assignment": world.released}
    with world.client("tutor").get("events", params=params, stream=True, timeout=30) as stream:
        assert stream.status_code == 200
        t = time.perf_counter()
        svc.proc.send_signal(signal.SIGTERM)
        code = svc.proc.wait(30)
    assert code == 0 and time.perf_counter() - t < 5, time.perf_counter() - t
    svc.stop()


def test_stalled_uploads_keep_memory_flat(tmp_path: Path) -> None:
    """Twelve 40 MiB uploads stalled just before their end: the bodies are on disk, not in memory,
    and nothing is left behind when their clients leave."""
    svc = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'mem.sqlite'}")
    svc.start()
    world = World(svc)
    pid = svc.proc.pid
    before = rss_bytes(pid)
    fds_before = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    attack = Attack(svc.port, SUBMIT, students(world, 12, "m"), {"upload": 12}, upload_size=40 << 20)
    attack.start()
    try:
        # All but the last KiB of 480 MiB is on its way; wait until the service has read it.
        deadline = time.time() + 120
        while time.time() < deadline:
            received = sum(
                int(line.split()[1])
                for line in Path(f"/proc/{pid}/io").read_text().splitlines()
                if line.startswith("rchar:")
            )
            if received >= 12 * (40 << 20) - 12 * 2048:
                break
            time.sleep(0.5)
        peak = rss_bytes(pid)
        assert world.client("student").get("health").status_code == 200
    finally:
        attack.close()
    time.sleep(1)
    assert peak - before < 100 << 20, f"RSS grew by {(peak - before) >> 20} MiB under 480 MiB of uploads"
    assert rss_bytes(pid) - before < 100 << 20
    # The spooled bodies were unnamed files, closed with their requests: nothing in tmp/, no open fds.
    assert not list((svc.data_dir / "tmp").iterdir())
    assert len(list(Path(f"/proc/{pid}/fd").iterdir())) <= fds_before + 5
    svc.stop()


def send_partial_upload(port: int, token: str, length: int = 1 << 20) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        (
            f"POST /api/v1/{SUBMIT}?filename=tiny.ipynb HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\n"
            f"Content-Type: application/x-ipynb+json\r\nContent-Length: {length}\r\n\r\n"
        ).encode()
        + b"{" * 100
    )
    return sock


def test_concurrent_uploads_per_user_are_capped(tmp_path: Path) -> None:
    config = "c.GraderService.max_uploads_per_user = 2\n"
    svc = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'cap.sqlite'}", config=config)
    svc.start()
    try:
        world = World(svc)
        token = world.tokens["student"]
        stalled = [send_partial_upload(svc.port, token) for _ in range(2)]
        time.sleep(1)
        r = world.submit("student")
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "Too Many Requests"
        assert "max_uploads_per_user = 2" in r.json()["message"]
        assert r.headers["Retry-After"].isdigit() and r.headers["Connection"] == "close"
        # Others upload, and the same user's other requests work.
        assert world.submit("other_student").status_code == 201
        assert world.client("student").get(SUBMIT).status_code == 200
        for sock in stalled:
            sock.close()
        deadline = time.time() + 10
        while (r := world.submit("student")).status_code == 429 and time.time() < deadline:
            time.sleep(0.2)
        assert r.status_code == 201, r.text
    finally:
        svc.stop()


def test_large_upload_passes_through_the_spool(small_pool: World) -> None:
    """A body much larger than the spool threshold arrives intact, as zip and as multipart."""
    world = small_pool
    blob = os.urandom(3 << 20)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("tiny.ipynb", (DATA / "tiny_submission.ipynb").read_bytes())
        zf.writestr("data/blob.bin", blob)
    client = world.client("student")
    for kwargs in (
        {"data": archive.getvalue(), "headers": {"Content-Type": "application/zip"}},
        {"files": {"upload": ("bundle.zip", archive.getvalue(), "application/zip")}},
    ):
        r = client.post(SUBMIT, **kwargs)
        assert r.status_code == 201, r.text
        files = client.get(f"{SUBMIT}/{r.json()['id']}/files")
        assert zipfile.ZipFile(io.BytesIO(files.content)).read("data/blob.bin") == blob
