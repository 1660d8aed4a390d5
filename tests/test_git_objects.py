"""Commits written in Python by grader_service.storage.git, checked against real git.

The objects must be the very ones `git add --all --force .` + `write-tree` + `commit-tree -m`
write (same hashes), `git fsck --strict` must accept them, and git must keep working on the
repositories: head() reads what update-ref and pack-refs leave, export() round-trips files.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path

import pytest

from grader_service.storage import git as store

NOW = 1_700_000_000
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "grader-service",
    "GIT_AUTHOR_EMAIL": "grader-service@localhost",
    "GIT_COMMITTER_NAME": "grader-service",
    "GIT_COMMITTER_EMAIL": "grader-service@localhost",
    "GIT_AUTHOR_DATE": f"@{NOW} +0000",
    "GIT_COMMITTER_DATE": f"@{NOW} +0000",
}


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits made by the store carry NOW, like the ones made by git with GIT_*_DATE."""
    monkeypatch.setattr(store, "_now", lambda: NOW)


def run_git(*args: str | Path, env: dict[str, str] | None = None, check: bool = True) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    proc = subprocess.run(
        ["git", *map(str, args)],
        env={**clean, **GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        errors="surrogateescape",
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr}")
    return proc.stdout.strip()


def git_tree(directory: Path, scratch: Path) -> str:
    """The tree real git writes for `directory`, in a repository of its own."""
    repo = scratch / "reference.git"
    if not repo.exists():
        run_git("init", "--quiet", "--bare", repo)
    env = {"GIT_INDEX_FILE": str(scratch / "reference.index")}
    Path(env["GIT_INDEX_FILE"]).unlink(missing_ok=True)
    run_git("--git-dir", repo, "--work-tree", directory, "add", "--all", "--force", ".", env=env)
    return run_git("--git-dir", repo, "write-tree", env=env)


def git_commit(repo: Path, tree: str, message: str, parent: str | None = None) -> str:
    """The commit real git writes for `tree` in `repo`, at NOW."""
    args = ["--git-dir", repo, "commit-tree", tree, "-m", message]
    return run_git(*args, *(["-p", parent] if parent else []))


def write(path: Path, data: bytes | str = b"x\n", mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def awkward_tree(root: Path) -> None:
    """Names whose git order differs from a plain sort, odd modes, links, and what git skips."""
    write(root / "a", "a\n")
    write(root / "a.txt", "a.txt\n")
    write(root / "a-b", "a-b\n")
    write(root / "ab" / "c", "ab/c\n")
    # git orders the directory "foo" as "foo/": after "foo-bar" and "foo.txt", before "foo0".
    write(root / "foo.txt", "foo.txt\n")
    write(root / "foo" / "bar", "foo/bar\n")
    write(root / "foo-bar", "foo-bar\n")
    write(root / "foo0", "foo0\n")
    write(root / "deep" / "er" / "est" / "leaf.ipynb", '{"cells": []}\n')
    (root / "empty").mkdir()
    (root / "only-empty" / "inside").mkdir(parents=True)
    write(root / "empty.txt", b"")
    write(root / "run.sh", "#!/bin/sh\necho hi\n", 0o755)
    write(root / "owner-exec", "x\n", 0o744)
    write(root / "group-exec", "x\n", 0o654)
    write(root / "read-only", "x\n", 0o444)
    os.symlink("foo/bar", root / "link")
    os.symlink("nowhere", root / "dangling")
    os.symlink("foo", root / "dirlink")
    write(root / ".git", "gitdir: /nowhere\n")  # skipped by git, at any depth
    write(root / "sub" / ".git" / "junk", "junk\n")
    write(root / "sub" / "kept", "kept\n")
    write(root / "only-git" / ".git", "skipped\n")
    write(root / ".gitignore", "*\n")  # --force: ignored files are added anyway
    write(root / "ünïcødé.ipynb", "ü\n")
    write(root / "日本語" / "ファイル.txt", "日本\n")
    write(root / "with space", " \n")
    write(root / "tab\tand\nnewline", "odd\n")
    write(root / "back\\slash", "\\\n")
    write(root / "BIG.bin", os.urandom(300_000))


def test_commit_matches_git_and_passes_fsck(tmp_path: Path) -> None:
    files, repo = tmp_path / "files", tmp_path / "store.git"
    awkward_tree(files)
    commit = asyncio.run(store.commit_directory(repo, files, "submission by alice", None))

    tree = git_tree(files, tmp_path)
    assert run_git("--git-dir", repo, "rev-parse", f"{commit}^{{tree}}") == tree
    assert commit == git_commit(tmp_path / "reference.git", tree, "submission by alice")
    run_git("--git-dir", repo, "fsck", "--strict", "--no-dangling")
    # The branch is not moved by commit_directory.
    assert run_git("--git-dir", repo, "rev-parse", "--verify", "--quiet", store.BRANCH, check=False) == ""

    objects = [
        p for p in (repo / "objects").rglob("*") if p.is_file() and p.parent.name not in ("info", "pack")
    ]
    assert objects and all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in objects)
    assert not [p for p in objects if p.name.startswith("tmp_obj_")]
    listed = run_git("--git-dir", repo, "ls-tree", "-r", "--name-only", "-z", commit).split("\0")
    assert "sub/kept" in listed and "foo/bar" in listed and "empty.txt" in listed
    assert not [n for n in listed if ".git" in n.split("/") or n.startswith(("empty/", "only-"))]


def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """libgit2 takes UTF-8 names only (uploads never make others, as zip entries and query strings
    are text): such a name is refused, never stored under another spelling, and nothing is committed."""
    files, repo = tmp_path / "files", tmp_path / "store.git"
    write(files / "ok", "ok\n")
    for name in (b"\xff\xfe-not-utf8", b"sub/latin-1-\xe9.txt"):
        path = os.fsencode(files) + b"/" + name
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"bytes\n")
        with pytest.raises(store.GitError, match="UTF-8"):
            asyncio.run(store.commit_directory(repo, files, "m", None))
        os.unlink(path)
    assert run_git("--git-dir", repo, "rev-list", "--all") == ""


@pytest.mark.parametrize("message", ["x", "x\n", "", "two\nlines\n\n", "  spaced  ", "ünï 🎓"])
def test_commit_message_matches_commit_tree(tmp_path: Path, message: str) -> None:
    files, repo = tmp_path / "files", tmp_path / "store.git"
    write(files / "nb.ipynb", "{}\n")
    commit = asyncio.run(store.commit_directory(repo, files, message, None))
    assert commit == git_commit(tmp_path / "reference.git", git_tree(files, tmp_path), message)
    run_git("--git-dir", repo, "fsck", "--strict", "--no-dangling")


def test_empty_directory_commits_the_empty_tree(tmp_path: Path) -> None:
    files, repo = tmp_path / "files", tmp_path / "store.git"
    (files / "nothing" / "here").mkdir(parents=True)
    commit = asyncio.run(store.commit_directory(repo, files, "empty", None))
    assert commit == git_commit(tmp_path / "reference.git", git_tree(files, tmp_path), "empty")
    run_git("--git-dir", repo, "fsck", "--strict", "--no-dangling")


def test_parents_chain_and_existing_objects_are_reused(tmp_path: Path) -> None:
    files, repo = tmp_path / "files", tmp_path / "store.git"
    write(files / "nb.ipynb", "{}\n")
    write(files / "data" / "table.csv", "a,b\n")

    async def scenario() -> tuple[str, str, str, str]:
        first = await store.commit_directory(repo, files, "one", None)
        await store.update_branch(repo, first, None)
        second = await store.commit_directory(repo, files, "two", await store.head(repo))
        again = await store.commit_directory(repo, files, "two", first)  # every object exists already
        write(files / "nb.ipynb", '{"changed": true}\n')
        third = await store.commit_directory(repo, files, "three", second)
        await store.update_branch(repo, second, first)
        await store.update_branch(repo, third, second)
        return first, second, again, third

    first, second, again, third = asyncio.run(scenario())
    assert again == second
    assert run_git("--git-dir", repo, "rev-parse", f"{second}^") == first
    assert run_git("--git-dir", repo, "rev-parse", f"{third}^") == second
    assert run_git("--git-dir", repo, "rev-list", "--count", store.BRANCH) == "3"
    assert run_git("--git-dir", repo, "rev-parse", f"{first}:data") == run_git(
        "--git-dir", repo, "rev-parse", f"{third}:data"
    )
    assert second == git_commit(
        repo, run_git("--git-dir", repo, "rev-parse", f"{first}^{{tree}}"), "two", first
    )
    run_git("--git-dir", repo, "fsck", "--strict", "--no-dangling")


def test_bad_parent_and_message_are_refused(tmp_path: Path) -> None:
    files, repo = tmp_path / "files", tmp_path / "store.git"
    write(files / "f")
    with pytest.raises(store.GitError):
        asyncio.run(store.commit_directory(repo, files, "m", "HEAD~1"))
    with pytest.raises(ValueError):
        asyncio.run(store.commit_directory(repo, files, "nul\0inside", None))


# (name, kind): kind "file", "dir" (a directory holding a file) or "link".
NAMES = [
    (".GIT", "file"),
    (".Git", "dir"),
    (".git.", "file"),
    (".git ", "dir"),
    (".git. .", "file"),
    (".git::$INDEX_ALLOCATION", "dir"),
    ("git~1", "file"),
    ("GIT~1", "dir"),
    ("git~2", "file"),
    ("x\\.git", "file"),
    ("x\\GIT~1\\y", "file"),
    (".gitx", "file"),
    (".git.x", "file"),
    ("git~1x", "file"),
    (".gitmodules", "file"),
    (".gitmodules", "link"),
    (".GITMODULES .", "link"),
    (".gitmodules:stream", "link"),
    ("x\\.gitmodules", "link"),
    ("gitmod~1", "link"),
    ("gitmod~4", "link"),
    ("gitmod~5", "link"),
    ("gi7eba~9", "link"),
    ("GI7EB~12", "link"),
    ("gi7~1234", "link"),
    ("gi7~0234", "link"),
    ("~1234567", "link"),
    ("gi7eba~1x", "link"),
    ("gi7eba~1.", "link"),
    ("gi7eba~", "link"),
    (".gitattributes", "link"),
    (".git", "link"),
]


@pytest.mark.parametrize(("name", "kind"), NAMES)
def test_names_are_refused_exactly_when_git_refuses_them(tmp_path: Path, name: str, kind: str) -> None:
    files, repo = tmp_path / "files", tmp_path / "store.git"
    write(files / "ok", "ok\n")
    if kind == "file":
        write(files / name, "x\n")
    elif kind == "dir":
        write(files / name / "inside", "x\n")
    else:
        os.symlink("ok", files / name)
    scratch = tmp_path / "reference"
    scratch.mkdir()
    try:
        expected: str | None = git_tree(files, scratch)
    except AssertionError:
        expected = None
    try:
        commit = asyncio.run(store.commit_directory(repo, files, "m", None))
    except store.GitError:
        assert expected is None, f"git accepts {name!r} ({kind})"
        return
    assert expected is not None, f"git refuses {name!r} ({kind})"
    assert run_git("--git-dir", repo, "rev-parse", f"{commit}^{{tree}}") == expected


def test_head_reads_loose_and_packed_refs(tmp_path: Path) -> None:
    files, repo = tmp_path / "files", tmp_path / "store.git"
    write(files / "f")

    async def scenario() -> None:
        assert await store.head(tmp_path / "missing.git") is None
        await store.ensure_repo(repo)
        assert await store.head(repo) is None
        commit = await store.commit_directory(repo, files, "m", None)
        assert await store.head(repo) is None
        await store.update_branch(repo, commit, None)
        assert await store.head(repo) == commit

        run_git("--git-dir", repo, "pack-refs", "--all")
        assert not (repo / store.BRANCH).exists()
        assert await store.head(repo) == commit
        # Still moved by git, compare-and-swap against the packed value.
        write(files / "g")
        second = await store.commit_directory(repo, files, "m2", commit)
        await store.update_branch(repo, second, commit)
        assert await store.head(repo) == second
        await store.revert_branch(repo, second, commit)
        assert await store.head(repo) == commit

        run_git("--git-dir", repo, "gc", "--quiet")
        assert await store.head(repo) == commit
        await store.revert_branch(repo, commit, None)
        assert await store.head(repo) is None

        (repo / store.BRANCH).write_text("ref: refs/heads/other\n")
        with pytest.raises(store.GitError):
            await store.head(repo)

    asyncio.run(scenario())


def test_ensure_repo_settings_and_git_works_on_it(tmp_path: Path) -> None:
    repo = tmp_path / "repos" / "7" / "1.git"
    files = tmp_path / "files"
    write(files / "nb.ipynb", "{}\n")

    async def scenario() -> str:
        await asyncio.gather(*(store.ensure_repo(repo) for _ in range(3)))  # racing creators
        await store.ensure_repo(repo)
        commit = await store.commit_directory(repo, files, "m", None)
        await store.update_branch(repo, commit, None)
        return commit

    commit = asyncio.run(scenario())
    assert sorted(p.name for p in repo.parent.iterdir()) == ["1.git"]  # no temporary leftovers
    assert run_git("--git-dir", repo, "config", "--get", "core.hooksPath") == os.devnull
    assert run_git("--git-dir", repo, "config", "--get", "gc.auto") == "0"
    assert run_git("--git-dir", repo, "config", "--get", "core.bare") == "true"
    assert run_git("--git-dir", repo, "symbolic-ref", "HEAD") == store.BRANCH
    assert run_git("--git-dir", repo, "rev-parse", store.BRANCH) == commit
    assert run_git("--git-dir", repo, "archive", "--format=tar", "-o", tmp_path / "a.tar", commit) == ""
    assert asyncio.run(store.list_files(repo, commit)) == ["nb.ipynb"]
    run_git("--git-dir", repo, "fsck", "--strict")


def test_export_round_trips_files(tmp_path: Path) -> None:
    files, repo, dest = tmp_path / "files", tmp_path / "store.git", tmp_path / "dest"
    write(files / "nb.ipynb", '{"cells": []}\n')
    write(files / "run.sh", "#!/bin/sh\n", 0o755)
    write(files / "deep" / "er" / "data.bin", os.urandom(10_000))
    write(files / "ünï" / "x.txt", "ü\n", 0o600)
    os.symlink("deep/er/data.bin", files / "link")
    (files / "empty").mkdir()
    dest.mkdir()

    async def scenario() -> str:
        commit = await store.commit_directory(repo, files, "m", None)
        await store.export(repo, commit, dest)
        return commit

    asyncio.run(scenario())
    exported = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    assert exported == sorted(p.relative_to(files) for p in files.rglob("*") if p.name != "empty")
    for rel in exported:
        src, out = files / rel, dest / rel
        if src.is_symlink():
            assert out.is_symlink() and os.readlink(out) == os.readlink(src)
        elif src.is_file():
            assert out.read_bytes() == src.read_bytes()
            assert bool(out.stat().st_mode & 0o100) == bool(src.stat().st_mode & 0o100)
            assert int(out.stat().st_mtime) == NOW
        else:
            assert out.is_dir()


def test_export_of_a_missing_commit_fails(tmp_path: Path) -> None:
    repo, dest = tmp_path / "store.git", tmp_path / "dest"
    dest.mkdir()
    asyncio.run(store.ensure_repo(repo))
    with pytest.raises(store.GitError):
        asyncio.run(store.export(repo, "0" * 40, dest))
