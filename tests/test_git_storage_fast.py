"""ensure_repo, update_branch and export done in Python, checked against real git.

A new repository must be what `git init --bare --template=` makes, the branch must move by git's
lock-file protocol (so git and the service interleave safely), and an export must give exactly
the files that `git archive` + GNU `tar -x` give, falling back to git archive for packed objects
and refusing damaged ones. Whichever way it reads, the export never writes outside its
destination: hostile archives and trees are refused (`tar` itself is only the reference for
harmless ones).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from grader_service.storage import git as store

from .test_git_objects import GIT_ENV, NOW, fixed_clock, run_git, write  # noqa: F401 (autouse fixture)


def commit_files(repo: Path, files: Path, message: str = "m", parent: str | None = None) -> str:
    return asyncio.run(store.commit_directory(repo, files, message, parent))


def commit_chain(repo: Path, tmp_path: Path, count: int) -> list[str]:
    """`count` commits, each the parent of the next, none on the branch."""
    files = tmp_path / "chain-files"
    commits: list[str] = []
    for i in range(count):
        write(files / "n.txt", f"{i}\n")
        commits.append(commit_files(repo, files, f"c{i}", commits[-1] if commits else None))
    return commits


def update(repo: Path, new: str, old: str | None) -> None:
    asyncio.run(store.update_branch(repo, new, old))


def branch(repo: Path) -> str:
    return run_git("--git-dir", repo, "rev-parse", "--verify", "--quiet", store.BRANCH, check=False)


def snapshot(root: Path) -> dict[bytes, tuple[str, int, bytes, int]]:
    """Every path under `root` (not followed through links): kind, mode, content and mtime."""
    found: dict[bytes, tuple[str, int, bytes, int]] = {}
    top = os.fsencode(root)
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", 0, os.readlink(path), 0)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), b"", int(st.st_mtime))
            else:
                with open(path, "rb") as f:
                    found[rel] = ("file", stat.S_IMODE(st.st_mode), f.read(), int(st.st_mtime))
    return found


def export_both(repo: Path, commit: str, tmp_path: Path) -> tuple[Path, Path]:
    """`commit` exported from the loose objects and from git archive's tar, each checked against
    what GNU tar makes of that tar."""
    new, old = tmp_path / "export-new", tmp_path / "export-old"
    new.mkdir(parents=True)
    old.mkdir(parents=True)
    assert store._export_with_library(repo, commit, new), "not exported through libgit2"
    asyncio.run(store._export_with_git(repo, commit, old))
    assert snapshot(old) == snapshot(tar_x(repo, commit, tmp_path / "export-tar"))
    return new, old


def tar_x(repo: Path, commit: str, dest: Path) -> Path:
    """`git archive | tar -x` as a user with a 022 umask would run it."""
    dest.mkdir(parents=True)
    tar = subprocess.run(
        ["git", "--git-dir", str(repo), "archive", "--format=tar", commit], capture_output=True, check=True
    ).stdout
    subprocess.run(
        ["tar", "-x", "--no-same-owner", "--no-same-permissions", "-C", str(dest)],
        input=tar,
        check=True,
        preexec_fn=lambda: os.umask(0o022),
    )
    return dest


def loose_objects(repo: Path) -> list[Path]:
    return [p for p in (repo / "objects").glob("??/*") if len(p.parent.name) == 2]


def no_lock_left(repo: Path) -> bool:
    return not (repo / f"{store.BRANCH}.lock").exists()


# ensure_repo


def test_ensure_repo_is_what_git_init_makes(tmp_path: Path) -> None:
    """libgit2's bare repository holds git's (`git init --bare --template=`), with the same modes,
    plus only its inert template files (no hook that could run), and git reads the same settings
    from it, plus ours."""
    ours, gits = tmp_path / "ours.git", tmp_path / "gits.git"
    asyncio.run(store.ensure_repo(ours))
    run_git("init", "--quiet", "--bare", "--template=", "--initial-branch=main", gits)

    def layout(repo: Path) -> dict[str, tuple[bool, int]]:
        return {
            str(p.relative_to(repo)): (p.is_dir(), stat.S_IMODE(p.stat().st_mode)) for p in repo.rglob("*")
        }

    theirs, mine = layout(gits), layout(ours)
    assert {k: v for k, v in mine.items() if k in theirs} == theirs
    extra = sorted(set(mine) - set(theirs))
    assert set(extra) <= {"description", "hooks", "hooks/README.sample", "info", "info/exclude"}, extra
    # (git runs a hook by its name, never one named `.sample`; and core.hooksPath is /dev/null.)
    assert stat.S_IMODE(ours.stat().st_mode) == stat.S_IMODE(gits.stat().st_mode)
    assert (ours / "HEAD").read_bytes() == (gits / "HEAD").read_bytes() == b"ref: refs/heads/main\n"
    listed = run_git("--git-dir", ours, "config", "--list").splitlines()
    assert sorted(listed) == sorted(
        run_git("--git-dir", gits, "config", "--list").splitlines()
        + [f"core.hookspath={os.devnull}", "gc.auto=0"]
    )
    assert "core.bare=true" in listed
    assert run_git("--git-dir", ours, "symbolic-ref", "HEAD") == store.BRANCH
    assert run_git("--git-dir", ours, "rev-parse", "--is-bare-repository") == "true"
    run_git("--git-dir", ours, "fsck", "--strict")


def test_user_config_does_not_reach_the_repositories(tmp_path: Path) -> None:
    """A user's git config (here one whose template directory holds a hook, and that would rename
    the initial branch) changes nothing the service makes: libgit2 reads no config but the
    repository's own. Run in a process of its own, since libgit2 finds the user's config once."""
    home, templates = tmp_path / "home", tmp_path / "templates"
    write(templates / "hooks" / "post-update", "#!/bin/sh\ntouch /tmp/hooked\n", 0o755)
    write(templates / "planted", "x\n")
    write(home / ".gitconfig", f"[init]\n\ttemplateDir = {templates}\n\tdefaultBranch = trunk\n")
    repo = tmp_path / "r.git"
    script = "import asyncio, sys, pathlib; from grader_service.storage import git; asyncio.run(git.ensure_repo(pathlib.Path(sys.argv[1])))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "XDG_"))}
    subprocess.run([sys.executable, "-c", script, str(repo)], env={**env, "HOME": str(home)}, check=True)
    assert not (repo / "planted").exists() and not (repo / "hooks" / "post-update").exists()
    assert (repo / "HEAD").read_text() == "ref: refs/heads/main\n"
    # git itself, given the same HOME, does read it: the config is one that would have mattered.
    subprocess.run(
        ["git", "init", "-q", "--bare", tmp_path / "g.git"], env={**env, "HOME": str(home)}, check=True
    )
    assert (tmp_path / "g.git" / "planted").exists()


def test_ensure_repo_then_commit_is_seen_by_git(tmp_path: Path) -> None:
    repo, files = tmp_path / "a" / "b" / "1.git", tmp_path / "files"
    write(files / "nb.ipynb", "{}\n")

    async def scenario() -> str:
        # Racing creators, each in its own thread: one rename wins, the others find its repository.
        await asyncio.gather(*(store.ensure_repo(repo) for _ in range(8)))
        commit = await store.commit_directory(repo, files, "first", None)
        await store.update_branch(repo, commit, None)
        return commit

    commit = asyncio.run(scenario())
    assert os.listdir(repo.parent) == ["1.git"]
    assert run_git("--git-dir", repo, "rev-parse", store.BRANCH) == commit
    assert run_git("--git-dir", repo, "log", "--format=%H %s") == f"{commit} first"
    run_git("--git-dir", repo, "fsck", "--strict", "--no-dangling")


# update_branch


def test_update_branch_is_a_compare_and_swap(tmp_path: Path) -> None:
    repo = tmp_path / "r.git"
    c1, c2, c3 = commit_chain(repo, tmp_path, 3)

    update(repo, c1, None)
    assert branch(repo) == c1 and (repo / store.BRANCH).read_text() == f"{c1}\n"
    for new, old in ((c2, None), (c2, c3), (c2, c2)):
        with pytest.raises(store.GitError):
            update(repo, new, old)
        assert branch(repo) == c1 and no_lock_left(repo)
    update(repo, c2, c1)
    assert branch(repo) == c2 and no_lock_left(repo)
    asyncio.run(store.revert_branch(repo, c2, c1))
    assert branch(repo) == c1
    asyncio.run(store.revert_branch(repo, c1, None))  # deletion: git
    assert branch(repo) == "" and no_lock_left(repo)
    with pytest.raises(store.GitError):
        update(repo, c2, c1)  # the branch is gone: c1 is no longer there to swap
    assert branch(repo) == "" and no_lock_left(repo)
    # What git itself would refuse: a non-commit on a branch.
    tree = run_git("--git-dir", repo, "rev-parse", f"{c1}^{{tree}}")
    with pytest.raises(store.GitError):
        update(repo, tree, None)
    assert run_git("--git-dir", repo, "update-ref", store.BRANCH, tree, "0" * 40, check=False) == ""
    assert branch(repo) == "" and no_lock_left(repo)
    run_git("--git-dir", repo, "fsck", "--strict", "--no-dangling")


def test_update_branch_respects_a_held_lock_and_git_respects_ours(tmp_path: Path) -> None:
    repo = tmp_path / "r.git"
    c1, c2 = commit_chain(repo, tmp_path, 2)
    update(repo, c1, None)
    lock = repo / f"{store.BRANCH}.lock"
    lock.write_text("held by someone else\n")
    before = lock.stat()
    with pytest.raises(store.GitError, match="File exists"):
        update(repo, c2, c1)
    assert lock.read_text() == "held by someone else\n" and lock.stat().st_ino == before.st_ino
    assert branch(repo) == c1
    # The same lock stops git: it is the one git takes.
    proc = subprocess.run(
        ["git", "--git-dir", repo, "update-ref", store.BRANCH, c2, c1],
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "main.lock" in proc.stderr
    lock.unlink()
    # A lock released within git's retry time (100 ms) is waited for, as git waits.
    lock.write_text("")
    threading.Timer(0.03, lock.unlink).start()
    update(repo, c2, c1)
    assert branch(repo) == c2 and no_lock_left(repo)
    # git moves the branch and we swap against what git wrote.
    run_git("--git-dir", repo, "update-ref", store.BRANCH, c1, c2)
    update(repo, c2, c1)
    assert branch(repo) == c2 and no_lock_left(repo)


def test_update_branch_against_packed_refs(tmp_path: Path) -> None:
    repo = tmp_path / "r.git"
    c1, c2, c3 = commit_chain(repo, tmp_path, 3)
    update(repo, c1, None)
    run_git("--git-dir", repo, "pack-refs", "--all")
    assert not (repo / store.BRANCH).exists() and c1 in (repo / "packed-refs").read_text()
    for new, old in ((c2, None), (c2, c3)):
        with pytest.raises(store.GitError):
            update(repo, new, old)
        assert branch(repo) == c1 and no_lock_left(repo)
    update(repo, c2, c1)  # the loose ref now hides the packed one, as git leaves it
    assert (repo / store.BRANCH).read_text() == f"{c2}\n" and branch(repo) == c2
    asyncio.run(store.revert_branch(repo, c2, c1))
    assert branch(repo) == c1
    run_git("--git-dir", repo, "pack-refs", "--all")
    asyncio.run(store.revert_branch(repo, c1, None))
    assert branch(repo) == "" and store.BRANCH not in (repo / "packed-refs").read_text()
    # After `git gc` the commits are packed, not loose: git moves the branch then.
    run_git("--git-dir", repo, "update-ref", store.BRANCH, c3, "0" * 40)
    run_git("--git-dir", repo, "gc", "--quiet", "--prune=now")
    assert not loose_objects(repo) and not (repo / store.BRANCH).exists()
    update(repo, c1, c3)
    assert branch(repo) == c1
    with pytest.raises(store.GitError):
        update(repo, c2, c3)
    assert branch(repo) == c1 and no_lock_left(repo)
    run_git("--git-dir", repo, "fsck", "--strict", "--no-dangling")


def test_concurrent_updates_from_the_same_old_one_wins(tmp_path: Path) -> None:
    repo = tmp_path / "r.git"
    files = tmp_path / "files"
    base = commit_chain(repo, tmp_path, 1)[0]
    candidates = []
    for i in range(8):
        write(files / "f", f"{i}\n")
        candidates.append(commit_files(repo, files, f"candidate {i}", base))

    async def racing_tasks(old: str | None) -> list[BaseException | None]:
        return await asyncio.gather(
            *(store.update_branch(repo, c, old) for c in candidates), return_exceptions=True
        )

    results = asyncio.run(racing_tasks(None))
    winners = [c for c, r in zip(candidates, results, strict=True) if r is None]
    assert len(winners) == 1 and branch(repo) == winners[0] and no_lock_left(repo)
    assert all(isinstance(r, store.GitError) for r in results if r is not None)

    # Plain threads, all released at once, swapping from the same old value (to another value:
    # swapping the value for itself succeeds, as in git, whenever it comes first).
    current = winners[0]
    others = [c for c in candidates if c != current]
    barrier = threading.Barrier(len(others))

    def attempt(new: str) -> bool:
        barrier.wait()
        try:
            store._compare_and_swap(repo, new, current)
            return True
        except store.GitError:
            return False

    with ThreadPoolExecutor(len(others)) as pool:
        won = list(pool.map(attempt, others))
    assert won.count(True) == 1 and branch(repo) == others[won.index(True)] and no_lock_left(repo)


def test_update_branch_interleaves_with_git_update_ref(tmp_path: Path) -> None:
    """Python threads and git processes race to advance the branch one commit at a time, each
    swapping from the value it read: every step must be taken exactly once, whoever takes it."""
    repo = tmp_path / "r.git"
    chain = commit_chain(repo, tmp_path, 30)
    update(repo, chain[0], None)
    successes: list[str] = []
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **GIT_ENV}

    def worker(use_git: bool) -> None:
        while (current := store._read_branch(repo)) != chain[-1]:
            new = chain[chain.index(current) + 1]
            if use_git:
                args = ["git", "--git-dir", str(repo), "update-ref", store.BRANCH, new, current]
                ok = subprocess.run(args, env=env, capture_output=True).returncode == 0
            else:
                try:
                    asyncio.run(store.update_branch(repo, new, current))
                    ok = True
                except store.GitError:
                    ok = False
            if ok:
                successes.append(new)

    threads = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(successes, key=chain.index) == chain[1:]  # each step once, none twice
    assert branch(repo) == chain[-1] and no_lock_left(repo)


# export


def exportable_tree(root: Path) -> None:
    write(root / "nb.ipynb", '{"cells": []}\n')
    write(root / "run.sh", "#!/bin/sh\necho hi\n", 0o755)
    write(root / "owner-exec", "x\n", 0o700)
    write(root / "empty.txt", b"")
    write(root / "deep" / "er" / "est" / "data.bin", os.urandom(50_000))
    write(root / "deep" / "sibling.txt", "s\n")
    write(root / "ünïcødé" / "日本語.txt", "ü\n", 0o600)
    write(root / "with space" / "a file.txt", " \n")
    write(root / "back\\slash", "\\\n")
    os.symlink("deep/er/est/data.bin", root / "link")
    os.symlink("../nb.ipynb", root / "deep" / "up-link")
    os.symlink("er", root / "deep" / "dir-link")
    os.symlink("nowhere", root / "dangling")
    os.symlink("deep/../deep/er/../..", root / "self")  # resolves to the destination itself


def test_export_matches_git_archive(tmp_path: Path) -> None:
    repo, files = tmp_path / "r.git", tmp_path / "files"
    exportable_tree(files)
    commit = commit_files(repo, files)
    new, old = export_both(repo, commit, tmp_path)
    exported = snapshot(new)
    assert exported == snapshot(old)
    assert exported[b"run.sh"][:2] == ("file", 0o755) and exported[b"owner-exec"][:2] == ("file", 0o755)
    assert exported[b"empty.txt"] == ("file", 0o644, b"", NOW)
    assert exported[b"link"] == ("link", 0, b"deep/er/est/data.bin", 0)
    assert exported["ünïcødé/日本語.txt".encode()] == ("file", 0o644, "ü\n".encode(), NOW)
    assert exported[b"deep/er"][0] == "dir" and exported[b"deep/er"][3] == NOW
    # The public entry point takes the same path.
    third = tmp_path / "export-public"
    third.mkdir()
    asyncio.run(store.export(repo, commit, third))
    assert snapshot(third) == exported


def test_export_of_trees_git_wrote(tmp_path: Path) -> None:
    """Trees from git itself: a submodule link (an empty directory in git archive's tar), an
    executable in a subtree, a name that is not UTF-8, and the empty tree."""
    repo = tmp_path / "r.git"
    asyncio.run(store.ensure_repo(repo))

    def git_in(*args: str, stdin: str = "") -> str:
        return subprocess.run(
            ["git", "--git-dir", str(repo), *args],
            input=stdin,
            env={**os.environ, **GIT_ENV},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    blob = git_in("hash-object", "-w", "--stdin", stdin="hello\n")
    inner = git_in("mktree", stdin=f"100755 blob {blob}\trun\n")
    odd = (
        subprocess.run(
            ["git", "--git-dir", str(repo), "mktree", "-z"],
            input=b"100644 blob %s\t\xff\xfe-not-utf8\0" % blob.encode(),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    tree = git_in(
        "mktree",
        "--missing",
        stdin=f"160000 commit {'1' * 40}\tsub\n100644 blob {blob}\tf\n040000 tree {inner}\td\n"
        f"040000 tree {odd}\todd\n",
    )
    commit = git_in("commit-tree", "-m", "x", tree)
    new, old = export_both(repo, commit, tmp_path)
    assert snapshot(new) == snapshot(old)
    assert snapshot(new)[b"sub"] == ("dir", 0o755, b"", NOW)
    assert snapshot(new)[b"odd/\xff\xfe-not-utf8"] == ("file", 0o644, b"hello\n", NOW)

    # The empty tree: nothing to write. (tarfile cannot open git archive's tar of it, which holds
    # only the pax global header, so the git path fails there.)
    empty = git_in("commit-tree", "-m", "empty", git_in("mktree", stdin=""))
    dest = tmp_path / "empty"
    dest.mkdir()
    assert store._export_with_library(repo, empty, dest) and not os.listdir(dest)
    with pytest.raises(store.GitError, match="end of file header"):
        asyncio.run(store._export_with_git(repo, empty, dest))


UNSAFE_LINKS = [
    ("abs", "/etc/passwd"),
    ("up", "../outside"),
    ("sub/upup", "../../outside"),
    ("sub/dotdot", "../sub/../.."),
    ("deep", "a/b/../../../x"),
]


@pytest.mark.parametrize(("name", "target"), UNSAFE_LINKS)
def test_export_refuses_links_that_lead_outside(tmp_path: Path, name: str, target: str) -> None:
    repo, files = tmp_path / "r.git", tmp_path / "files"
    write(files / "sub" / "f", "f\n")
    os.symlink(target, files / name)
    commit = commit_files(repo, files)
    old = tmp_path / "old"
    old.mkdir()
    with pytest.raises(store.GitError):
        asyncio.run(store._export_with_git(repo, commit, old))
    new = tmp_path / "new"
    new.mkdir()
    with pytest.raises(store.GitError, match="refused"):
        store._export_with_library(repo, commit, new)
    assert not os.path.lexists(new / name)


def test_export_checks_links_against_what_is_on_disk(tmp_path: Path) -> None:
    """A link is judged through the links written before it: `a` -> `sub`, then `b` ->
    `a/../..`, which escapes via `sub` (`sub/../..`) though it reads as inside."""
    repo, files = tmp_path / "r.git", tmp_path / "files"
    write(files / "sub" / "f", "f\n")
    os.symlink("sub", files / "a")
    os.symlink("a/../..", files / "b")
    commit = commit_files(repo, files)
    for export in (store._export_with_library, lambda r, c, d: asyncio.run(store._export_with_git(r, c, d))):
        dest = tmp_path / f"dest-{id(export)}"
        dest.mkdir()
        with pytest.raises(store.GitError):
            export(repo, commit, dest)


def test_export_judges_links_by_what_later_entries_make_of_them(tmp_path: Path) -> None:
    """`a` -> `b/b/b/x/y/z/../../../../../..` reads as the destination while `b` does not exist
    yet, and so passes a check of where it resolves at its turn (tarfile's data filter let it
    through); once `b` -> `.` is written, it leads three levels above the destination. A job
    directory's third parent is the data dir, and staging chmods what the job's links lead to."""
    repo, files = tmp_path / "r.git", tmp_path / "files"
    write(files / "x" / "y" / "z" / "f", "f\n")
    os.symlink("b/b/b/x/y/z/../../../../../..", files / "a")
    os.symlink(".", files / "b")
    commit = commit_files(repo, files)
    for name, export in (
        ("library", store._export_with_library),
        ("git", lambda r, c, d: asyncio.run(store._export_with_git(r, c, d))),
    ):
        dest = tmp_path / name / "jobs" / "1" / "submission"
        dest.mkdir(parents=True)
        with pytest.raises(store.GitError, match="could lead outside"):
            export(repo, commit, dest)
        assert not os.path.lexists(dest / "a") and not os.path.lexists(dest / "b")


def test_staging_never_changes_modes_through_links(tmp_path: Path) -> None:
    """The job directory is opened to the sandbox's uid by chmod, which follows links: a link in
    a submission must not make its target (anything the service can reach) world-writable."""
    from grader_service.storage.staging import open_to_sandbox

    outside = tmp_path / "service-secret"
    write(outside, "s\n", 0o600)
    (tmp_path / "service-dir").mkdir(mode=0o700)
    job = tmp_path / "job"
    write(job / "submission" / "nb.ipynb", "{}\n")
    os.symlink(outside, job / "submission" / "to-file")
    os.symlink(tmp_path / "service-dir", job / "submission" / "to-dir")
    open_to_sandbox(job)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "service-dir").stat().st_mode) == 0o700
    assert stat.S_IMODE((job / "submission" / "nb.ipynb").stat().st_mode) == 0o666


# Hostile tar archives: what `_export_with_git` does with a tar that git did not write.


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x\n", **attrs: object) -> tuple:
    return name, kind, data, attrs


def tar_of(*members: tuple) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, attrs in members:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = kind, NOW, 0o664
            for key, value in attrs.items():
                setattr(info, key, value)
            if kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path]:
    """A destination inside `jobs/1/submission`, and an `outside` directory with a file in it."""
    outside = tmp_path / "outside"
    write(outside / "secret", "s\n", 0o600)
    dest = tmp_path / "jobs" / "1" / "submission"
    dest.mkdir(parents=True)
    return dest, outside


HOSTILE_TARS = {
    "absolute name": lambda out: [member(str(out / "evil"))],
    "climbs out": lambda out: [member("../../../outside/evil")],
    "climbs out from a directory": lambda out: [member("sub", tarfile.DIRTYPE), member("sub/../../evil")],
    "dot part": lambda out: [member("./evil")],
    "empty part": lambda out: [member("sub//evil")],
    "absolute link": lambda out: [member("l", tarfile.SYMTYPE, linkname=str(out))],
    "link climbs out": lambda out: [member("l", tarfile.SYMTYPE, linkname="../../../outside")],
    "file through an outside link": lambda out: [
        member("l", tarfile.SYMTYPE, linkname=str(out)),
        member("l/evil"),
    ],
    "file through an inside link": lambda out: [
        member("sub", tarfile.DIRTYPE),
        member("l", tarfile.SYMTYPE, linkname="sub"),
        member("l/f"),
    ],
    "link then a file of its name": lambda out: [
        member("l", tarfile.SYMTYPE, linkname=str(out / "secret")),
        member("l", data=b"overwritten\n"),
    ],
    "link made outside by a later link": lambda out: [
        member("a", tarfile.SYMTYPE, linkname="b/b/b/x/../../../.."),
        member("b", tarfile.SYMTYPE, linkname="."),
        member("x", tarfile.DIRTYPE),
    ],
    "hard link out": lambda out: [member("h", tarfile.LNKTYPE, linkname=str(out / "secret"))],
    "hard link in": lambda out: [member("f"), member("h", tarfile.LNKTYPE, linkname="f")],
    "character device": lambda out: [member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)],
    "block device": lambda out: [member("disk", tarfile.BLKTYPE, devmajor=8, devminor=0)],
    "fifo": lambda out: [member("pipe", tarfile.FIFOTYPE)],
    "git directory": lambda out: [member(".git", tarfile.DIRTYPE), member(".git/config")],
    "file under a file": lambda out: [member("f"), member("f/g")],
}


@pytest.mark.parametrize("case", HOSTILE_TARS)
def test_hostile_tar_is_refused_and_nothing_lands_outside(hostile: tuple[Path, Path], case: str) -> None:
    dest, outside = hostile
    before = snapshot(outside.parent)
    with pytest.raises(store.GitError, match="refuse"):
        store._extract(tar_of(*HOSTILE_TARS[case](outside)), dest, "0" * 40)
    # Nothing outside the destination changed; no link left in it leads anywhere.
    after = snapshot(outside.parent)
    assert {k: v for k, v in after.items() if not k.startswith(b"jobs/")} == {
        k: v for k, v in before.items() if not k.startswith(b"jobs/")
    }
    assert (outside / "secret").read_text() == "s\n"
    assert stat.S_IMODE((outside / "secret").stat().st_mode) == 0o600
    assert not [p for p in dest.rglob("*") if p.is_symlink()]


def test_tar_modes_and_owners_are_the_services(hostile: tuple[Path, Path]) -> None:
    """Set-id and sticky bits, group and world write, and the archive's owners are all dropped."""
    dest, _ = hostile
    tar = tar_of(
        member("suid", mode=0o4777, uid=0, gid=0),
        member("sgid", mode=0o2666, uid=4242, gid=4242, uname="root", gname="root"),
        member("private", mode=0o600),
        member("dir", tarfile.DIRTYPE, mode=0o7777),
        member("dir/f", mode=0o1755),
        member("ok-link", tarfile.SYMTYPE, linkname="dir/f"),
    )
    store._extract(tar, dest, "0" * 40)
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in dest.rglob("*") if not p.is_symlink()}
    umask = os.umask(0)
    os.umask(umask)
    assert modes == {"suid": 0o755, "sgid": 0o644, "private": 0o644, "dir": 0o777 & ~umask, "f": 0o755}
    assert {p.lstat().st_uid for p in dest.rglob("*")} == {os.getuid()}
    assert os.readlink(dest / "ok-link") == "dir/f" and (dest / "ok-link").read_text() == "x\n"
    assert (dest / "suid").stat().st_mtime == NOW


def test_export_reads_packed_objects(tmp_path: Path) -> None:
    repo, files = tmp_path / "r.git", tmp_path / "files"
    exportable_tree(files)
    commit = commit_files(repo, files)
    update(repo, commit, None)
    loose = tmp_path / "loose"
    loose.mkdir()
    asyncio.run(store.export(repo, commit, loose))

    run_git("--git-dir", repo, "gc", "--quiet", "--prune=now")
    assert not loose_objects(repo)
    packed = tmp_path / "packed"
    packed.mkdir()
    assert store._export_with_library(repo, commit, packed)
    assert snapshot(packed) == snapshot(loose)

    # Partly packed: a new commit's new objects are loose, the ones it shares stay in the pack
    # (an object found in a pack is not written again).
    write(files / "nb.ipynb", '{"cells": [1]}\n')
    second = commit_files(repo, files, "two", commit)
    assert loose_objects(repo)
    blob = run_git("--git-dir", repo, "rev-parse", f"{second}:deep/sibling.txt")
    assert not (repo / "objects" / blob[:2] / blob[2:]).exists()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    assert store._export_with_library(repo, second, mixed)
    expected = tmp_path / "expected"
    expected.mkdir()
    asyncio.run(store._export_with_git(repo, second, expected))
    assert snapshot(mixed) == snapshot(expected)
    assert (mixed / "nb.ipynb").read_text() == '{"cells": [1]}\n'


def test_export_leaves_gitattributes_to_git(tmp_path: Path) -> None:
    repo, files = tmp_path / "r.git", tmp_path / "files"
    write(files / ".gitattributes", "secret.txt export-ignore\n")
    write(files / "secret.txt", "s\n")
    write(files / "kept.txt", "k\n")
    commit = commit_files(repo, files)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert not store._export_with_library(repo, commit, dest)
    asyncio.run(store.export(repo, commit, dest))
    assert sorted(os.listdir(dest)) == [".gitattributes", "kept.txt"]


@pytest.mark.parametrize("damage", ["other content", "flipped byte", "truncated"])
def test_export_refuses_corrupt_objects(tmp_path: Path, damage: str) -> None:
    repo, files = tmp_path / "r.git", tmp_path / "files"
    write(files / "a.txt", "a\n")
    write(files / "b.txt", "the original content of b\n" * 20)
    commit = commit_files(repo, files)
    sha = run_git("--git-dir", repo, "rev-parse", f"{commit}:b.txt")
    path = repo / "objects" / sha[:2] / sha[2:]
    stored = path.read_bytes()
    if damage == "other content":  # a valid object, under a name that is not its hash
        raw = b"the altered content of b\n" * 20
        stored = zlib.compress(b"blob %d\0" % len(raw) + raw)
    elif damage == "flipped byte":
        stored = stored[:20] + bytes([stored[20] ^ 0x01]) + stored[21:]
    else:
        stored = stored[: len(stored) // 2]
    path.chmod(0o644)
    path.write_bytes(stored)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(store.GitError, match="corrupt"):
        asyncio.run(store.export(repo, commit, dest))
    assert not os.listdir(dest)  # the whole tree is read before anything is written


def test_object_with_a_wrong_size_is_corrupt(tmp_path: Path) -> None:
    repo = tmp_path / "r.git"
    asyncio.run(store.ensure_repo(repo))
    raw = b"blob 5\0abc"  # its hash matches, its header lies
    sha = hashlib.sha1(raw).hexdigest()
    write(repo / "objects" / sha[:2] / sha[2:], zlib.compress(raw))
    opened = store._open(repo)
    with pytest.raises(store.GitError, match="corrupt"):
        store._object(opened, sha)
    assert store._object(opened, "0" * 40) is None


def test_update_branch_refuses_a_corrupt_commit(tmp_path: Path) -> None:
    repo = tmp_path / "r.git"
    (commit,) = commit_chain(repo, tmp_path, 1)
    path = repo / "objects" / commit[:2] / commit[2:]
    path.chmod(0o644)
    path.write_bytes(zlib.compress(b"commit 3\0abc"))
    with pytest.raises(store.GitError, match="corrupt"):
        update(repo, commit, None)
    assert branch(repo) == "" and no_lock_left(repo)


def test_commit_on_branch_loses_no_commit_to_a_racing_writer(tmp_path: Path) -> None:
    """Writers that do not share a lock (replicas): each reads the branch, commits on it and swaps.
    All read the same head here (one loop, the reads queued before any commit), so all but one
    lose the first swap; each loser commits again on the winner's commit."""
    repo = tmp_path / "race.git"
    asyncio.run(store.ensure_repo(repo))
    racers = 6
    for i in range(racers):
        write(tmp_path / f"files{i}" / "answer.txt", f"racer {i}\n")

    async def race() -> list[tuple[str, str | None]]:
        return await asyncio.gather(
            *(store.commit_on_branch(repo, tmp_path / f"files{i}", f"r{i}") for i in range(racers))
        )

    results = asyncio.run(race())
    history = run_git("--git-dir", repo, "rev-list", "--first-parent", store.BRANCH).split()
    assert sorted(history) == sorted(commit for commit, _ in results)
    assert run_git("--git-dir", repo, "rev-list", "--merges", store.BRANCH) == ""
    for i, (commit, parent) in enumerate(results):
        assert run_git("--git-dir", repo, "show", f"{commit}:answer.txt") == f"racer {i}"
        assert parent == (run_git("--git-dir", repo, "rev-parse", f"{commit}^") if parent else None)
    objects = run_git("--git-dir", repo, "cat-file", "--batch-all-objects", "--batch-check=%(objecttype)")
    assert objects.split().count("commit") > racers  # the lost races really happened, and were retried
