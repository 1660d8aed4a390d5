"""List endpoints of a large course, over real HTTP, on PostgreSQL, without and with the 0004 indexes.

Starts a throwaway PostgreSQL (as the tests do), migrates it to head and seeds one lecture with
`--students` students x `--assignments` assignments x `--submissions` graded submissions each (bulk SQL
with generate_series, not the API: git repositories are not needed, no list endpoint reads them), then
starts the service on it and times, as the instructor and as one student:

- submission list: latest per student, all (first page and a deep page), one student's (`?user=`),
  a student's own;
- assignment list (the instructor's, and a student's with their `submissions_used`);
- roster (roles) list;
- scores export (JSON and CSV: one row per student, the whole course's table);
- the lecture gradebook (`GET /lectures/{code}/scores`, CSV and JSON: one row per student, one column per
  assignment, streamed), with the service process's memory before and after (flat: streamed).

Each endpoint is timed `--repeat` times after one warm-up; p50 and p95 are printed. The run is done
twice on the same data: first with the indexes of revision 0004 removed (`alembic downgrade 0003` while
the service runs; the service checks the revision only at start), then with them (`upgrade head`), so
the output shows what the indexes buy. `EXPLAIN` of the main queries follows each run.

    python benchmarks/large_course.py                       # 1000 x 20 x 5 (100 000 submissions)
    python benchmarks/large_course.py --students 200 --repeat 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from alembic import command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader_service import db  # noqa: E402
from grader_service.api import gradebook  # noqa: E402
from tests.postgres import PostgresServer, create_database  # noqa: E402
from tests.service import ServiceProcess  # noqa: E402

LECTURE = "big"
# A graded submission's gradebook, about the size a 10-cell notebook's is, so rows weigh what real ones do.
GRADEBOOK = {
    "notebooks": {
        "basics": {
            "cells": {
                f"test_{i}": {"points": 1.0, "max_points": 1.0, "passed": True, "output": "ok " * 20}
                for i in range(10)
            }
        }
    },
    "score": 10.0,
    "max_score": 10.0,
}


def seed(engine: Engine, students: int, assignments: int, per_student: int) -> None:
    """One lecture, its students, released assignments, graded submissions and their jobs, in bulk SQL."""
    gradebook = json.dumps(GRADEBOOK)
    statements = [
        "INSERT INTO lectures (code, name, state, created_at) VALUES (:lecture, 'Big course', 'active', now())",
        "INSERT INTO users (name, admin, created_at)"
        " SELECT 's' || lpad(i::text, 5, '0'), false, now() FROM generate_series(1, :students) i",
        "INSERT INTO roles (user_id, lecture_id, role, source)"
        " SELECT u.id, l.id, 'student', 'api' FROM users u, lectures l"
        " WHERE l.code = :lecture AND u.name LIKE 's%'",
        "INSERT INTO assignments (lecture_id, name, status, late_penalty, grading_policy, feedback_policy,"
        " settings, source_commit, release_commit, max_score, released_at, created_at)"
        " SELECT l.id, 'a' || lpad(i::text, 2, '0'), 'released', 0.1,"
        " CASE WHEN i % 2 = 0 THEN 'best' ELSE 'latest' END, 'immediate', '{}',"
        " repeat('a', 40), repeat('b', 40), 10, now(), now() - (i || ' hours')::interval"
        " FROM lectures l, generate_series(1, :assignments) i WHERE l.code = :lecture",
        # Submissions in the order they would arrive: round k of every student and assignment, k = 1..n.
        "INSERT INTO submissions (assignment_id, user_id, commit_hash, submitted_at, late, late_seconds,"
        " auto_status, manual_status, score, max_score, gradebook, logs, feedback_status)"
        " SELECT a.id, r.user_id, md5(a.id || ':' || r.user_id || ':' || k), now(), k = :per_student,"
        " CASE WHEN k = :per_student THEN 60 ELSE 0 END, 'graded', 'not_needed',"
        " (a.id * 7 + r.user_id * 3 + k) % 11, 10, CAST(:gradebook AS json), 'graded in 1.2 s', 'generated'"
        " FROM generate_series(1, :per_student) k, assignments a"
        " JOIN roles r ON r.lecture_id = a.lecture_id ORDER BY k, a.id, r.user_id",
        "INSERT INTO grading_jobs (submission_id, state, priority, attempts, executor, created_at,"
        " started_at, finished_at, runner_seconds)"
        " SELECT id, 'succeeded', 0, 1, 'local', now(), now(), now(), 1.2 FROM submissions",
    ]
    params = {
        "lecture": LECTURE,
        "students": students,
        "assignments": assignments,
        "per_student": per_student,
        "gradebook": gradebook,
    }
    with engine.begin() as conn:
        for statement in statements:
            names = {k: v for k, v in params.items() if f":{k}" in statement}
            conn.execute(text(statement), names)


def vacuum(engine: Engine) -> None:
    """VACUUM ANALYZE, as autovacuum would have done on a course's database long before the deadline:
    statistics for the planner, and the visibility map that lets index-only scans skip the table."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def timed(
    session: requests.Session, url: str, params: dict[str, str], repeat: int
) -> tuple[float, float, int]:
    """p50 and p95 in ms of `repeat` GETs after one warm-up, and the size of the answer in bytes."""
    r = session.get(url, params=params, timeout=120)
    r.raise_for_status()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = session.get(url, params=params, timeout=120)
        times.append(time.perf_counter() - t)
        r.raise_for_status()
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return 1000 * statistics.median(times), 1000 * p95, len(r.content)


def endpoints(students: int) -> list[tuple[str, str, str, dict[str, str]]]:
    """(label, who, path, query) of every list endpoint measured."""
    sub = f"lectures/{LECTURE}/assignments/a01/submissions"
    middle = f"s{students // 2:05d}"
    deep = str(max(0, (students * 5) // 2))
    return [
        # References: what any request costs on this machine now, without a list (no database; one row).
        ("(reference) GET health", "staff", "health", {}),
        ("(reference) GET user", "staff", "user", {}),
        ("submissions latest", "staff", sub, {"latest": "true"}),
        ("submissions all", "staff", sub, {}),
        ("submissions all, deep page", "staff", sub, {"offset": deep}),
        ("submissions one student", "staff", sub, {"user": middle}),
        ("submissions own (student)", "student", sub, {}),
        ("assignments (instructor)", "staff", f"lectures/{LECTURE}/assignments", {}),
        ("assignments (student)", "student", f"lectures/{LECTURE}/assignments", {}),
        ("roster", "staff", f"lectures/{LECTURE}/roles", {}),
        ("scores export latest, JSON", "staff", f"lectures/{LECTURE}/assignments/a01/scores", {}),
        ("scores export best, JSON", "staff", f"lectures/{LECTURE}/assignments/a02/scores", {}),
        (
            "scores export latest, CSV",
            "staff",
            f"lectures/{LECTURE}/assignments/a01/scores",
            {"format": "csv"},
        ),
        *GRADEBOOK_ENDPOINTS,
    ]


# The whole lecture's table: each assignment by its own policy (half latest, half best), CSV and JSON.
GRADEBOOK_ENDPOINTS = [
    ("lecture gradebook, CSV", "staff", f"lectures/{LECTURE}/scores", {"format": "csv"}),
    ("lecture gradebook, JSON", "staff", f"lectures/{LECTURE}/scores", {"format": "json"}),
]


# The main queries, as the handlers issue them (api/submissions.py, api/assignments.py, api/grading.py,
# api/roles.py), with the ids of the seeded course.
EXPLAINED = {
    "submissions latest (page)": (
        "SELECT s.* FROM submissions s WHERE s.assignment_id = :a AND s.deleted_at IS NULL AND s.id IN"
        " (SELECT max(id) FROM submissions WHERE assignment_id = :a AND deleted_at IS NULL GROUP BY user_id)"
        " ORDER BY s.id DESC LIMIT 100"
    ),
    "submissions all (page)": (
        "SELECT s.* FROM submissions s WHERE s.assignment_id = :a AND s.deleted_at IS NULL"
        " ORDER BY s.id DESC LIMIT 100"
    ),
    "submissions one student": (
        "SELECT s.* FROM submissions s JOIN users u ON u.id = s.user_id WHERE s.assignment_id = :a"
        " AND s.deleted_at IS NULL AND u.name = :u ORDER BY s.id DESC LIMIT 100"
    ),
    "submissions_used (student's assignment list)": (
        "SELECT assignment_id, count(*) FROM submissions WHERE user_id = :uid"
        " AND assignment_id IN (SELECT id FROM assignments WHERE lecture_id = :l) GROUP BY assignment_id"
    ),
    "roster (page)": (
        "SELECT r.* FROM roles r JOIN users u ON u.id = r.user_id WHERE r.lecture_id = :l"
        " ORDER BY u.name LIMIT 100"
    ),
    "scores export": (
        "SELECT s.id, s.user_id, s.score, s.manual_score, s.late FROM submissions s"
        " JOIN users u ON u.id = s.user_id WHERE s.assignment_id = :a AND s.deleted_at IS NULL"
        " ORDER BY u.name, s.id"
    ),
}


def explain(engine: Engine, students: int) -> None:
    with engine.connect() as conn:
        ids = conn.execute(
            text(
                "SELECT a.id, l.id, u.id, u.name FROM assignments a JOIN lectures l ON l.id = a.lecture_id,"
                " users u WHERE a.name = 'a01' AND l.code = :lecture AND u.name = :u"
            ),
            {"lecture": LECTURE, "u": f"s{students // 2:05d}"},
        ).one()
        params = {"a": ids[0], "l": ids[1], "uid": ids[2], "u": ids[3]}
        explained = {**EXPLAINED, "lecture gradebook (a page's scores)": gradebook_page_sql(conn)}
        for label, sql in explained.items():
            names = {k: v for k, v in params.items() if f":{k}" in sql}
            plan = conn.execute(text("EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) " + sql), names).scalars()
            print(f"\n  EXPLAIN {label}")
            for line in plan:
                print("    " + (line if len(line) <= 160 else line[:157] + "..."))  # long IN lists


def memory(pid: int) -> dict[str, int]:
    """The process's resident memory now (VmRSS) and at its highest so far (VmHWM), in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def gradebook_page_sql(conn: Connection) -> str:
    """The lecture gradebook's query for its first page of students, as api/gradebook.py builds it."""
    users = conn.execute(
        text(
            "SELECT u.id FROM users u JOIN roles r ON r.user_id = u.id JOIN lectures l ON l.id = r.lecture_id"
            " WHERE l.code = :lecture AND r.role = 'student' ORDER BY u.name LIMIT :n"
        ),
        {"lecture": LECTURE, "n": gradebook.PAGE_SIZE},
    ).scalars()
    policies = conn.execute(
        text(
            "SELECT a.id, a.grading_policy FROM assignments a JOIN lectures l ON l.id = a.lecture_id"
            " WHERE l.code = :lecture"
        ),
        {"lecture": LECTURE},
    ).all()
    query = gradebook.page_query(
        list(users), [i for i, p in policies if p == "latest"], [i for i, p in policies if p == "best"]
    )
    return str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def measure(svc: ServiceProcess, tokens: dict[str, str], students: int, repeat: int) -> dict[str, float]:
    sessions = {}
    for who, token in tokens.items():
        sessions[who] = requests.Session()
        sessions[who].headers["Authorization"] = f"token {token}"
    medians = {}
    before = None
    for label, who, path, params in endpoints(students):
        if (label, who, path, params) == GRADEBOOK_ENDPOINTS[0]:
            before = memory(svc.proc.pid)
        p50, p95, size = timed(sessions[who], svc.api + path, params, repeat)
        medians[label] = p50
        print(f"  {label:30s} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  {size / 1024:8.1f} KiB")
    if before is not None:
        after = memory(svc.proc.pid)
        print(
            f"  service memory across the gradebook requests: RSS {before['VmRSS'] / 1024:.1f} ->"
            f" {after['VmRSS'] / 1024:.1f} MiB, peak (VmHWM) {before['VmHWM'] / 1024:.1f} ->"
            f" {after['VmHWM'] / 1024:.1f} MiB"
        )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--students", type=int, default=1000)
    parser.add_argument("--assignments", type=int, default=20)
    parser.add_argument("--submissions", type=int, default=5, help="submissions per student and assignment")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per endpoint")
    parser.add_argument("--no-explain", action="store_true")
    args = parser.parse_args()

    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="grader-bench-") as tmp:
            url = create_database(server.url, "large_course")
            engine = db.make_engine(url)
            db.upgrade(engine)
            t = time.perf_counter()
            seed(engine, args.students, args.assignments, args.submissions)
            total = args.students * args.assignments * args.submissions
            print(f"seeded {total} submissions in {time.perf_counter() - t:.1f} s")
            svc = ServiceProcess(Path(tmp) / "data", url)
            tokens = {
                "staff": svc.token("teacher", admin=True),
                "student": svc.token(f"s{args.students // 3:05d}"),
            }
            svc.start()
            try:
                results = {}
                for phase, revision in (
                    ("without the 0004 indexes", "0003"),
                    ("with the 0004 indexes", "head"),
                ):
                    if revision == "head":
                        db.upgrade(engine, revision)
                    else:
                        downgrade(engine, revision)
                    vacuum(engine)
                    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
                    print(f"\n{phase} (revision {db.current_revision(engine)}; load average {load}):")
                    results[phase] = measure(svc, tokens, args.students, args.repeat)
                    if not args.no_explain:
                        explain(engine, args.students)
            finally:
                svc.stop()
                engine.dispose()
        before, after = results.values()
        print("\np50 before -> after:")
        for label in after:
            print(f"  {label:30s} {before[label]:7.1f} -> {after[label]:7.1f} ms")
    finally:
        server.stop()


def downgrade(engine: Engine, revision: str) -> None:
    """`alembic downgrade` on PostgreSQL (the benchmark's "before": the schema without 0004's indexes)."""
    cfg = db.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


if __name__ == "__main__":
    main()
