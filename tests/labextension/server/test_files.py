"""Files in the user's Lab root: fetch without losing work, and no path leading out of the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import EXAMPLES

FETCH = "lectures/intro/assignments/basics/fetch"


async def test_fetch_never_silently_overwrites_changed_work(api, login, jp_root_dir: Path) -> None:
    login("bob")
    status, first = await api("POST", FETCH, {})
    assert status == 200 and first["backup"] is None
    notebook = jp_root_dir / "intro" / "basics" / "basics.ipynb"
    released = notebook.read_bytes()
    extra = jp_root_dir / "intro" / "basics" / "notes.txt"
    extra.write_text("mine")  # not part of the release: never touched

    # Unchanged files: fetching again is harmless.
    status, again = await api("POST", FETCH, {})
    assert status == 200 and again["backup"] is None and notebook.read_bytes() == released

    notebook.write_text('{"my": "work"}')
    status, refused = await api("POST", FETCH, {})
    assert status == 409
    assert refused["changed"] == ["intro/basics/basics.ipynb"] and refused["status"] == 409
    assert "intro/basics/basics.ipynb" in refused["message"]
    assert notebook.read_text() == '{"my": "work"}'  # nothing written

    status, replaced = await api("POST", FETCH, {"overwrite": True})
    assert status == 200, replaced
    assert notebook.read_bytes() == released and extra.read_text() == "mine"
    backup = jp_root_dir / replaced["backup"]
    assert replaced["backup"].startswith("intro/basics.backup-")
    assert (backup / "basics.ipynb").read_text() == '{"my": "work"}'

    # A second overwrite keeps the first backup (a new folder each time).
    notebook.write_text('{"my": "second try"}')
    status, second = await api("POST", FETCH, {"overwrite": True})
    assert status == 200 and second["backup"] != replaced["backup"]
    assert (backup / "basics.ipynb").read_text() == '{"my": "work"}'
    assert (jp_root_dir / second["backup"] / "basics.ipynb").read_text() == '{"my": "second try"}'


async def test_fetch_refuses_bad_bodies(api, login) -> None:
    login("bob")
    for body, words in (
        ({"overwrite": "yes"}, "'overwrite' must be true or false"),
        ({"force": 1}, "Unknown field"),
    ):
        status, error = await api("POST", FETCH, body)
        assert status == 400 and words in error["message"], error


def outside_paths(root: Path, outside: Path) -> list[str]:
    """Relative-looking paths that lead out of `root`, each a different trick."""
    outside.mkdir(exist_ok=True)
    (outside / "basics.ipynb").write_text((EXAMPLES / "submission" / "basics.ipynb").read_text())
    (outside / "grades.csv").write_text("theirs")
    (root / "link-out").symlink_to(outside, target_is_directory=True)
    (root / "nested").mkdir(exist_ok=True)
    (root / "nested" / "up").symlink_to("../../" + outside.name)
    return [
        "../" + outside.name,
        "nested/../../" + outside.name,
        str(outside),  # absolute
        "/etc",
        "~/x",
        "link-out",  # a symlink in the root pointing out of it
        "nested/up",  # a relative symlink pointing out
        "link-out/basics.ipynb",
        "..\\" + outside.name,
    ]


@pytest.fixture
def outside(jp_root_dir: Path) -> Path:
    return jp_root_dir.parent / "outside-the-root"


async def test_student_paths_outside_the_root_are_refused(
    api, login, jp_root_dir: Path, outside: Path
) -> None:
    login("bob")
    for path in outside_paths(jp_root_dir, outside):
        status, error = await api("POST", "lectures/intro/assignments/basics/submissions", {"path": path})
        assert status == 400, (path, error)
        assert repr(path) in error["message"] and error["status"] == 400, (path, error)
    for bad in ("", None, 7, "a\0b"):
        status, error = await api("POST", "lectures/intro/assignments/basics/submissions", {"path": bad})
        assert status == 400, (bad, error)
    status, history = await api("GET", "lectures/intro/assignments/basics/submissions", all="1")
    assert status == 200 and history["items"] == []  # nothing was submitted


async def test_fetch_into_a_symlink_out_of_the_root_is_refused(
    api, login, jp_root_dir: Path, outside: Path
) -> None:
    login("bob")
    outside.mkdir()
    (jp_root_dir / "intro").symlink_to(outside, target_is_directory=True)
    status, error = await api("POST", FETCH, {})
    assert status == 400 and "'intro/basics'" in error["message"], error
    assert list(outside.iterdir()) == []
    os.unlink(jp_root_dir / "intro")
    (jp_root_dir / "intro" / "basics").mkdir(parents=True)
    (jp_root_dir / "intro" / "basics" / "basics.ipynb").symlink_to(outside / "planted.ipynb")
    status, error = await api("POST", FETCH, {"overwrite": True})
    assert status == 400 and "intro/basics/basics.ipynb" in error["message"], error
    assert not (outside / "planted.ipynb").exists()


async def test_instructor_paths_outside_the_root_are_refused(
    api, login, jp_root_dir: Path, outside: Path
) -> None:
    login("ins")
    for path in outside_paths(jp_root_dir, outside):
        status, error = await api("POST", "lectures/intro/assignments/basics/source", {"path": path})
        assert status == 400 and repr(path) in error["message"], (path, error)
        csv = path if path.endswith(".csv") else path.rstrip("/") + "/grades.csv"
        status, error = await api("POST", "lectures/intro/assignments/basics/export", {"path": csv})
        assert status == 400 and repr(csv) in error["message"], (csv, error)
    assert (outside / "grades.csv").read_text() == "theirs"
