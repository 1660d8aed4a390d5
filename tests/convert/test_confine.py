"""Landlock confinement of kernels (`convert.confine`): the rules, and a kernel under them."""

from __future__ import annotations

import json
from pathlib import Path

from grader_service.convert import confine
from grader_service.convert.autograde import autograde

from .builders import answer, graded, notebook, with_answers, write
from .conftest import needs_landlock


def test_cover_holds_everything_but_the_protected_subtrees(tmp_path: Path) -> None:
    for d in ("job/submission", "job/source/deep", "job/output", "data/x", "other"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "job" / "notes.txt").write_text("n")
    (tmp_path / "link").symlink_to(tmp_path / "job" / "source")
    protected = [tmp_path / "job" / "source", tmp_path / "job" / "output"]

    covered = confine.cover(tmp_path, protected)

    assert sorted(covered) == sorted(
        [
            tmp_path / "data",
            tmp_path / "other",
            tmp_path / "job" / "submission",
            tmp_path / "job" / "notes.txt",
        ]
    )
    assert confine.cover(tmp_path / "job" / "source" / "deep", protected) == []
    assert confine.cover(tmp_path / "data", protected) == [tmp_path / "data"]


def test_plan_never_grants_a_protected_directory(tmp_path: Path) -> None:
    protected = [tmp_path / "source", tmp_path / "output"]
    for p in (*protected, tmp_path / "work"):
        p.mkdir()
    rules = confine.plan(protected, [tmp_path / "work", tmp_path], abi=6).rules
    granted = [Path(path) for path, _ in rules]
    for p in protected:
        assert not [g for g in granted if g == p or p in g.parents or g in p.parents and g != Path("/")]
    assert (str(tmp_path / "work"), (1 << 16) - 1) in rules


SPY = """
import json, os
tried = {}
def attempt(label, action):
    try:
        action()
        tried[label] = 'allowed'
    except OSError as e:
        tried[label] = type(e).__name__
attempt('write output', lambda: open(OUTPUT + '/planted.txt', 'w').write('x'))
attempt('list output', lambda: os.listdir(OUTPUT))
attempt('read original submission', lambda: open(SUBMISSION + '/hw.ipynb').read())
attempt('write original submission', lambda: open(SUBMISSION + '/planted.txt', 'w').write('x'))
attempt('recreate source', lambda: os.makedirs(SOURCE))
attempt('write work copy', lambda: open('planted-here.txt', 'w').write('x'))
attempt('write tmp', lambda: open(__import__('tempfile').gettempdir() + '/x.txt', 'w').write('x'))
attempt('read system', lambda: open('/etc/hostname').read() if os.path.exists('/etc/hostname') else None)
print('TRIED' + json.dumps(tried))
"""


@needs_landlock
def test_a_confined_kernel_reaches_its_work_copy_only(tmp_path: Path) -> None:
    """The kernel cannot read, list or write the job's directories, however it names them."""
    from grader_service.convert.release import release_assignment

    write(
        notebook(
            answer("f", "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION"),
            graded("test_f", "assert f(1) == 2", 1),
        ),
        tmp_path / "source" / "hw.ipynb",
    )
    release_assignment(tmp_path / "source", tmp_path / "release")
    names = {"OUTPUT": tmp_path / "out", "SUBMISSION": tmp_path / "sub", "SOURCE": tmp_path / "source"}
    spy = "".join(f"{k} = {str(v)!r}\n" for k, v in names.items()) + SPY
    nb = with_answers(json.loads((tmp_path / "release" / "hw.ipynb").read_text()), {"f": "def f(x):\n    return x + 1"},
                      insert={0: spy})  # fmt: skip
    write(nb, tmp_path / "sub" / "hw.ipynb")

    summary = autograde(tmp_path / "sub", tmp_path / "source", tmp_path / "out", cell_timeout=20,
                        work_dir=tmp_path / "work", remove_source=True, confine_kernels=True)  # fmt: skip

    assert summary["score"] == 1.0
    graded_nb = json.loads((tmp_path / "out" / "hw.ipynb").read_text())
    text = "".join(o.get("text", "") for c in graded_nb["cells"] for o in c.get("outputs", []))
    tried = json.loads(text.split("TRIED", 1)[1].splitlines()[0])
    for action in ("write output", "list output", "read original submission", "write original submission",
                   "recreate source"):  # fmt: skip
        assert tried[action] == "PermissionError", tried
    for action in ("write work copy", "write tmp", "read system"):
        assert tried[action] == "allowed", tried
    assert not (tmp_path / "source").exists() and not (tmp_path / "out" / "planted.txt").exists()
    assert (tmp_path / "work" / "submission" / "planted-here.txt").exists()


def test_fence_grants_everything_but_the_protected_directories(tmp_path: Path) -> None:
    protected = [tmp_path / "course" / "source", tmp_path / "out"]
    for p in (*protected, tmp_path / "course" / "submitted" / "alice"):
        p.mkdir(parents=True)
    rules = dict(confine.fence(protected, abi=6).rules)
    for path in rules:
        for p in protected:
            assert not (Path(path) == p or p in Path(path).parents or Path(path) in p.parents)
    assert rules[str(tmp_path / "course" / "submitted")] == confine.ALL_RIGHTS
    assert rules["/usr"] == confine.ALL_RIGHTS


FENCE_SPY = """
import json, os, subprocess
tried = {}
def attempt(label, action):
    try:
        action()
        tried[label] = 'allowed'
    except (OSError, subprocess.CalledProcessError) as e:
        tried[label] = type(e).__name__
attempt('read source', lambda: open(SOURCE + '/hw.ipynb').read())
attempt('list source', lambda: os.listdir(SOURCE))
attempt('write source', lambda: open(SOURCE + '/planted.txt', 'w').write('x'))
attempt('read source via a link', lambda: (os.symlink(SOURCE, 'link'), open('link/hw.ipynb').read()))
attempt('child reads source', lambda: subprocess.run(['cat', SOURCE + '/hw.ipynb'], check=True,
                                                     capture_output=True))
attempt('write output', lambda: open(OUTPUT + '/planted.txt', 'w').write('x'))
attempt('list output', lambda: os.listdir(OUTPUT))
attempt('write here', lambda: open('planted-here.txt', 'w').write('x'))
attempt('write tmp', lambda: open(__import__('tempfile').gettempdir() + '/x.txt', 'w').write('x'))
attempt('read system', lambda: open('/etc/passwd').read())
print('TRIED' + json.dumps(tried))
"""


@needs_landlock
def test_every_kernel_is_fenced_off_the_source_and_output(tmp_path: Path) -> None:
    """Without --confine-kernels (a grader run by hand), the kernel still cannot reach the source and
    output directories by any path, while it works in the submission as usual."""
    from grader_service.convert.release import release_assignment

    write(
        notebook(
            answer("f", "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION"),
            graded("test_f", "assert f(1) == 2", 1),
        ),
        tmp_path / "source" / "hw.ipynb",
    )
    release_assignment(tmp_path / "source", tmp_path / "release")
    names = {"OUTPUT": tmp_path / "out", "SOURCE": tmp_path / "source"}
    spy = "".join(f"{k} = {str(v)!r}\n" for k, v in names.items()) + FENCE_SPY
    nb = with_answers(json.loads((tmp_path / "release" / "hw.ipynb").read_text()), {"f": "def f(x):\n    return x + 1"},
                      insert={0: spy})  # fmt: skip
    write(nb, tmp_path / "sub" / "hw.ipynb")

    summary = autograde(tmp_path / "sub", tmp_path / "source", tmp_path / "out", cell_timeout=20)

    assert summary["score"] == 1.0 and not summary["tampering"]
    graded_nb = json.loads((tmp_path / "out" / "hw.ipynb").read_text())
    text = "".join(o.get("text", "") for c in graded_nb["cells"] for o in c.get("outputs", []))
    tried = json.loads(text.split("TRIED", 1)[1].splitlines()[0])
    for action in ("read source", "list source", "write source", "read source via a link", "write output",
                   "list output"):  # fmt: skip
        assert tried[action] == "PermissionError", tried
    assert tried["child reads source"] == "CalledProcessError", tried
    for action in ("write here", "write tmp", "read system"):
        assert tried[action] == "allowed", tried
    assert (tmp_path / "sub" / "planted-here.txt").exists()
    assert sorted(p.name for p in (tmp_path / "source").iterdir()) == ["hw.ipynb"]
