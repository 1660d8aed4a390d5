"""Grading throughput and latency of the running service, end to end over HTTP.

Starts the real service (SQLite, local sandboxed executor) in a temp dir, releases a tiny 5-cell
assignment, follows the assignment's event stream, and measures in two phases:

1. latency: submits M notebooks one after another, each once the previous is graded (what one
   student sees on a quiet service): submit->graded p50/p95, and how long the submit request
   itself takes to answer (upload, git, database);
2. throughput: submits K notebooks at once: gradings per minute (first submit to last graded),
   submit->graded p50/p95 within the burst (mostly queueing), the grading process's own time,
   the service's overhead per submission (job time minus grading process time), CPU per grading
   (the whole machine's busy time over the burst, and the service process's share), and `GET
   health` latency p50/p99 while the burst's submissions arrive and then while the queue is graded.

`GET health` is probed every `--probe-interval` seconds (default 0.1: ten times a second, far more
often than any monitor). The probes run on the same two cores as everything else: one costs about
1.5 ms of the service's CPU plus as much again in this client, which the CPU per grading includes.

    python benchmarks/throughput.py --sequential 20 --submissions 60 --concurrency 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import psutil
import requests
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader_service.orm import GradingJob  # noqa: E402
from tests.conftest import zip_dir  # noqa: E402
from tests.service import ServiceProcess  # noqa: E402


def tiny_assignment(folder: Path) -> tuple[Path, bytes]:
    """A 5-cell notebook: intro, answer, three tests."""

    def md(**kw):
        return {"nbgrader": {"schema_version": 3, "locked": True, "solution": False, "grade": False, **kw}}

    cells = [
        new_markdown_cell("# Tiny", metadata=md(grade_id="intro")),
        new_code_cell(
            "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION",
            metadata=md(grade_id="answer", solution=True, locked=False),
        ),
        new_code_cell("assert square(2) == 4", metadata=md(grade_id="t1", grade=True, points=1)),
        new_code_cell("assert square(-3) == 9", metadata=md(grade_id="t2", grade=True, points=1)),
        new_code_cell("assert square(0) == 0", metadata=md(grade_id="t3", grade=True, points=1)),
    ]
    nb = new_notebook(
        cells=cells,
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    source = folder / "source"
    source.mkdir()
    nbformat.write(nb, source / "tiny.ipynb")
    answer = nbformat.from_dict(json.loads(json.dumps(nb)))
    answer.cells[1].source = "def square(x):\n    return x * x"
    return source, nbformat.writes(answer).encode()


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (user, nice, system, irq, softirq), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequential", type=int, default=20, help="submissions one at a time (latency)")
    parser.add_argument("--submissions", type=int, default=40, help="submissions at once (throughput)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--config", default="", help="extra config lines for the service")
    parser.add_argument("--probe-interval", type=float, default=0.1, help="seconds between GET health probes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="grader-bench-") as tmp:
        tmp_path = Path(tmp)
        config = f"c.Scheduler.concurrency = {args.concurrency}\n{args.config}\n"
        svc = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'bench.sqlite'}", config=config)
        svc.start()
        try:
            run(svc, tmp_path, args.sequential, args.submissions, args.probe_interval)
        finally:
            svc.stop()


def run(svc: ServiceProcess, tmp_path: Path, m: int, k: int, probe_interval: float) -> None:
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
    tokens = []
    for i in range(max(k, m)):
        admin.put(f"lectures/bench/roles/u{i}", json={"role": "student"})
        tokens.append(svc.token(f"u{i}"))

    graded_at: dict[int, float] = {}
    stream_ready = threading.Event()
    stop = threading.Event()

    def follow() -> None:
        with admin.get(
            "events", params={"lecture": "bench", "assignment": "tiny"}, stream=True, timeout=600
        ) as r:
            stream_ready.set()
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event["auto_status"] in ("graded", "failed"):
                        graded_at[event["submission"]] = time.perf_counter()
                if stop.is_set() or len(graded_at) >= k + m:
                    return

    health_latency: list[tuple[float, float]] = []  # (sent at, latency)

    def probe() -> None:
        session = requests.Session()
        while not stop.is_set():
            t = time.perf_counter()
            session.get(svc.api + "health", timeout=10)
            health_latency.append((t, time.perf_counter() - t))
            time.sleep(probe_interval)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    stream_ready.wait(10)

    submitted_at: dict[int, float] = {}
    answered: list[float] = []  # how long each submit request took to answer (upload, git, database)

    def submit(token: str) -> int:
        t = time.perf_counter()
        r = svc.client(token).post(
            "lectures/bench/assignments/tiny/submissions",
            data=answer,
            params={"filename": "tiny.ipynb"},
            headers={"Content-Type": "application/x-ipynb+json"},
        )
        r.raise_for_status()
        submitted_at[r.json()["id"]] = t
        answered.append(time.perf_counter() - t)
        return r.json()["id"]

    # Phase 1: one at a time.
    sequential = []
    for token in tokens[:m]:
        sid = submit(token)
        deadline = time.perf_counter() + 120
        while sid not in graded_at and time.perf_counter() < deadline:
            time.sleep(0.002)
        if sid in graded_at:
            sequential.append(graded_at[sid] - submitted_at[sid])
    print(f"one at a time            {len(sequential)}/{m} graded")
    print(
        f"submit request           p50 {1000 * statistics.median(answered):.1f} ms, "
        f"p95 {1000 * percentile(answered, 0.95):.1f} ms (answer to POST submissions)"
    )
    answered.clear()
    if sequential:
        print(
            f"submit->graded latency   p50 {1000 * statistics.median(sequential):.0f} ms, "
            f"p95 {1000 * percentile(sequential, 0.95):.0f} ms"
        )

    # Phase 2: all at once.
    burst_ids: set[int] = set()
    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    service = psutil.Process(svc.proc.pid)
    service_cpu, machine_cpu = _cpu_seconds(service), _machine_cpu_seconds()
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        burst_ids.update(pool.map(submit, tokens[:k]))
    accepted = time.perf_counter()
    follower.join(600)
    stop.set()
    service_cpu, machine_cpu = _cpu_seconds(service) - service_cpu, _machine_cpu_seconds() - machine_cpu
    end = max(graded_at[i] for i in burst_ids if i in graded_at) if graded_at else time.perf_counter()
    latencies = [graded_at[i] - submitted_at[i] for i in burst_ids if i in graded_at]

    with svc.engine.connect() as conn:
        jobs = conn.execute(
            select(GradingJob.started_at, GradingJob.finished_at, GradingJob.runner_seconds).where(
                GradingJob.state == "succeeded", GradingJob.submission_id.in_(burst_ids)
            )
        ).all()
    overhead = [(j.finished_at - j.started_at).total_seconds() - (j.runner_seconds or 0) for j in jobs]
    runner = [j.runner_seconds or 0 for j in jobs]

    print(f"all at once              {len(latencies)}/{k} graded")
    print(
        f"submit request           p50 {1000 * statistics.median(answered):.1f} ms, "
        f"p95 {1000 * percentile(answered, 0.95):.1f} ms (8 clients at once)"
    )
    print(f"throughput               {60 * len(latencies) / (end - start):.1f} gradings/min")
    print(
        f"submit->graded latency   p50 {1000 * statistics.median(latencies):.0f} ms, "
        f"p95 {1000 * percentile(latencies, 0.95):.0f} ms (queueing behind the burst)"
    )
    if latencies:
        print(
            f"CPU per grading          {1000 * machine_cpu / len(latencies):.0f} ms (whole machine), "
            f"{1000 * service_cpu / len(latencies):.0f} ms of it in the service process"
        )
    print(f"grading process time     p50 {1000 * statistics.median(runner):.0f} ms")
    print(
        f"service overhead / job   p50 {1000 * statistics.median(overhead):.0f} ms, "
        f"p95 {1000 * percentile(overhead, 0.95):.0f} ms"
    )
    # The burst's submissions arrive first (8 clients at once), then the workers grade the queue.
    for label, window in (
        ("while submissions arrive", [lat for t, lat in health_latency if t <= accepted]),
        ("while grading the queue", [lat for t, lat in health_latency if t > accepted]),
    ):
        if window:
            print(
                f"GET health {label:24s} p50 {1000 * statistics.median(window):.1f} ms, "
                f"p99 {1000 * percentile(window, 0.99):.1f} ms ({len(window)} requests)"
            )


if __name__ == "__main__":
    main()
