"""The sample corpus graded through the service over HTTP, scores checked against expected.json.

Grading does not depend on the database, so this module runs on SQLite only; test_grading.py
covers both databases (including PostgreSQL's SKIP LOCKED claim).
"""

from __future__ import annotations

import json

import pytest

from .conftest import DATA, World, zip_dir
from .grading_utils import submit_files, wait_graded

A = "lectures/ml/assignments"
CORPUS = DATA / "corpus"


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'grader.sqlite'}"


@pytest.fixture(scope="module")
def corpus_world(world: World) -> dict:
    """The corpus assignments released in the lecture (once per module)."""
    expected = json.loads((CORPUS / "expected.json").read_text())
    ins = world.client("instructor")
    for name in expected["assignments"]:
        source = CORPUS / "source" / name
        if not source.exists():
            continue
        if ins.get(f"{A}/c-{name}").status_code == 404:
            assert (
                ins.post(A, json={"name": f"c-{name}", "settings": {"cell_timeout": 10}}).status_code == 201
            )
            assert (
                ins.put(
                    f"{A}/c-{name}/files", data=zip_dir(source), headers={"Content-Type": "application/zip"}
                ).status_code
                == 200
            )
            assert ins.patch(f"{A}/c-{name}", json={"status": "released"}).status_code == 200
    return expected


def corpus_submissions() -> list[tuple[str, str]]:
    if not (CORPUS / "expected.json").exists():
        return []
    expected = json.loads((CORPUS / "expected.json").read_text())
    return [
        (a, s)
        for a, subs in expected["submissions"].items()
        for s in subs
        if (CORPUS / "submitted" / s / a).exists()
    ]


@pytest.mark.parametrize(("assignment", "student"), corpus_submissions())
def test_corpus_scores_through_the_service(
    world: World, corpus_world: dict, assignment: str, student: str
) -> None:
    case = corpus_world["submissions"][assignment][student]
    folder = CORPUS / "submitted" / student / assignment
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".ipynb"}
    r = submit_files(world.client("tutor"), "ml", f"c-{assignment}", files)
    if not case["readable"]:
        # The API refuses invalid notebooks up front (422 naming the file): nothing to grade.
        assert (
            r.status_code == 422
            and corpus_world["assignments"][assignment]["notebook"] in r.json()["message"]
        )
        return
    assert r.status_code == 201, r.text
    events = wait_graded(world.client("tutor"), r.json()["id"], timeout=300)
    assert events[-1]["auto_status"] == "graded", events
    assert events[-1]["score"] == pytest.approx(case["total"]), case["case"]
