"""The service under slow and stalled clients: does it keep answering, grading, and stay small?

Starts the real service (SQLite by default, local sandboxed executor) in a temp dir, releases a tiny
assignment, then for `--duration` seconds keeps attackers connected (tests/attackers.py: stalled and
trickling submissions, slow headers, idle connections, large uploads stalled before their last KiB),
one student account each, each reconnecting a second after the service drops it. They arrive over the
first `--ramp` seconds.

Meanwhile `GET health` is probed ten times a second and `--users` students each submit a notebook every
2 s and wait for its grade. It prints health latency (p50/p99/max, failures) before, while the attackers
arrive, once they are all there, and after they leave; submissions accepted and graded during the
attack; the service's RSS before, at its peak and after; how often the service dropped attackers;
whether a submission is graded after the attack (recovery); and how long SIGTERM takes with the
attackers connected again.

    python benchmarks/slow_clients.py --stalled 200 --trickling 100 --uploads 12 --upload-mib 45
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.throughput import percentile, tiny_assignment  # noqa: E402
from tests.attackers import Attack  # noqa: E402
from tests.conftest import zip_dir  # noqa: E402
from tests.postgres import PostgresServer, create_database  # noqa: E402
from tests.service import ServiceProcess  # noqa: E402

SUBMIT = "lectures/bench/assignments/tiny/submissions"


class AttackProcess:
    """The attackers in a process of their own, so that their work does not delay this process's probes."""

    def __init__(self, *args: object, **kwargs: object):
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=self._serve, args=(child, args, kwargs), daemon=True
        )
        self.process.start()
        self.connected: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    @staticmethod
    def _serve(conn: Connection, args: tuple, kwargs: dict) -> None:
        attack = Attack(*args, **kwargs)
        while True:
            command, value = conn.recv()
            if command == "ramp":
                attack.ramp = value
            elif command == "start":
                attack.start()
            elif command == "stop":
                attack.stop()
            conn.send((dict(attack.connected), dict(attack.dropped)))
            if command == "close":
                attack.close()
                return

    def _call(self, command: str, value: object = None) -> None:
        self.conn.send((command, value))
        self.connected, self.dropped = self.conn.recv()

    def start(self, ramp: float | None = None) -> None:
        if ramp is not None:
            self._call("ramp", ramp)
        self._call("start")

    def stop(self) -> None:
        self._call("stop")

    def close(self) -> None:
        self._call("close")
        self.process.join(10)


class Probe:
    """GET health ten times a second from one keep-alive session."""

    def __init__(self, svc: ServiceProcess):
        self.svc = svc
        self.samples: list[tuple[float, float | None]] = []  # (sent at, latency or None on failure)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                ok = session.get(self.svc.api + "health", timeout=5).status_code == 200
                self.samples.append((t, time.perf_counter() - t if ok else None))
            except requests.RequestException:
                self.samples.append((t, None))
                session = requests.Session()
            time.sleep(0.1)

    def report(self, label: str, since: float, until: float) -> None:
        window = [(t, lat) for t, lat in self.samples if since <= t < until]
        good = [lat for _, lat in window if lat is not None]
        failed = len(window) - len(good)
        if not good:
            print(f"GET health {label:17s} no answers ({failed} failed)")
            return
        print(
            f"GET health {label:17s} p50 {1000 * statistics.median(good):.1f} ms, "
            f"p99 {1000 * percentile(good, 0.99):.1f} ms, max {1000 * max(good):.1f} ms "
            f"({len(good)} answered, {failed} failed or over 5 s)"
        )
        if os.environ.get("BENCH_DEBUG"):
            slow = [(round(t - since, 1), round(1000 * lat) if lat else None) for t, lat in window]
            print("    over 50 ms (s into the window, ms):", [x for x in slow if x[1] is None or x[1] > 50])


def submit_and_wait(svc: ServiceProcess, token: str, answer: bytes, timeout: float) -> tuple[bool, bool]:
    """(accepted, graded) for one submission."""
    client = svc.client(token)
    try:
        r = client.post(
            SUBMIT,
            data=answer,
            params={"filename": "tiny.ipynb"},
            headers={"Content-Type": "application/x-ipynb+json"},
            timeout=timeout,
        )
    except requests.RequestException:
        return False, False
    if r.status_code != 201:
        return False, False
    sid = r.json()["id"]
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            status = client.get(f"{SUBMIT}/{sid}", timeout=timeout).json().get("auto_status")
        except (requests.RequestException, ValueError):
            status = None
        if status in ("graded", "failed"):
            return True, status == "graded"
        time.sleep(0.2)
    return True, False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stalled", type=int, default=200)
    parser.add_argument("--trickling", type=int, default=100)
    parser.add_argument("--slow-headers", type=int, default=50)
    parser.add_argument("--idle", type=int, default=50)
    parser.add_argument("--uploads", type=int, default=12)
    parser.add_argument("--upload-mib", type=int, default=45)
    parser.add_argument("--users", type=int, default=4, help="students submitting normally meanwhile")
    parser.add_argument("--duration", type=float, default=60, help="seconds of attack")
    parser.add_argument("--ramp", type=float, default=10, help="seconds over which the attackers arrive")
    parser.add_argument("--db-url", default="", help="default: SQLite in the temp dir")
    parser.add_argument(
        "--postgres", action="store_true", help="start a throwaway PostgreSQL server (Debian's) and use it"
    )
    parser.add_argument("--config", default="", help="extra config lines for the service")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="grader-bench-") as tmp:
        tmp_path = Path(tmp)
        config = f"c.GraderService.max_request_size = {(args.upload_mib + 5) << 20}\n{args.config}\n"
        db_url = args.db_url or f"sqlite:///{tmp_path / 'bench.sqlite'}"
        postgres = PostgresServer() if args.postgres else None
        if postgres is not None:
            postgres.start()
            db_url = create_database(postgres.url, "bench")
        svc = ServiceProcess(tmp_path / "data", db_url, config=config)
        svc.start("--upgrade-db")
        try:
            print(f"database                 {svc.engine.dialect.name}")
            run(svc, tmp_path, args)
        finally:
            svc.stop(timeout=5)
            if postgres is not None:
                postgres.stop()


def run(svc: ServiceProcess, tmp_path: Path, args: argparse.Namespace) -> None:
    admin = svc.client(svc.token("bench-admin", admin=True))
    source, answer = tiny_assignment(tmp_path)
    admin.post("lectures", json={"code": "bench", "name": "Bench"})
    admin.post("lectures/bench/assignments", json={"name": "tiny"})
    admin.put(
        "lectures/bench/assignments/tiny/files",
        data=zip_dir(source),
        headers={"Content-Type": "application/zip"},
    )
    admin.patch("lectures/bench/assignments/tiny", json={"status": "released"})
    # One student per attacker, as on a deadline evening: each has one upload in progress.
    counts = {
        "stalled": args.stalled,
        "trickling": args.trickling,
        "slow-headers": args.slow_headers,
        "idle": args.idle,
        "upload": args.uploads,
    }
    names = [f"u{i}" for i in range(args.users + sum(counts.values()) + 1)]
    for name in names:
        admin.put(f"lectures/bench/roles/{name}", json={"role": "student"})
    tokens = [svc.token(name) for name in names]
    check, users, attackers = tokens[0], tokens[1 : args.users + 1], tokens[args.users + 1 :]
    service = psutil.Process(svc.proc.pid)

    assert submit_and_wait(svc, check, answer, 60)[1], "the service does not grade at all"
    attack = AttackProcess(svc.port, SUBMIT, attackers, counts, args.upload_mib << 20, ramp=args.ramp)
    probe = Probe(svc)
    probe.thread.start()
    time.sleep(3)
    rss_before = service.memory_info().rss
    cpu_before = sum(service.cpu_times()[:2])
    attack_start = time.perf_counter()
    attack.start()

    outcomes: list[tuple[bool, bool]] = []
    stop_users = threading.Event()

    def student(token: str) -> None:
        while not stop_users.is_set():
            outcomes.append(submit_and_wait(svc, token, answer, 60))
            time.sleep(2)

    threads = [threading.Thread(target=student, args=(t,), daemon=True) for t in users]
    for thread in threads:
        thread.start()
    rss_peak, connections = rss_before, 0
    while time.perf_counter() < attack_start + args.duration:
        rss_peak = max(rss_peak, service.memory_info().rss)
        connections = max(connections, len(service.net_connections("tcp")))
        time.sleep(0.25)
    service_cpu = sum(service.cpu_times()[:2]) - cpu_before
    load = os.getloadavg()[0]
    stop_users.set()
    for thread in threads:
        thread.join(70)
    attack_end = time.perf_counter()
    attack.stop()
    time.sleep(3)
    rss_after = service.memory_info().rss
    probe.stop.set()
    probe.thread.join()

    mib = 1 << 20
    print(
        f"attack                   {args.stalled} stalled, {args.trickling} trickling, {args.slow_headers} "
        f"slow-header, {args.idle} idle, {args.uploads} x {args.upload_mib} MiB stalled uploads for "
        f"{args.duration:.0f} s (arriving over {args.ramp:.0f} s); {args.users} students submitting meanwhile"
    )
    probe.report("before", 0, attack_start)
    probe.report("while arriving", attack_start, attack_start + args.ramp)
    probe.report("under attack", attack_start + args.ramp, attack_end)
    probe.report("after", attack_end, float("inf"))
    accepted = sum(a for a, _ in outcomes)
    graded = sum(g for _, g in outcomes)
    print(
        f"student submissions      {len(outcomes)} tried, {accepted} accepted, {graded} graded during the attack"
    )
    print(f"attackers dropped        {dict(attack.dropped)} (of {dict(attack.connected)} connections made)")
    print(f"open TCP connections     {connections} at most")
    print(
        f"service CPU              {100 * service_cpu / args.duration:.0f}% of one core during the attack "
        f"(machine load average {load:.1f} on {os.cpu_count()} cores, this benchmark and grading included)"
    )
    print(
        f"service RSS              {rss_before / mib:.0f} MiB before, {rss_peak / mib:.0f} MiB peak, "
        f"{rss_after / mib:.0f} MiB 3 s after the attackers left"
    )
    print(
        f"recovered                {submit_and_wait(svc, check, answer, 60)[1]} (a submission graded after)"
    )

    attack.start(ramp=0)
    time.sleep(5)
    t = time.perf_counter()
    svc.proc.send_signal(15)
    try:
        code = svc.proc.wait(120)
        print(f"SIGTERM under attack     exited {code} after {time.perf_counter() - t:.1f} s")
    except Exception:
        print("SIGTERM under attack     still running after 120 s")
    attack.close()


if __name__ == "__main__":
    main()
