"""Crafted input found by fuzzing and review: each is a 4xx naming the problem, and nothing changes.

The classes: upload trees that contradict themselves, names some file system reads as git's own,
JSON nested past any sane depth, integers spelled with digits the spec does not allow or past the
64-bit range, malformed multipart bodies.
"""

from __future__ import annotations

import io
import zipfile

import pytest

from .conftest import World
from .test_hostile_input import SUBMIT, assert_refused, notebook_bytes, state

SOURCE = "lectures/ml/assignments/tiny/files"
A_LIST = "lectures/ml/assignments"
ZIP = {"Content-Type": "application/zip"}


def zip_of(*entries: str) -> bytes:
    """A zip with the entries in this order; names ending in '/' are directory entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in entries:
            zf.writestr(
                name, b"" if name.endswith("/") else (notebook_bytes() if name.endswith(".ipynb") else b"x")
            )
    return buf.getvalue()


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        (("a", "a/b"), "needs 'a' to be a directory, but the upload has a file 'a'"),
        (("a/b", "a"), "'a' is both a file and a directory"),
        (("a", "a/"), "'a' is both a file and a directory"),
        (("d/", "d"), "'d' is both a file and a directory"),
        (("a/b/c", "a/b"), "'a/b' is both a file and a directory"),
        (("x.ipynb/",), "'x.ipynb' is a directory; a name ending in .ipynb must be a notebook file"),
        (("x.ipynb/data.csv",), "'x.ipynb' is a directory"),
        (("nb/X.IPYNB/y",), "'nb/X.IPYNB' is a directory"),
    ],
)
def test_self_contradicting_trees(world: World, entries: tuple[str, ...], fragment: str) -> None:
    before = state(world)
    r = world.client("student").post(SUBMIT, data=zip_of("tiny.ipynb", *entries), headers=ZIP)
    assert_refused(world, r, 422, fragment, before)


@pytest.mark.parametrize(
    "name",
    [
        ".git/config",
        ".GIT/config",
        ".Git/HEAD",
        "git~1/config",
        "GIT~1/config",
        ".git./config",
        ".git /config",
        ".git::$INDEX_ALLOCATION/config",
        ".g\u200cit/config",
        "sub/.GIT",
        ".GITMODULES",
        "gitmod~1",
        "gi7eba~1",
        ".GitAttributes",
        "gitatt~2",
    ],
)
def test_names_read_as_git_metadata_are_refused(world: World, name: str) -> None:
    before = state(world)
    client = world.client("student")
    r = client.post(SUBMIT, data=zip_of("tiny.ipynb", name), headers=ZIP)
    assert_refused(world, r, 422, "git's own", before)
    files = {"a": ("tiny.ipynb", notebook_bytes()), "b": (name, b"x")}
    r = client.post(SUBMIT, files=files)
    assert_refused(world, r, 422, "git's own", before)


def test_git_lookalikes_that_are_not_git_names_are_accepted(world: World) -> None:
    r = world.client("student").post(
        SUBMIT, data=zip_of("tiny.ipynb", ".github/x.yml", ".gitignore", "git/x", "gitfoo~1"), headers=ZIP
    )
    assert r.status_code == 201, r.text


DEEP = 100_000


def deep_notebook(levels: int) -> bytes:
    """The test notebook with a value nested `levels` deep in its first metadata object."""
    nested = b'"deep": ' + b"[" * levels + b"]" * levels + b","
    return notebook_bytes().replace(b'"metadata": {', b'"metadata": {' + nested, 1)


@pytest.mark.parametrize("levels", [DEEP, 101])
def test_deeply_nested_notebooks_are_refused(world: World, levels: int) -> None:
    body = deep_notebook(levels)
    assert body.count(b"[") >= levels
    before = state(world)
    client = world.client("student")
    r = client.post(
        SUBMIT,
        data=body,
        params={"filename": "tiny.ipynb"},
        headers={"Content-Type": "application/x-ipynb+json"},
    )
    assert_refused(
        world, r, 422, "tiny.ipynb is not valid notebook JSON: JSON is nested more than 100", before
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny.ipynb", body)
    r = client.post(SUBMIT, data=buf.getvalue(), headers=ZIP)
    assert_refused(world, r, 422, "nested more than 100", before)
    r = world.client("instructor").put(SOURCE, data=buf.getvalue(), headers=ZIP)
    assert_refused(world, r, 422, "nested more than 100", before)


def test_a_notebook_nested_within_the_limit_is_accepted(world: World) -> None:
    r = world.client("student").post(
        SUBMIT,
        data=deep_notebook(60),
        params={"filename": "tiny.ipynb"},
        headers={"Content-Type": "application/x-ipynb+json"},
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[" * DEEP + b"]" * DEEP, "nested more than 32 levels"),
        (b'{"name": "x", "settings": ' + b"[" * DEEP + b"]" * DEEP + b"}", "nested more than 32 levels"),
        (b'{"name": "x", "late_penalty": NaN}', "NaN is not a JSON number"),
        (b'{"name": "x", "late_penalty": Infinity}', "Infinity is not a JSON number"),
        (b'{"name": "x", "title": "a\\u0000b"}', "NUL characters"),
        (b'{"name": "x", "a\\u0000": 1}', "NUL characters"),
        (b'{"name": "x\xff"}', "not valid JSON"),
        (b'{"name": "x", "max_submissions": 2147483648}', "integer from 1 to 2147483647"),
        (b'{"name": " padded"}', "must be a slug"),
        (b'{"name": "x", "title": "   "}', "not all blank"),
        (b'{"name": "x", "settings": {"memory": "lots"}}', "Setting 'memory' must be"),
        (b'{"name": "x", "settings": {"memory": 0}}', "Setting 'memory' must be"),
        (b'{"name": "x", "settings": {"cpu": "1 core"}}', "Setting 'cpu' must be"),
        (b'{"name": "x", "settings": {"image": ""}}', "Setting 'image' must be"),
        (b'{"name": "x", "due_date": "9999-12-31T23:00:00-05:00"}', "out of range"),
        (b'{"name": "x", "due_date": "0001-01-01T00:30:00+01:00"}', "out of range"),
    ],
)
def test_malformed_json_bodies(world: World, body: bytes, fragment: str) -> None:
    r = world.client("instructor").post(
        "lectures/ml/assignments", data=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert fragment in r.json()["message"]


def test_nul_in_a_grading_comment_is_refused(world: World) -> None:
    sub = world.submit("student").json()
    r = world.client("tutor").patch(f"{SUBMIT}/{sub['id']}", data=b'{"comment": "ok\\u0000"}')
    assert r.status_code == 400 and "NUL" in r.json()["message"], r.text


# Integers the spec allows: ASCII digits, 64-bit. Each of these is not one.
NOT_INTEGERS = ["²", "٣", "۳", "３", "1_0", "+1", " 1", "1 ", "0x1", "1e3", "1.0", "", "-"]
TOO_BIG = ["9223372036854775808", "99999999999999999999999", "1" * 5000]


@pytest.mark.parametrize("raw", [raw for raw in NOT_INTEGERS + TOO_BIG if raw] + ["2147483648"])
def test_ids_in_paths_follow_the_spec(world: World, raw: str) -> None:
    sub = world.submit("student").json()
    admin = world.client("admin")
    for path in (
        f"{SUBMIT}/{raw}",
        f"{SUBMIT}/{raw}/gradebook",
        f"{SUBMIT}/{raw}/files",
        f"lectures/ml/assignments/tiny/grading-runs/{raw}",
    ):
        r = admin.get(path)
        assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json"), (
            path,
            r.text,
        )
        assert "not found" in r.json()["message"]
    # a valid id still works, and so does the highest one the spec allows
    assert admin.get(f"{SUBMIT}/{sub['id']}").status_code == 200
    assert admin.get(f"{SUBMIT}/2147483647").status_code == 404


@pytest.mark.parametrize("raw", [*NOT_INTEGERS, *TOO_BIG, "-1"])
def test_offsets_limits_and_query_ids_follow_the_spec(world: World, raw: str) -> None:
    client = world.client("admin")
    for path, name in (
        (SUBMIT, "offset"),
        (SUBMIT, "limit"),
        ("lectures", "offset"),
        ("lectures/ml/roles", "limit"),
        ("events", "submission"),
    ):
        r = client.get(path, params={name: raw})
        assert r.status_code == 400, (path, name, r.text)
        assert f"Query argument {name!r} must be" in r.json()["message"], r.text


def test_pagination_bounds(world: World) -> None:
    client = world.client("admin")
    assert client.get(SUBMIT, params={"offset": "9223372036854775807"}).json()["items"] == []
    assert client.get(SUBMIT, params={"offset": "9223372036854775808"}).status_code == 400
    assert client.get(SUBMIT, params={"limit": "1000"}).status_code == 200
    r = client.get(SUBMIT, params={"limit": "1001"})
    assert r.status_code == 400 and "at most 1000" in r.json()["message"]
    assert client.get(SUBMIT, params={"limit": "0"}).status_code == 400
    r = client.get("lectures/ml/assignments/tiny/scores", params={"format": "xml"})
    assert r.status_code == 400 and "json, csv" in r.json()["message"]


@pytest.mark.parametrize(
    ("content_type", "body", "fragment"),
    [
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nno final boundary", "ends inside a part's headers"),
        ("multipart/form-data", b"--xyz\r\n\r\n--xyz--", "names no boundary"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n--xyz--\r\n',
            "ends inside a part's headers",
        ),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: attachment; filename="a.txt"\r\n\r\nx\r\n--xyz--\r\n',
            "attachment, not form-data",
        ),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\ncut off here',
            "without a final boundary",
        ),
    ],
)
def test_malformed_multipart(world: World, content_type: str, body: bytes, fragment: str) -> None:
    before = state(world)
    for who, method, path in (("student", "POST", SUBMIT), ("instructor", "PUT", SOURCE)):
        r = world.client(who).request(method, path, data=body, headers={"Content-Type": content_type})
        assert_refused(world, r, 400, "Malformed multipart/form-data body", before)
        assert fragment in r.json()["message"], r.text


def test_a_file_name_ending_in_a_slash_is_refused(world: World) -> None:
    before = state(world)
    files = {"a": ("tiny.ipynb", notebook_bytes()), "b": ("x.ipynb/", notebook_bytes())}
    r = world.client("student").post(SUBMIT, files=files)
    assert_refused(world, r, 422, "ends in '/'", before)


def test_explicit_null_is_not_a_missing_field(world: World) -> None:
    admin = world.client("admin")
    r = admin.post("lectures", json={"code": "nulled", "name": None})
    assert r.status_code == 400 and "Field 'name' must be a string" in r.json()["message"]
    r = admin.post("lectures", json={"code": "nulled"})
    assert r.status_code == 201 and r.json()["name"] == "nulled"  # absent: the code is the name
    r = world.client("instructor").post(
        A_LIST, json={"name": "titled", "title": None, "settings": {"cpu": "500m"}}
    )
    assert r.status_code == 201 and r.json()["title"] is None  # a title may be cleared


@pytest.mark.parametrize("method", ["PUT", "TRACE", "PATCH"])
def test_a_method_a_path_does_not_have_is_405_with_allow(world: World, method: str) -> None:
    r = world.client("admin").request(method, "health")
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    assert r.json()["message"] == f"{method} is not allowed here; allowed: GET"
    r = world.client("admin").request(method if method != "PATCH" else "PUT", "lectures")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST"


@pytest.mark.parametrize("path", ["lectures?state=%FF", "lectures/%FF%FE", f"{SUBMIT}/%C0%AF"])
def test_a_url_that_is_not_utf8_is_400_naming_it(world: World, path: str) -> None:
    r = world.client("admin").get(path)
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json"), r.text
    assert "Invalid unicode" in r.json()["message"], r.text
