"""Per-cell grades over real HTTP, on SQLite and PostgreSQL, with real grading: manual points and extra
credit change the final score exactly as the CSV export shows it; students read only their own, once
released, and write none; every change lands in the append-only history; concurrent tutors never lose
an update; a regrade keeps what people gave."""

from __future__ import annotations

import copy
import csv
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from grader_service import grades as grades_module
from grader_service.orm import Grade
from grader_service.scoring import final_score
from grader_service.states import GradeKind, ManualStatus

from .conftest import DATA, World, zip_dir
from .grading_utils import wait_graded
from .test_api import A

EXPLAIN = {
    "grade": True, "solution": True, "locked": False, "grade_id": "explain", "points": 3, "schema_version": 3,
}  # fmt: skip


def with_manual_cell(notebook: Path, answer: str) -> dict[str, Any]:
    """The notebook with a markdown answer cell graded by hand (3 points) appended."""
    nb = json.loads(notebook.read_text())
    nb["cells"].append(
        {"cell_type": "markdown", "metadata": {"nbgrader": copy.deepcopy(EXPLAIN)}, "source": answer}
    )
    return nb


def manual_assignment(world: World, tmp: Path, name: str, **fields: Any) -> None:
    source = tmp / name
    source.mkdir()
    (source / "tiny.ipynb").write_text(
        json.dumps(with_manual_cell(DATA / "tiny" / "tiny.ipynb", "YOUR ANSWER"))
    )
    (source / "data.csv").write_bytes((DATA / "tiny" / "data.csv").read_bytes())
    ins = world.client("instructor")
    assert ins.post(A, json={"name": name, **fields}).status_code == 201
    r = ins.put(f"{A}/{name}/files", data=zip_dir(source), headers={"Content-Type": "application/zip"})
    assert r.status_code == 200, r.text
    assert ins.patch(f"{A}/{name}", json={"status": "released"}).status_code == 200


def submit_graded(world: World, who: str, name: str, user: str | None = None) -> int:
    nb = with_manual_cell(DATA / "tiny_submission.ipynb", "Doubling adds x to itself.")
    params = {"filename": "tiny.ipynb", **({"user": user} if user else {})}
    r = world.client(who).post(
        f"{A}/{name}/submissions", params=params, data=json.dumps(nb).encode(),
        headers={"Content-Type": "application/x-ipynb+json"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    events = wait_graded(world.client("tutor"), sid)
    assert events[-1]["auto_status"] == "graded", events
    return sid


def grades_url(name: str, sid: int) -> str:
    return f"{A}/{name}/submissions/{sid}/grades"


def by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["grade_id"]: item for item in body["items"]}


def scores_row(world: World, name: str, user: str = "stu") -> tuple[dict[str, Any], dict[str, str]]:
    """The student's row of the scores export, as JSON and as CSV."""
    tutor = world.client("tutor")
    (as_json,) = [r for r in tutor.get(f"{A}/{name}/scores").json()["items"] if r["user"] == user]
    text_ = tutor.get(f"{A}/{name}/scores", params={"format": "csv"}).text
    (as_csv,) = [r for r in csv.DictReader(io.StringIO(text_, newline="")) if r["user"] == user]
    return as_json, as_csv


def history(world: World, name: str, sid: int) -> list[dict[str, Any]]:
    r = world.client("tutor").get(f"{A}/{name}/submissions/{sid}/history")
    assert r.status_code == 200, r.text
    return r.json()["items"]


@pytest.fixture(scope="module")
def graded(world: World, tmp_path_factory: pytest.TempPathFactory) -> int:
    """Assignment "gr" (results released by the instructor, 20% late penalty) and stu's graded submission."""
    manual_assignment(world, tmp_path_factory.mktemp("gr"), "gr", late_penalty=0.2, feedback_policy="manual")
    return submit_graded(world, "student", "gr")


# --- pure parts -----------------------------------------------------------------------------------


def grade(auto: float | None, manual: float | None = None, extra: float = 0.0, needs: bool = False) -> Grade:
    return Grade(auto_points=auto, manual_points=manual, extra_credit=extra, needs_manual=needs, max_points=3)


def test_cell_total_manual_wins_extra_adds_and_status_follows() -> None:
    cells = [grade(2.0), grade(1.0, manual=0.5), grade(None, needs=True, extra=1.0)]
    assert grades_module.cell_total(cells) == 2.0 + 0.5 + 0 + 1.0
    assert grades_module.manual_status_of(cells) == ManualStatus.NEEDED
    cells[2].manual_points = 2.0
    assert grades_module.manual_status_of(cells) == ManualStatus.DONE
    assert grades_module.manual_status_of(cells[:2]) == ManualStatus.NOT_NEEDED
    assert grades_module.cell_total([]) is None
    # The total override wins over the cells, the late penalty comes last.
    assert final_score(3.0, None, False, 0.5, cell_score=5.5) == 5.5
    assert final_score(3.0, 4.0, True, 0.5, cell_score=5.5) == 2.0
    assert final_score(3.0, None, True, 0.5, cell_score=None) == 1.5


def test_cells_of_reads_every_graded_cell_and_keys_repeated_ids_by_notebook() -> None:
    cell = {"kind": "test", "max_points": 2, "points": 1.5, "status": "passed"}
    manual = {"kind": "manual", "max_points": 3, "points": None, "status": "needs-manual"}
    book = {"notebooks": {"a": {"cells": {"q": cell, "m": manual}}, "b": {"cells": {"q": cell}}}}
    cells = grades_module.cells_of(book)
    assert [(c.grade_id, c.notebook, c.kind, c.auto_points, c.needs_manual) for c in cells] == [
        ("q", "a", GradeKind.TEST, 1.5, False),
        ("m", "a", GradeKind.MANUAL, None, True),
        ("b/q", "b", GradeKind.TEST, 1.5, False),
    ]
    assert grades_module.cells_of(None) == []


# --- over HTTP ------------------------------------------------------------------------------------


def test_every_graded_cell_has_a_row_and_a_manual_cell_waits_for_a_person(world: World, graded: int) -> None:
    r = world.client("tutor").get(grades_url("gr", graded))
    assert r.status_code == 200, r.text
    body = r.json()
    cells = by_id(body)
    assert set(cells) == {"test_double", "test_double_hidden", "explain"}
    assert (cells["test_double"]["auto"], cells["test_double"]["max"], cells["test_double"]["kind"]) == (
        2,
        2,
        "test",
    )
    assert cells["explain"] == {
        "grade_id": "explain", "notebook": "tiny", "kind": "manual", "auto": None, "manual": None,
        "extra_credit": 0, "max": 3, "comment": None, "needs_manual": True,
    }  # fmt: skip
    assert body["manual_status"] == "needed" and body["cell_score"] == 3
    assert r.headers["ETag"] == f'"{body["version"]}"'
    sub = world.client("tutor").get(f"{A}/gr/submissions/{graded}").json()
    assert sub["manual_status"] == "needed" and sub["final_score"] == 3


def test_manual_points_and_extra_credit_change_the_final_score_and_the_export_alike(
    world: World, graded: int
) -> None:
    tutor = world.client("tutor")
    r = tutor.put(
        grades_url("gr", graded),
        json={
            "grades": {
                "test_double": {"points": 0.5, "comment": "half"},
                "explain": {"points": 2, "extra_credit": 1},
            }
        },
    )
    assert r.status_code == 200, r.text
    cells = by_id(r.json())
    assert cells["test_double"]["manual"] == 0.5 and cells["test_double"]["comment"] == "half"
    assert cells["explain"]["manual"] == 2 and cells["explain"]["extra_credit"] == 1
    assert r.json()["manual_status"] == "done"
    expected = 0.5 + 1 + 2 + 1  # manual, auto, manual + extra credit
    sub = tutor.get(f"{A}/gr/submissions/{graded}").json()
    assert (sub["score"], sub["final_score"], sub["manual_status"]) == (expected, expected, "done")
    as_json, as_csv = scores_row(world, "gr")
    assert as_json["final_score"] == expected and float(as_csv["final_score"]) == expected
    # A total override wins over the cells; removing it gives the cells back.
    assert tutor.patch(f"{A}/gr/submissions/{graded}", json={"manual_score": 5}).status_code == 200
    as_json, as_csv = scores_row(world, "gr")
    assert as_json["final_score"] == 5 and float(as_csv["final_score"]) == 5
    assert tutor.patch(f"{A}/gr/submissions/{graded}", json={"manual_score": None}).status_code == 200
    assert tutor.get(f"{A}/gr/submissions/{graded}").json()["final_score"] == expected
    # points null: grading's points count again.
    r = tutor.put(grades_url("gr", graded), json={"grades": {"test_double": {"points": None}}})
    assert r.status_code == 200 and r.json()["cell_score"] == 2 + 1 + 2 + 1
    as_json, as_csv = scores_row(world, "gr")
    assert as_json["final_score"] == 6 and float(as_csv["final_score"]) == 6


def test_the_lecture_gradebook_counts_the_cells_too(world: World, graded: int) -> None:
    sub = world.client("tutor").get(f"{A}/gr/submissions/{graded}").json()
    r = world.client("tutor").get("lectures/ml/scores", params={"format": "json"})
    assert r.status_code == 200, r.text
    (row,) = [row for row in r.json()["items"] if row["user"] == "stu"]
    assert row["scores"]["gr"] == sub["final_score"] and sub["final_score"] is not None


@pytest.mark.parametrize(
    ("cells", "named"),
    [
        ({"nope": {"points": 1}}, "nope"),
        ({"test_double": {"points": 2.5}}, "test_double"),
        ({"explain": {"points": -1}}, "explain"),
        ({"explain": {"extra_credit": -1}}, "explain"),
        ({"explain": {"points": 1}, "test_double_hidden": {"points": 9}}, "test_double_hidden"),
    ],
)
def test_unknown_cells_and_points_out_of_range_are_422_naming_the_cell_and_change_nothing(
    world: World, graded: int, cells: dict[str, Any], named: str
) -> None:
    tutor = world.client("tutor")
    before = tutor.get(grades_url("gr", graded)).json()
    r = tutor.put(grades_url("gr", graded), json={"grades": cells})
    assert r.status_code == 422 and named in r.json()["message"], r.text
    assert tutor.get(grades_url("gr", graded)).json() == before


@pytest.mark.parametrize(
    "body",
    [{}, {"grades": {}}, {"grades": []}, {"grades": {"explain": {}}}, {"grades": {"explain": {"bonus": 1}}},
     {"grades": {"explain": {"points": "1"}}}, {"grades": {"explain": {"points": True}}},
     {"grades": {"explain": {"comment": 3}}}, {"grades": {"explain": {"points": 1}}, "version": "x"},
     {"grades": {"explain": {"points": 1}}, "version": -1}, {"grades": {"explain": {"points": 1}}, "version": 2**40}],
)  # fmt: skip
def test_malformed_bodies_are_400(world: World, graded: int, body: dict[str, Any]) -> None:
    assert world.client("tutor").put(grades_url("gr", graded), json=body).status_code == 400


def test_students_read_only_their_own_once_released_and_write_none(world: World, graded: int) -> None:
    student, other = world.client("student"), world.client("other_student")
    r = student.get(grades_url("gr", graded))
    assert r.status_code == 403 and "not been released" in r.json()["message"]
    assert other.get(grades_url("gr", graded)).status_code == 404  # not even its existence
    assert world.client("outsider").get(grades_url("gr", graded)).status_code == 404
    for client in (student, other):
        r = client.put(grades_url("gr", graded), json={"grades": {"explain": {"points": 3}}})
        assert r.status_code == 403, r.text
        assert client.get(f"{A}/gr/submissions/{graded}/history").status_code == 403
        assert client.get(f"{A}/gr/grading-queue").status_code == 403
    assert world.client("instructor").post(f"{A}/gr/feedback-release").status_code == 200
    r = student.get(grades_url("gr", graded))
    assert r.status_code == 200 and set(by_id(r.json())) == {"test_double", "test_double_hidden", "explain"}
    assert other.get(grades_url("gr", graded)).status_code == 404
    assert (
        student.put(grades_url("gr", graded), json={"grades": {"explain": {"points": 3}}}).status_code == 403
    )
    assert world.client("tutor").get(grades_url("gr", graded)).json()["items"] == r.json()["items"]


def test_every_change_is_in_the_history(world: World, graded: int) -> None:
    tutor, ins = world.client("tutor"), world.client("instructor")
    start = len(history(world, "gr", graded))
    r = tutor.put(
        grades_url("gr", graded), json={"grades": {"test_double_hidden": {"points": 0, "comment": "no"}}}
    )
    assert r.status_code == 200
    assert tutor.patch(f"{A}/gr/submissions/{graded}", json={"manual_score": 4}).status_code == 200
    assert tutor.patch(f"{A}/gr/submissions/{graded}", json={"manual_score": None}).status_code == 200
    assert ins.put(f"{A}/gr/extensions/stu", json={"due_date": "2099-01-01T00:00:00Z"}).status_code == 201
    assert ins.delete(f"{A}/gr/extensions/stu").status_code == 204
    rows = history(world, "gr", graded)[start:]
    assert [(row["what"], row["user"]) for row in rows] == [
        ("test_double_hidden", "tut"), ("manual_score", "tut"), ("manual_score", "tut"),
        ("extension", "ins"), ("extension", "ins"),
    ]  # fmt: skip
    assert rows[0]["old"] == {"points": None, "comment": None} and rows[0]["new"] == {
        "points": 0,
        "comment": "no",
    }
    assert (rows[1]["old"], rows[1]["new"], rows[2]["old"], rows[2]["new"]) == (None, 4, 4, None)
    assert rows[3]["old"] is None and rows[3]["new"]["due_date"] == "2099-01-01T00:00:00Z"
    assert rows[4]["new"] is None
    # A PUT that changes nothing records nothing.
    assert (
        tutor.put(
            grades_url("gr", graded), json={"grades": {"test_double_hidden": {"points": 0}}}
        ).status_code
        == 200
    )
    assert len(history(world, "gr", graded)) == start + 5


def test_an_on_behalf_submission_is_in_its_history(world: World, graded: int) -> None:
    sid = submit_graded(world, "instructor", "gr", user="stu2")
    rows = history(world, "gr", sid)
    assert rows[0]["what"] == "submitted_on_behalf" and rows[0]["user"] == "ins"
    assert rows[0]["new"]["user"] == "stu2"


def test_history_cannot_be_changed_in_the_database(world: World, graded: int) -> None:
    engine = world.service.engine
    assert history(world, "gr", graded)
    statements = ["UPDATE grade_changes SET what = 'x'", "DELETE FROM grade_changes"]
    if engine.dialect.name == "postgresql":  # SQLite has no TRUNCATE
        statements.append("TRUNCATE grade_changes")
    for statement in statements:
        with engine.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM grade_changes WHERE what = 'x'")).scalar_one() == 0


def test_no_code_updates_or_deletes_history_rows() -> None:
    source = "\n".join(p.read_text() for p in Path(grades_module.__file__).parent.rglob("*.py"))
    for forbidden in ("update(GradeChange", "delete(GradeChange", "GradeChange).delete", "grade_changes SET"):
        assert forbidden not in source


def concurrently(requests_: list[Any]) -> list[Any]:
    """Run the callables at once (a barrier releases them together); their results in order."""
    barrier = threading.Barrier(len(requests_))
    results: list[Any] = [None] * len(requests_)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = requests_[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests_))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_puts_never_lose_an_update(world: World, graded: int) -> None:
    url = grades_url("gr", graded)
    tutors = [world.service.client(world.tokens["tutor"]), world.service.client(world.tokens["instructor"])]
    for round_ in range(6):
        version = tutors[0].get(url).json()["version"]
        points = [round_ % 2, 1 + round_ % 2]
        # Based on the same version: exactly one wins, the other is told.
        results = concurrently(
            [lambda c=c, p=p, v=version: c.put(url, json={"grades": {"explain": {"points": p}}, "version": v})
             for c, p in zip(tutors, points, strict=True)]
        )  # fmt: skip
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 409], [r.text for r in results]
        (winner,) = [p for r, p in zip(results, points, strict=True) if r.status_code == 200]
        assert by_id(tutors[0].get(url).json())["explain"]["manual"] == winner
        # Without a version, on different cells: each applied, or refused; none applied and then lost.
        cells = ["test_double", "test_double_hidden"]
        results = concurrently(
            [lambda c=c, g=g, t=f"r{round_}": c.put(url, json={"grades": {g: {"comment": t}}})
             for c, g in zip(tutors, cells, strict=True)]
        )  # fmt: skip
        assert {r.status_code for r in results} <= {200, 409}
        now = by_id(tutors[0].get(url).json())
        for r, g in zip(results, cells, strict=True):
            if r.status_code == 200:
                assert now[g]["comment"] == f"r{round_}"


def test_a_regrade_replaces_auto_points_and_keeps_what_people_gave(world: World, graded: int) -> None:
    tutor = world.client("tutor")
    r = tutor.put(
        grades_url("gr", graded),
        json={"grades": {"explain": {"points": 1.5, "comment": "ok", "extra_credit": 0.5}}},
    )
    assert r.status_code == 200
    before = by_id(r.json())
    regrades = len([row for row in history(world, "gr", graded) if row["what"] == "regrade"])
    assert tutor.post(f"{A}/gr/submissions/{graded}/autograde").status_code == 202
    deadline = time.time() + 180
    while len([row for row in history(world, "gr", graded) if row["what"] == "regrade"]) == regrades:
        assert time.time() < deadline, "the regrade was not recorded"
        time.sleep(0.5)
    after = by_id(tutor.get(grades_url("gr", graded)).json())
    assert after == before
    assert after["explain"]["manual"] == 1.5 and after["explain"]["comment"] == "ok"


def test_the_grading_queue_lists_what_needs_a_person_oldest_first(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> None:
    manual_assignment(world, tmp_path_factory.mktemp("gq"), "gq")
    first = submit_graded(world, "student", "gq")
    second = submit_graded(world, "other_student", "gq")
    tutor = world.client("tutor")
    page = tutor.get(f"{A}/gq/grading-queue").json()
    assert page["total"] == 2
    assert [(i["id"], i["previous"], i["next"]) for i in page["items"]] == [
        (first, None, second),
        (second, first, None),
    ]
    second_page = tutor.get(f"{A}/gq/grading-queue", params={"offset": 1, "limit": 1}).json()
    assert [(i["id"], i["previous"], i["next"]) for i in second_page["items"]] == [(second, first, None)]
    assert tutor.put(grades_url("gq", first), json={"grades": {"explain": {"points": 3}}}).status_code == 200
    page = tutor.get(f"{A}/gq/grading-queue").json()
    assert [(i["id"], i["previous"], i["next"]) for i in page["items"]] == [(second, None, None)]
    # A tutor may mark one done without grading every cell.
    assert tutor.patch(f"{A}/gq/submissions/{second}", json={"manual_status": "done"}).status_code == 200
    assert tutor.get(f"{A}/gq/grading-queue").json()["total"] == 0


def test_feedback_shows_manual_points_and_comments_and_follows_changes(world: World, graded: int) -> None:
    tutor = world.client("tutor")
    url = f"{A}/gr/submissions/{graded}/feedback"
    r = tutor.put(
        grades_url("gr", graded),
        json={"grades": {"explain": {"points": 2.5, "comment": "clear <b>enough</b>"}}},
    )
    assert r.status_code == 200, r.text
    page = tutor.get(url)
    assert page.status_code == 200, page.text
    assert "Graded by hand: 2.5 / 3 points" in page.text
    assert "clear &lt;b&gt;enough&lt;/b&gt;" in page.text and "<b>enough</b>" not in page.text
    r = tutor.put(
        grades_url("gr", graded), json={"grades": {"explain": {"points": 1, "comment": "rethought"}}}
    )
    assert r.status_code == 200
    page = tutor.get(url).text
    assert "Graded by hand: 1 / 3 points" in page and "rethought" in page and "clear &lt;b&gt;" not in page


def test_without_autograding_every_cell_waits_for_a_person(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> None:
    manual_assignment(world, tmp_path_factory.mktemp("na"), "no-auto")
    r = world.client("instructor").patch(f"{A}/no-auto", json={"settings": {"autograde": False}})
    assert r.status_code == 200, r.text
    assert world.client("instructor").get(f"{A}/no-auto").json()["settings"] == {"autograde": False}
    nb = with_manual_cell(DATA / "tiny_submission.ipynb", "An answer.")
    r = world.client("student").post(
        f"{A}/no-auto/submissions", params={"filename": "tiny.ipynb"}, data=json.dumps(nb).encode(),
        headers={"Content-Type": "application/x-ipynb+json"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert (r.json()["auto_status"], r.json()["manual_status"]) == ("not_queued", "needed")
    tutor = world.client("tutor")
    cells = by_id(tutor.get(grades_url("no-auto", sid)).json())
    assert set(cells) == {"test_double", "test_double_hidden", "explain"}
    assert all(c["needs_manual"] and c["auto"] is None for c in cells.values())
    assert [i["id"] for i in tutor.get(f"{A}/no-auto/grading-queue").json()["items"]] == [sid]
    body = {
        "grades": {
            "test_double": {"points": 2},
            "test_double_hidden": {"points": 1},
            "explain": {"points": 1},
        }
    }
    r = tutor.put(grades_url("no-auto", sid), json=body)
    assert r.status_code == 200 and r.json()["manual_status"] == "done"
    sub = tutor.get(f"{A}/no-auto/submissions/{sid}").json()
    assert (sub["auto_status"], sub["final_score"]) == ("not_queued", 4)
    assert tutor.get(f"{A}/no-auto/grading-queue").json()["total"] == 0
    for bad in ("yes", 1, 0):
        r = world.client("instructor").patch(f"{A}/no-auto", json={"settings": {"autograde": bad}})
        assert r.status_code == 400 and "autograde" in r.json()["message"]


def test_if_match_guards_a_change_like_version(world: World, graded: int) -> None:
    tutor = world.client("tutor")
    etag = tutor.get(grades_url("gr", graded)).headers["ETag"]
    body = {"grades": {"test_double": {"comment": "etag"}}}
    r = tutor.put(grades_url("gr", graded), json=body, headers={"If-Match": etag})
    assert r.status_code == 200 and r.headers["ETag"] != etag
    r = tutor.put(grades_url("gr", graded), json=body, headers={"If-Match": etag})
    assert r.status_code == 409 and "changed meanwhile" in r.json()["message"]
    assert tutor.put(grades_url("gr", graded), json=body, headers={"If-Match": "soon"}).status_code == 400
