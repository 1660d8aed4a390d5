"""The ten seconds before a deadline: a burst of submissions against 1 and 3 replicas on PostgreSQL.

Starts a throwaway PostgreSQL (as the tests do) and, for each replica count in `--replicas`, a fresh
database and data dir shared by that many `grader-service` processes (local executor, each with its
own workers). The README's example (examples/source/basics, released; examples/submission/basics.ipynb,
10/10) is submitted once by each of `--students` students, spread evenly over `--window` seconds, by
`--clients` concurrent clients, round-robin across the replicas. Meanwhile `GET health` is probed
(`--probe-interval`, round-robin across replicas) while the burst is accepted and while the queue drains.

Printed per replica count:

- accept latency (the POST's answer: upload, git commit, database) p50/p99 — target p99 < 300 ms;
- `GET health` p50/p99 while accepting and while draining — target p99 < 50 ms;
- drain time (last accepted -> last graded), gradings per minute (first submit -> last graded);
- exactly-once, checked in the database and through the API, not assumed: every accepted submission
  has one grading job, claimed once (attempts = 1), succeeded, and the submission is `graded` with
  score 10; the API's submission list holds each student's one submission, graded.

    python benchmarks/deadline.py                                   # 500 students, 50 clients, 1 and 3
    python benchmarks/deadline.py --students 60 --clients 10 --replicas 1 3 --window 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader_service import db  # noqa: E402
from grader_service.orm import ApiToken, GradingJob, Lecture, Role, Submission, User  # noqa: E402
from grader_service.orm.api_token import PREFIX_LENGTH, hash_token, new_token  # noqa: E402
from tests.conftest import zip_dir  # noqa: E402
from tests.postgres import PostgresServer, create_database  # noqa: E402
from tests.service import ServiceProcess  # noqa: E402

EXAMPLES = ROOT / "examples"
LECTURE, ASSIGNMENT = "intro", "basics"
SUBMISSIONS = f"lectures/{LECTURE}/assignments/{ASSIGNMENT}/submissions"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"p50 {1000 * statistics.median(values):6.1f} ms  p99 {1000 * percentile(values, 0.99):6.1f} ms"
        f"  max {1000 * max(values):6.1f} ms  ({len(values)} requests)"
    )


def add_students(engine: Engine, count: int) -> list[str]:
    """`count` students of the lecture with a token each, in one transaction (setup, not measured)."""
    factory = db.make_session_factory(engine)
    tokens = []
    with db.session_scope(factory) as session:
        lecture = session.scalars(select(Lecture).where(Lecture.code == LECTURE)).one()
        users = [User(name=f"student{i:04d}") for i in range(count)]
        session.add_all(users)
        session.flush()
        for user in users:
            token = new_token()
            tokens.append(token)
            session.add(ApiToken(user_id=user.id, prefix=token[:PREFIX_LENGTH], hashed=hash_token(token)))
            session.add(Role(user_id=user.id, lecture_id=lecture.id, role="student"))
    return tokens


def set_up_course(svc: ServiceProcess) -> requests.Session:
    """The README walkthrough's lecture and released assignment, through the API; the admin's session."""
    admin = requests.Session()
    admin.headers["Authorization"] = f"token {svc.token('admin', admin=True)}"
    for method, path, kwargs in (
        ("POST", "lectures", {"json": {"code": LECTURE, "name": "Intro to Python"}}),
        (
            "POST",
            f"lectures/{LECTURE}/assignments",
            {"json": {"name": ASSIGNMENT, "feedback_policy": "immediate"}},
        ),
        (
            "PUT",
            f"lectures/{LECTURE}/assignments/{ASSIGNMENT}/files",
            {
                "data": zip_dir(EXAMPLES / "source" / ASSIGNMENT),
                "headers": {"Content-Type": "application/zip"},
            },
        ),
        ("PATCH", f"lectures/{LECTURE}/assignments/{ASSIGNMENT}", {"json": {"status": "released"}}),
    ):
        admin.request(method, svc.api + path, timeout=300, **kwargs).raise_for_status()
    return admin


@dataclass
class Burst:
    """What the clients and the health probe saw."""

    accepted: dict[int, float] = field(default_factory=dict)  # submission id -> when it was sent
    accept_latency: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    health: list[tuple[float, float]] = field(default_factory=list)  # (sent at, latency)
    lock: threading.Lock = field(default_factory=threading.Lock)


def submit_all(
    replicas: list[ServiceProcess], tokens: list[str], clients: int, window: float, burst: Burst
) -> tuple[float, float]:
    """Each token submits once at its slot in the window, recorded in `burst`; the burst's start and end."""
    answer = (EXAMPLES / "submission" / f"{ASSIGNMENT}.ipynb").read_bytes()
    local = threading.local()
    start = time.perf_counter() + 0.5

    def submit(i: int) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        time.sleep(max(0.0, start + window * i / len(tokens) - time.perf_counter()))
        svc = replicas[i % len(replicas)]
        sent = time.perf_counter()
        try:
            r = local.session.post(
                svc.api + SUBMISSIONS,
                data=answer,
                params={"filename": f"{ASSIGNMENT}.ipynb"},
                headers={
                    "Content-Type": "application/x-ipynb+json",
                    "Authorization": f"token {tokens[i]}",
                },
                timeout=120,
            )
        except requests.RequestException as e:
            with burst.lock:
                burst.errors.append(repr(e))
            return
        latency = time.perf_counter() - sent
        with burst.lock:
            if r.status_code == 201:
                burst.accepted[r.json()["id"]] = sent
                burst.accept_latency.append(latency)
            else:
                burst.errors.append(f"{r.status_code} {r.text[:200]}")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(submit, range(len(tokens))))
    return start, time.perf_counter()


def probe_health(
    replicas: list[ServiceProcess], burst: Burst, interval: float, stop: threading.Event
) -> None:
    sessions = [requests.Session() for _ in replicas]
    i = 0
    while not stop.is_set():
        t = time.perf_counter()
        try:
            sessions[i % len(replicas)].get(replicas[i % len(replicas)].api + "health", timeout=30)
            burst.health.append((t, time.perf_counter() - t))
        except requests.RequestException as e:
            burst.errors.append(f"health: {e!r}")
        i += 1
        time.sleep(interval)


def wait_drained(engine: Engine, ids: set[int], timeout: float) -> float:
    """Wait until every accepted submission is graded or failed (polling the database); returns when."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        with engine.connect() as conn:
            done = conn.scalar(
                select(func.count()).where(
                    Submission.id.in_(ids), Submission.auto_status.in_(("graded", "failed"))
                )
            )
        if done >= len(ids):
            return time.perf_counter()
        time.sleep(0.5)
    raise TimeoutError(f"{done}/{len(ids)} graded after {timeout:.0f} s")


def check_exactly_once(
    engine: Engine, admin: requests.Session, svc: ServiceProcess, ids: set[int], students: int
) -> list[str]:
    """Every accepted submission graded exactly once, from the database and the API; the problems found."""
    problems = []
    with engine.connect() as conn:
        jobs = conn.execute(
            select(GradingJob.submission_id, GradingJob.state, GradingJob.attempts).where(
                GradingJob.submission_id.in_(ids)
            )
        ).all()
        rows = conn.execute(
            select(Submission.id, Submission.auto_status, Submission.score).where(Submission.id.in_(ids))
        ).all()
    per_submission: dict[int, list] = {}
    for job in jobs:
        per_submission.setdefault(job.submission_id, []).append(job)
    for sid in ids:
        found = per_submission.get(sid, [])
        if len(found) != 1 or found[0].state != "succeeded" or found[0].attempts != 1:
            problems.append(f"submission {sid}: jobs {[(j.state, j.attempts) for j in found]}")
    for row in rows:
        if row.auto_status != "graded" or row.score != 10:
            problems.append(f"submission {row.id}: {row.auto_status}, score {row.score}")
    listed = admin.get(svc.api + SUBMISSIONS, params={"limit": 1000}, timeout=60).json()
    graded = {s["id"] for s in listed["items"] if s["auto_status"] == "graded" and s["score"] == 10}
    users = {s["user"] for s in listed["items"]}
    if listed["total"] != students or graded != ids or len(users) != students:
        problems.append(
            f"API: total {listed['total']}, {len(graded)} graded with 10/10, {len(users)} students (want {students})"
        )
    return problems


def run(server: PostgresServer, tmp: Path, replicas: int, args: argparse.Namespace) -> None:
    url = create_database(server.url, f"deadline_{replicas}")
    engine = db.make_engine(url)
    db.upgrade(engine)
    config = f"c.Scheduler.concurrency = {args.concurrency}\n" if args.concurrency else ""
    data_dir = tmp / f"data{replicas}"
    services = []
    for i in range(replicas):
        svc = ServiceProcess(data_dir, url, config=config)
        svc.log_path = tmp / f"replicas{replicas}-{i}.log"
        services.append(svc)
    try:
        for svc in services:
            svc.start()
        admin = set_up_course(services[0])
        tokens = add_students(engine, args.students)
        burst = Burst()
        stop = threading.Event()
        prober = threading.Thread(
            target=probe_health, args=(services, burst, args.probe_interval, stop), daemon=True
        )
        prober.start()
        start, accepted = submit_all(services, tokens, args.clients, args.window, burst)
        ids = set(burst.accepted)
        drained = wait_drained(engine, ids, args.timeout) if ids else accepted
        stop.set()
        prober.join()
        problems = check_exactly_once(engine, admin, services[0], ids, args.students)
        report(replicas, args, burst, start, accepted, drained, problems)
    finally:
        for svc in services:
            svc.stop()
        engine.dispose()


def report(
    replicas: int,
    args: argparse.Namespace,
    burst: Burst,
    start: float,
    accepted: float,
    drained: float,
    problems: list[str],
) -> None:
    n = len(burst.accepted)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\n{replicas} replica(s): {args.students} students, {args.clients} clients, {args.window:.0f} s window"
        f" (load average {load}, {os.cpu_count()} CPUs)"
    )
    print(
        f"  accepted                 {n}/{args.students} in {accepted - start:.1f} s, {len(burst.errors)} errors"
    )
    for error in burst.errors[:5]:
        print(f"    {error}")
    print(f"  accept latency           {ms(burst.accept_latency)}")
    print(f"  GET health, accepting    {ms([lat for t, lat in burst.health if t <= accepted])}")
    print(f"  GET health, draining     {ms([lat for t, lat in burst.health if t > accepted])}")
    print(f"  drain time               {drained - accepted:.1f} s after the last was accepted")
    if n:
        print(f"  throughput               {60 * n / (drained - start):.1f} gradings/min")
    verdict = "yes" if not problems and n == args.students else f"NO ({len(problems)} problems)"
    print(f"  graded exactly once      {verdict}")
    for problem in problems[:10]:
        print(f"    {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--students", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50, help="concurrent submitting clients")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3], help="replica counts to run")
    parser.add_argument("--window", type=float, default=10.0, help="seconds over which the burst is spread")
    parser.add_argument("--concurrency", type=int, default=0, help="workers per replica (0: the CPU count)")
    parser.add_argument("--probe-interval", type=float, default=0.1, help="seconds between GET health probes")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the queue to drain")
    args = parser.parse_args()

    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="grader-deadline-") as tmp:
            for replicas in args.replicas:
                run(server, Path(tmp), replicas, args)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
