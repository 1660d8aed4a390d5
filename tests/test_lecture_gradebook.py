"""The whole-lecture gradebook (`GET /lectures/{code}/scores`): one row per roster student, one cell per
assignment chosen exactly as the per-assignment export chooses it, streamed a page at a time.

Rows are written straight to the service's database (as in test_list_queries): git is not read.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select

from grader_service import db
from grader_service.api.csv_export import FORMULA_PREFIXES
from grader_service.api.gradebook import PAGE_SIZE
from grader_service.orm import Assignment, Lecture, Role, Submission, User, utcnow

from .service import Client, ServiceProcess

BOOK = "lectures/book/scores"
# (name, policy, late penalty), in creation order: the column order. "untouched" gets no submission.
ASSIGNMENTS = [("first", "latest", 0.5), ("second", "best", 0.25), ("untouched", "latest", 0.0)]
HOSTILE = ["=1+2", "+1+2", "-2+3", "@SUM(1,2)", "\t=cmd", "\r=cmd"]
SUBMITTERS = [f"s{i:03d}" for i in range(30)] + HOSTILE
# More students than two pages: most never submit.
STUDENTS = sorted(SUBMITTERS + [f"quiet{i:03d}" for i in range(2 * PAGE_SIZE + 20)])


@dataclass
class Row:
    id: int
    user: str
    assignment: str
    score: float | None
    manual_score: float | None
    late: bool
    deleted: bool


def seed(service: ServiceProcess) -> list[Row]:
    """Lecture `book` (roster: STUDENTS, a tutor, an instructor), its submissions, and `book2` whose tutor
    is nobody in `book`. A former student ("left") submitted but is no longer on the roster."""
    rng = random.Random(20)
    written: list[tuple[Submission, str]] = []
    with db.session_scope(db.make_session_factory(service.engine)) as session:
        book, book2 = Lecture(code="book", name="Book"), Lecture(code="book2", name="Other")
        session.add_all([book, book2])
        session.flush()
        assignments = {}
        for name, policy, penalty in ASSIGNMENTS:
            assignments[name] = Assignment(
                lecture_id=book.id, name=name, status="released", grading_policy=policy, late_penalty=penalty,
                settings={}, release_commit="b" * 40, max_score=10,
            )  # fmt: skip
            session.add(assignments[name])
            session.flush()  # ids in creation order
        users = {}
        for name in [*STUDENTS, "left", "book-tutor", "book-ins", "book2-tutor"]:
            users[name] = session.scalars(select(User).where(User.name == name)).one_or_none() or User(
                name=name, display_name=f"={name}" if name in HOSTILE else None
            )
            session.add(users[name])
        session.flush()
        for name in STUDENTS:
            session.add(Role(user_id=users[name].id, lecture_id=book.id, role="student"))
        session.add(Role(user_id=users["book-tutor"].id, lecture_id=book.id, role="tutor"))
        session.add(Role(user_id=users["book-ins"].id, lecture_id=book.id, role="instructor"))
        session.add(Role(user_id=users["book2-tutor"].id, lecture_id=book2.id, role="tutor"))
        start = utcnow() - timedelta(days=1)
        for i in range(240):  # interleaved across students and assignments, as they would arrive
            name = rng.choice([*SUBMITTERS, "left"])
            assignment = assignments[rng.choice(["first", "second"])]
            submission = Submission(
                assignment_id=assignment.id, user_id=users[name].id, commit_hash=f"{i:040x}",
                submitted_at=start + timedelta(minutes=i), late=rng.random() < 0.4, auto_status="graded",
                score=rng.choice([None, 0.0, 2.5, 5.0, 7.5, 10.0, 3.3]), max_score=10,
                manual_score=rng.choice([None, None, None, 4.0, 9.0]),
                deleted_at=utcnow() if rng.random() < 0.15 else None,
            )  # fmt: skip
            session.add(submission)
            written.append((submission, assignment.name))
        session.flush()
        return [
            Row(s.id, s.user.name, a, s.score, s.manual_score, s.late, s.deleted_at is not None)
            for s, a in written
        ]


@pytest.fixture(scope="module")
def book(service: ServiceProcess) -> tuple[dict[str, Client], list[Row]]:
    rows = seed(service)
    clients = {
        who: service.client(service.token(name))
        for who, name in (
            ("tutor", "book-tutor"),
            ("instructor", "book-ins"),
            ("student", "s001"),
            ("other_tutor", "book2-tutor"),
        )
    }
    clients["nobody"] = service.client(None)
    return clients, rows


def final(row: Row) -> float | None:
    penalty = {name: p for name, _, p in ASSIGNMENTS}[row.assignment]
    score = row.manual_score if row.manual_score is not None else row.score
    if score is None:
        return None
    return round(score * (1 - penalty), 6) if row.late else score


def expected(rows: list[Row], policy: str | None) -> dict[str, dict[str, float | None]]:
    """The rule written out: per roster student and assignment, the latest kept submission, or the best
    final score (the earliest of equals; no score counts as 0); None when there is none."""
    table: dict[str, dict[str, float | None]] = {}
    for user in STUDENTS:
        table[user] = {}
        for name, own_policy, _ in ASSIGNMENTS:
            mine = [r for r in rows if r.user == user and r.assignment == name and not r.deleted]
            if not mine:
                table[user][name] = None
            elif (policy or own_policy) == "latest":
                table[user][name] = final(max(mine, key=lambda r: r.id))
            else:
                table[user][name] = final(max(mine, key=lambda r: (final(r) or 0, -r.id)))
    return table


def cell(text: str) -> float | None:
    return float(text) if text != "" else None


def read_csv(client: Client, **params: str) -> list[dict[str, str]]:
    r = client.get(BOOK, params={"format": "csv", **params})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/csv")
    assert 'filename="book-scores.csv"' in r.headers["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(r.text, newline="")))


def unquote(name: str) -> str:
    return name[1:] if name.startswith("'") and name[1:].startswith(FORMULA_PREFIXES) else name


def test_one_row_per_roster_student_with_empty_cells_for_no_submission(book) -> None:
    clients, rows = book
    table = read_csv(clients["tutor"])
    assert list(table[0]) == ["user", "display_name", "first", "second", "untouched", "total"]
    # Every roster student once (pages neither skip nor repeat anyone); staff and "left" are not rows.
    # (The order is the database's collation of names, as in the per-assignment export.)
    users = [unquote(row["user"]) for row in table]
    assert sorted(users) == STUDENTS
    quiet = [row for row in table if row["user"].startswith("quiet")]
    assert len(quiet) == 2 * PAGE_SIZE + 20
    for row in quiet:
        assert (row["first"], row["second"], row["untouched"], float(row["total"])) == ("", "", "", 0.0)
    assert all(row["untouched"] == "" for row in table)
    submitted = {r.user for r in rows if not r.deleted}
    assert any(row["first"] != "" for row in table if unquote(row["user"]) in submitted)


@pytest.mark.parametrize("policy", [None, "latest", "best"])
def test_cells_and_totals_follow_the_policy(book, policy: str | None) -> None:
    clients, rows = book
    want = expected(rows, policy)
    params = {"policy": policy} if policy else {}
    body = clients["tutor"].get(BOOK, params=params).json()
    assert body["lecture"] == "book" and body["policy"] == policy
    assert [(a["name"], a["policy"]) for a in body["assignments"]] == [
        (name, policy or own) for name, own, _ in ASSIGNMENTS
    ]
    got = {item["user"]: item["scores"] for item in body["items"]}
    assert got == want
    for item in body["items"]:
        assert item["total"] == pytest.approx(sum(v for v in want[item["user"]].values() if v is not None))
    for row in read_csv(clients["tutor"], **params):
        user = unquote(row["user"])
        assert {name: cell(row[name]) for name, _, _ in ASSIGNMENTS} == want[user]
        assert float(row["total"]) == pytest.approx(sum(v for v in want[user].values() if v is not None))


def test_latest_and_best_differ_on_this_course(book) -> None:
    """The data is such that the policy matters (else the test above could not tell them apart)."""
    _, rows = book
    latest, best = expected(rows, "latest"), expected(rows, "best")
    assert sum(latest[u]["second"] != best[u]["second"] for u in STUDENTS) >= 3
    assert sum(latest[u]["first"] != best[u]["first"] for u in STUDENTS) >= 3


def test_every_cell_agrees_with_the_per_assignment_export(book) -> None:
    """Same choice, same late penalty, same rounding: for every student and assignment."""
    clients, _ = book
    table = read_csv(clients["tutor"])
    items = {item["user"]: item for item in clients["tutor"].get(BOOK).json()["items"]}
    late_seen = False
    for name, _, _ in ASSIGNMENTS:
        r = clients["tutor"].get(f"lectures/book/assignments/{name}/scores")
        assert r.status_code == 200, r.text
        export = {item["user"]: item for item in r.json()["items"]}
        late_seen |= any(item["late"] and item["final_score"] for item in export.values())
        for row in table:
            user = unquote(row["user"])
            want = export[user]["final_score"] if user in export else None
            assert cell(row[name]) == want, (user, name)
            assert items[user]["scores"][name] == want, (user, name)
    assert late_seen  # the penalty was exercised


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"policy": "newest"}, "'policy'"),
        ({"policy": "LATEST"}, "'policy'"),
        ({"policy": ""}, "'policy'"),
        ({"format": "xlsx"}, "'format'"),
        ({"format": "csv", "policy": "best,latest"}, "'policy'"),
    ],
)
def test_a_bad_policy_or_format_is_a_400_naming_it(book, params: dict[str, str], named: str) -> None:
    clients, _ = book
    r = clients["tutor"].get(BOOK, params=params)
    assert r.status_code == 400, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert named in r.json()["message"]


def test_only_staff_of_the_lecture_read_it(book) -> None:
    clients, _ = book
    assert clients["instructor"].get(BOOK).status_code == 200
    r = clients["student"].get(BOOK, params={"format": "csv"})
    assert r.status_code == 403 and "s001" not in r.text and r.json()["error"] == "Forbidden"
    # A tutor of another lecture, and an unknown lecture: not found, as everywhere.
    for client, path in ((clients["other_tutor"], BOOK), (clients["tutor"], "lectures/no-such/scores")):
        r = client.get(path, params={"format": "csv"})
        assert r.status_code == 404, r.text
        assert "s001" not in r.text
    assert clients["nobody"].get(BOOK).status_code == 401


def test_formula_injection_in_names_is_neutralised(book) -> None:
    clients, _ = book
    table = read_csv(clients["tutor"])
    for name in HOSTILE:
        [row] = [row for row in table if row["user"] == "'" + name]
        assert row["display_name"] == "'=" + name
    for row in table:
        for value in row.values():
            assert not value.startswith(FORMULA_PREFIXES), row
    # JSON is data for programs: names as they are.
    users = {item["user"] for item in clients["tutor"].get(BOOK).json()["items"]}
    assert set(HOSTILE) <= users


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_the_body_is_streamed_a_page_at_a_time(book, fmt: str) -> None:
    """More than two pages of students: the body comes as HTTP chunks, one per page (a table built in
    memory and finished at once would be one body with a Content-Length)."""
    clients, _ = book
    with clients["tutor"].get(BOOK, params={"format": fmt}, stream=True) as r:
        assert r.status_code == 200
        assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers
        chunks = [chunk for chunk in r.raw.read_chunked() if chunk]
    pages = -(-len(STUDENTS) // PAGE_SIZE)
    assert len(chunks) >= pages, [len(c) for c in chunks]
    body = b"".join(chunks).decode()
    if fmt == "csv":
        assert len(list(csv.reader(io.StringIO(body, newline="")))) == 1 + len(STUDENTS)
    else:
        assert len(json.loads(body)["items"]) == len(STUDENTS)
