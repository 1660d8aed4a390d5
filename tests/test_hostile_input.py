"""Hostile and malformed input: a clear 4xx JSON error, and nothing half-written."""

from __future__ import annotations

import io
import json
import socket
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from grader_service.orm import Submission

from .conftest import DATA, World

SUBMIT = "lectures/ml/assignments/tiny/submissions"


def make_zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def notebook_bytes() -> bytes:
    return (DATA / "tiny_submission.ipynb").read_bytes()


def state(world: World) -> tuple[int, list[str]]:
    """Submission rows and the files under the repositories: must not change on a refused upload."""
    with world.service.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(Submission)).scalar()
    repos = world.service.data_dir / "repos"
    refs = sorted(str(p.relative_to(repos)) for p in repos.rglob("refs/heads/*")) if repos.exists() else []
    heads = [(repos / r).read_text() for r in refs]
    tmp = world.service.data_dir / "tmp"
    leftovers = list(tmp.iterdir()) if tmp.exists() else []
    return count, refs + heads + [str(p) for p in leftovers]


def assert_refused(world: World, response, status: int, fragment: str, before) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}
    assert fragment.lower() in body["message"].lower(), body
    assert state(world) == before


@pytest.mark.parametrize(
    ("name", "body", "status", "fragment"),
    [
        ("path traversal", make_zip({"../escape.ipynb": notebook_bytes()}), 422, "outside the upload root"),
        ("absolute path", make_zip({"/etc/cron.d/x": b"x"}), 422, "outside the upload root"),
        ("nested traversal", make_zip({"a/../../b.txt": b"x"}), 422, "outside the upload root"),
        ("symlink", make_zip({"tiny.ipynb": notebook_bytes()}, symlink="link"), 422, "symbolic link"),
        ("git dir", make_zip({".git/config": b"[core]"}), 422, "not allowed"),
        ("not a zip", b"PK\x03\x04 this is not a zip", 422, "not a valid zip"),
        ("empty zip", make_zip({}), 422, "no files"),
        ("invalid notebook json", make_zip({"tiny.ipynb": b'{"cells": ['}), 422, "tiny.ipynb is not valid"),
        ("not a notebook", make_zip({"tiny.ipynb": b'{"hello": 1}'}), 422, "tiny.ipynb is not an nbformat 4"),
        (
            "schema invalid",
            make_zip(
                {
                    "x.ipynb": json.dumps(
                        {
                            "nbformat": 4,
                            "nbformat_minor": 5,
                            "metadata": {},
                            "cells": [{"cell_type": "bogus"}],
                        }
                    ).encode()
                }
            ),
            422,
            "x.ipynb is not a valid notebook",
        ),
        ("duplicate entries", None, 422, "duplicate"),
    ],
)
def test_bad_zip_submissions(world: World, name: str, body: bytes | None, status: int, fragment: str) -> None:
    if body is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("a.txt", b"1")
            zf.writestr("a.txt", b"2")
        body = buf.getvalue()
    before = state(world)
    r = world.client("student").post(SUBMIT, data=body, headers={"Content-Type": "application/zip"})
    assert_refused(world, r, status, fragment, before)


def test_zip_bomb_is_stopped(world: World) -> None:
    """A small archive that claims or really expands past the limit is refused without filling the disk."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.txt", b"\0" * (210 * 1024 * 1024))
    assert len(buf.getvalue()) < 1024 * 1024
    before = state(world)
    r = world.client("student").post(SUBMIT, data=buf.getvalue(), headers={"Content-Type": "application/zip"})
    assert_refused(world, r, 413, "expands to", before)


def test_zip_bomb_with_lying_headers_is_stopped(world: World, tmp_path: Path) -> None:
    """Headers claiming a tiny size do not fool the extractor: bytes are counted as written."""
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.txt", b"\0" * (210 * 1024 * 1024))
    data = bytearray(big.read_bytes())
    # Patch the uncompressed size in the local header (offset 22) and the central directory to 10 bytes.
    data[22:26] = (10).to_bytes(4, "little")
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    before = state(world)
    r = world.client("student").post(SUBMIT, data=bytes(data), headers={"Content-Type": "application/zip"})
    assert r.status_code in (413, 422), r.text
    assert state(world) == before


def test_oversized_body_is_refused_from_its_headers(world: World) -> None:
    """A body over max_request_size gets 413 JSON before the service reads it."""
    port = world.service.port
    token = world.tokens["student"]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            (
                f"POST /api/v1/{SUBMIT} HTTP/1.1\r\nHost: x\r\nAuthorization: token {token}\r\n"
                f"Content-Type: application/zip\r\nContent-Length: {60 * 1024 * 1024}\r\n\r\n"
            ).encode()
        )
        response = sock.recv(65536).decode()
    assert response.startswith("HTTP/1.1 413"), response[:200]
    body = json.loads(response.split("\r\n\r\n", 1)[1])
    assert set(body) == {"error", "message"} and "exceeds the limit" in body["message"]


def test_oversized_json_body(world: World) -> None:
    r = world.client("instructor").patch("lectures/ml", data=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert r.status_code == 413 and "exceeds the limit" in r.json()["message"]


def test_unauthenticated_upload_refused_before_body(world: World) -> None:
    with socket.create_connection(("127.0.0.1", world.service.port)) as sock:
        sock.sendall(
            (
                f"POST /api/v1/{SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/zip\r\n"
                f"Content-Length: {10 * 1024 * 1024}\r\n\r\n"
            ).encode()
        )
        response = sock.recv(65536).decode()
    assert response.startswith("HTTP/1.1 401")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "empty"),
        (b'{"name": "x", "bogus": 1}', "Unknown field"),
        (b'{"name": "Bad Name!"}', "must be a slug"),
        (b'{"name": "ok-name", "due_date": "tomorrow"}', "not an ISO 8601"),
        (b'{"name": "ok-name", "due_date": "2030-01-01T00:00:00"}', "needs a time zone"),
        (b'{"name": "ok-name", "max_submissions": 0}', "integer from 1"),
        (b'{"name": "ok-name", "late_penalty": 2}', "between 0 and 1"),
        (b'{"name": "ok-name", "settings": {"cell_timeout": -1}}', "cell_timeout"),
        (b'{"name": "ok-name", "settings": {"evil": 1}}', "Unknown setting"),
        (b'{"name": "ok-name", "grading_policy": "random"}', "grading_policy"),
    ],
)
def test_malformed_json_requests(world: World, body: bytes, fragment: str) -> None:
    r = world.client("instructor").post(
        "lectures/ml/assignments", data=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert fragment.lower() in r.json()["message"].lower()
    names = {a["name"] for a in world.client("instructor").get("lectures/ml/assignments").json()["items"]}
    assert "ok-name" not in names


def test_duplicate_names_conflict(world: World) -> None:
    admin = world.client("admin")
    r = admin.post("lectures", json={"code": "ml", "name": "again"})
    assert r.status_code == 409 and "already exists" in r.json()["message"]
    r = world.client("instructor").post("lectures/ml/assignments", json={"name": "tiny"})
    assert r.status_code == 409 and "already exists" in r.json()["message"]


@pytest.mark.parametrize(
    "path",
    [
        "lectures/BAD%20CODE",
        "lectures/..%2f..%2fetc",
        "lectures/ml/assignments/%00",
        "lectures/ml/assignments/tiny/submissions/abc",
        "lectures/ml/assignments/tiny/submissions/999999",
        "no/such/endpoint",
    ],
)
def test_bad_slugs_and_ids_are_json_404(world: World, path: str) -> None:
    r = world.client("admin").get(path)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"] == "Not Found"


def test_single_notebook_upload_needs_valid_json_and_name(world: World) -> None:
    before = state(world)
    client = world.client("student")
    r = client.post(
        SUBMIT,
        data=b'{"cells": [',
        params={"filename": "tiny.ipynb"},
        headers={"Content-Type": "application/x-ipynb+json"},
    )
    assert_refused(world, r, 422, "tiny.ipynb is not valid notebook JSON", before)
    r = client.post(SUBMIT, data=notebook_bytes(), headers={"Content-Type": "application/x-ipynb+json"})
    assert_refused(world, r, 400, "filename", before)
    r = client.post(
        SUBMIT,
        data=notebook_bytes(),
        params={"filename": "../x.ipynb"},
        headers={"Content-Type": "application/x-ipynb+json"},
    )
    assert_refused(world, r, 422, "outside", before)
    r = client.post(SUBMIT, data=b"hello", headers={"Content-Type": "text/plain"})
    assert_refused(world, r, 415, "Unsupported Content-Type", before)


def test_multipart_submission_and_its_commit(world: World, tmp_path: Path) -> None:
    files = {
        "file": ("tiny.ipynb", notebook_bytes(), "application/x-ipynb+json"),
        "data": ("data/values.csv", b"1,2,3\n", "text/csv"),
    }
    r = world.client("student").post(SUBMIT, files=files)
    assert r.status_code == 201, r.text
    sub = r.json()
    zipped = world.client("student").get(f"{SUBMIT}/{sub['id']}/files")
    names = set(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist())
    assert {"tiny.ipynb", "data/values.csv"} <= names
    repos = (world.service.data_dir / "repos" / "submissions").glob("*/*.git")
    kinds = {
        subprocess.run(
            ["git", "--git-dir", str(repo), "cat-file", "-t", sub["commit_hash"]],
            capture_output=True,
            text=True,
        ).stdout.strip()
        for repo in repos
    }
    assert "commit" in kinds
