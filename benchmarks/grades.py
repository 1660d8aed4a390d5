"""Per-cell grades on PostgreSQL, over real HTTP: GET one submission's grades, and PUT a change, in a course
whose `grades` table holds every cell of every submission.

Starts a throwaway PostgreSQL (as the tests do), migrates it to head and seeds one lecture and assignment
with `--students` students x `--submissions` graded submissions each, `--cells` grade rows per submission
(bulk SQL with generate_series, not grading: no notebook is run), then starts the service on it and times,
as a tutor:

- GET …/submissions/{id}/grades of a submission in the middle of the table (target: p50 < 20 ms);
- PUT …/grades changing one cell (compare-and-set, a history row, the sum recomputed);
- GET …/history of that submission;
- GET …/grading-queue (first page).

Each is timed `--repeat` times after one warm-up; p50 and p95 are printed, with `EXPLAIN ANALYZE` of the
grades query.

    python benchmarks/grades.py                       # 1000 students x 3 submissions x 20 cells
    python benchmarks/grades.py --students 200 --repeat 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
from sqlalchemy import text
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader_service import db  # noqa: E402
from tests.postgres import PostgresServer, create_database  # noqa: E402
from tests.service import ServiceProcess  # noqa: E402

LECTURE, ASSIGNMENT = "marks", "essay"


def seed(engine: Engine, students: int, per_student: int, cells: int) -> None:
    """The lecture, its students and tutor, one assignment, graded submissions and their cells."""
    statements = [
        "INSERT INTO lectures (code, name, state, created_at) VALUES (:lecture, 'Marks', 'active', now())",
        "INSERT INTO users (name, admin, created_at)"
        " SELECT 's' || lpad(i::text, 5, '0'), false, now() FROM generate_series(1, :students) i",
        "INSERT INTO roles (user_id, lecture_id, role, source)"
        " SELECT u.id, l.id, 'student', 'api' FROM users u, lectures l WHERE l.code = :lecture AND u.name LIKE 's%'",
        "INSERT INTO assignments (lecture_id, name, status, late_penalty, grading_policy, feedback_policy,"
        " settings, source_commit, release_commit, max_score, released_at, created_at)"
        " SELECT l.id, :assignment, 'released', 0.1, 'latest', 'immediate', '{}', repeat('a', 40),"
        " repeat('b', 40), :cells, now(), now() FROM lectures l WHERE l.code = :lecture",
        "INSERT INTO submissions (assignment_id, user_id, commit_hash, submitted_at, late, late_seconds,"
        " auto_status, manual_status, score, max_score, cell_score, feedback_status)"
        " SELECT a.id, r.user_id, md5(r.user_id || ':' || k), now() - (k || ' minutes')::interval, false, 0,"
        " 'graded', CASE WHEN r.user_id % 3 = 0 THEN 'needed' ELSE 'done' END, :cells - 1, :cells, :cells - 1,"
        " 'generated'"
        " FROM generate_series(1, :per_student) k, assignments a JOIN roles r ON r.lecture_id = a.lecture_id"
        " ORDER BY k, r.user_id",
        "INSERT INTO grades (submission_id, grade_id, notebook, kind, auto_points, manual_points, extra_credit,"
        " max_points, comment, needs_manual, updated_at)"
        " SELECT s.id, 'cell_' || lpad(c::text, 3, '0'), 'essay', CASE WHEN c = 1 THEN 'manual' ELSE 'test' END,"
        " CASE WHEN c = 1 THEN NULL ELSE 1 END, CASE WHEN c = 1 AND s.manual_status = 'done' THEN 0 END, 0, 1,"
        " CASE WHEN c = 1 THEN 'see the rubric' END, c = 1, now()"
        " FROM submissions s, generate_series(1, :cells) c",
    ]
    params = {
        "lecture": LECTURE, "assignment": ASSIGNMENT, "students": students, "per_student": per_student,
        "cells": cells,
    }  # fmt: skip
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), {k: v for k, v in params.items() if f":{k}" in statement})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def timed(request: Callable[[], requests.Response], repeat: int) -> tuple[float, float]:
    """p50 and p95 in ms of `repeat` requests after one warm-up."""
    request().raise_for_status()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = request()
        times.append(time.perf_counter() - t)
        r.raise_for_status()
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return 1000 * statistics.median(times), 1000 * p95


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--students", type=int, default=1000)
    parser.add_argument("--submissions", type=int, default=3, help="submissions per student")
    parser.add_argument("--cells", type=int, default=20, help="graded cells per submission")
    parser.add_argument("--repeat", type=int, default=100, help="timed requests per operation")
    args = parser.parse_args()

    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="grader-bench-") as tmp:
            url = create_database(server.url, "grades_bench")
            engine = db.make_engine(url)
            db.upgrade(engine)
            t = time.perf_counter()
            seed(engine, args.students, args.submissions, args.cells)
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT count(*) FROM grades")).scalar_one()
                middle = conn.execute(
                    text("SELECT id FROM submissions ORDER BY id OFFSET (SELECT count(*) / 2 FROM submissions)")
                ).scalars().first()  # fmt: skip
                plan = conn.execute(
                    text(f"EXPLAIN ANALYZE SELECT * FROM grades WHERE submission_id = {middle} ORDER BY id")
                ).scalars().all()  # fmt: skip
            print(
                f"seeded {rows} grade rows in {time.perf_counter() - t:.1f} s; submission {middle} measured"
            )
            svc = ServiceProcess(Path(tmp) / "data", url)
            token = svc.token("teacher", admin=True)
            svc.start()
            try:
                session = requests.Session()
                session.headers["Authorization"] = f"token {token}"
                base = f"{svc.url}api/v1/lectures/{LECTURE}/assignments/{ASSIGNMENT}"
                grades = f"{base}/submissions/{middle}/grades"
                flip = iter(range(10**9))

                def put() -> requests.Response:
                    points = next(flip) % 2
                    return session.put(grades, json={"grades": {"cell_001": {"points": points}}}, timeout=60)

                load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
                print(f"load average {load}; {args.repeat} requests each, after one warm-up")
                print(f"{'operation':<40} {'p50 ms':>8} {'p95 ms':>8}")
                measured = [
                    ("GET grades (one submission)", lambda: session.get(grades, timeout=60)),
                    ("PUT grades (one cell)", put),
                    ("GET history", lambda: session.get(f"{base}/submissions/{middle}/history", timeout=60)),
                    (
                        "GET grading-queue (first page)",
                        lambda: session.get(f"{base}/grading-queue", timeout=60),
                    ),
                    ("(reference) GET health", lambda: session.get(f"{svc.url}api/v1/health", timeout=60)),
                ]
                for label, request in measured:
                    p50, p95 = timed(request, args.repeat)
                    print(f"{label:<40} {p50:8.1f} {p95:8.1f}")
                print("\nEXPLAIN ANALYZE of the grades query:")
                print("\n".join("  " + line for line in plan))
            finally:
                svc.stop()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
