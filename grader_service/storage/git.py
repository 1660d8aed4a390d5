"""Git repositories holding uploaded sources, released versions and submissions.

A submission is on the service's hot path, and every git process costs a fork/exec of the whole
service process plus git's own start-up, so the hot paths spawn none: they go through libgit2
(pygit2), which reads and writes git's own formats, so git and the service share the repositories:

- `commit_directory` stores a directory as blobs, trees and a commit, the objects
  `git add --all --force .` + `write-tree` + `commit-tree -m` would write (the same hashes). No
  working tree, index, user config or hooks are involved, and the branch is not moved. Names git
  would refuse are refused first (`_check_name`: libgit2 refuses fewer of the spellings that some
  file system reads as `.git`).
- `ensure_repo` has libgit2 make a bare repository under a temporary name, with our settings, and
  renames it into place.
- `head` reads the branch, and `update_branch`/`revert_branch` move or delete it only if it still
  has the value the caller expects: libgit2 takes git's lock (`refs/heads/main.lock`), compares
  the current value (loose or packed) under it and writes, so git and the service interleave
  safely; a lock held by someone else is waited for as git waits (core.filesRefLockTimeout).
- `export` reads the commit's tree through libgit2 (loose or packed objects, each checked against
  its name) and writes the files as `git archive` + `tar -x` would. `.gitattributes` (which git
  archive obeys) or anything else unusual is handed to git archive for the whole export, whose tar
  is read member by member here. Both end in one writer, `_write_entries`, which refuses what could
  reach outside the destination (absolute or `..` paths, writing through a link, links that lead
  out, devices, hard links) and sets every mode itself.

Git stays for the rare paths (zip download, file listing): there it costs little.

Blocking work runs in a thread (`asyncio.to_thread`), each call with a repository of its own
(libgit2 objects are not shared between threads), and git runs as an asyncio subprocess, so the
event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import secrets
import shutil
import stat
import tarfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pygit2
from pygit2.enums import ConfigLevel, FileMode, ObjectType, Option, ReferenceType, RepositoryOpenFlag

BRANCH = "refs/heads/main"
IDENTITY = ("grader-service", "grader-service@localhost")
_EMPTY_ENV_KEYS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")
_SHA = re.compile(r"[0-9a-f]{40}")
# Set in a new repository's config: no hooks ever run, and no automatic gc, which would otherwise
# start inside a request.
_SETTINGS = {"core.hooksPath": os.devnull, "gc.auto": "0"}
# A repository is always opened at the path given, never found by searching upwards, and as bare.
_OPEN_FLAGS = RepositoryOpenFlag.NO_SEARCH | RepositoryOpenFlag.BARE


def _isolate_libgit2() -> None:
    """Make libgit2 read no system, XDG or user config (as `GIT_CONFIG_NOSYSTEM` and
    `GIT_CONFIG_GLOBAL=/dev/null` do for git), and open our repositories without checking who owns
    them: the service names each path itself and never discovers one, like `git --git-dir`."""
    for level in (ConfigLevel.SYSTEM, ConfigLevel.XDG, ConfigLevel.GLOBAL, ConfigLevel.PROGRAMDATA):
        pygit2.settings.search_path[level] = ""
    pygit2.option(Option.SET_OWNER_VALIDATION, 0)


_isolate_libgit2()


class GitError(RuntimeError):
    pass


def _env() -> dict[str, str]:
    """The service's environment, without anything pointing git elsewhere or at user config."""
    env = {k: v for k, v in os.environ.items() if k not in _EMPTY_ENV_KEYS}
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"})
    return env


async def git(*args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise GitError(f"git {args[0]} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
    return out


def _open(repo: Path) -> pygit2.Repository:
    try:
        return pygit2.Repository(repo, _OPEN_FLAGS)
    except pygit2.GitError as e:
        raise GitError(f"cannot open repository {repo}: {e}") from None


def _object(repo: pygit2.Repository, sha: str | pygit2.Oid) -> pygit2.Object | None:
    """The object, or None if the repository does not have it. A damaged object is an error,
    never data: libgit2 checks every object it reads against its name."""
    _check_loose(Path(repo.path), str(sha))
    try:
        return repo.get(sha)
    except pygit2.GitError as e:
        raise GitError(f"object {sha} is corrupt: {e}") from None


def _check_loose(gitdir: Path, sha: str) -> None:
    """Refuse a damaged loose object before libgit2 reads it: libgit2 1.9 loops forever on a
    truncated zlib stream (libgit2 issue 7342, fixed after 1.9.7), and writes past its buffer
    when the header states fewer bytes than follow (issue 7177). An object after a crash
    without fsync can be either. A complete stream whose header states its size passes; whether
    its content matches its name libgit2 checks. Remove once the bundled libgit2 has both fixes.
    """
    try:
        with open(gitdir / "objects" / sha[:2] / sha[2:], "rb") as f:
            stored = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return  # not loose: packed (packs carry their own checksums), or not there
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(stored)
    except zlib.error as e:
        raise GitError(f"object {sha} is corrupt: {e}") from None
    header, _, body = raw.partition(b"\0")
    size = header.partition(b" ")[2]
    if not inflate.eof or inflate.unused_data or size != b"%d" % len(body):
        raise GitError(f"object {sha} is corrupt: truncated, or its header does not match its size")


async def ensure_repo(repo: Path) -> None:
    """Create a bare repository if it does not exist yet (see `_init_repo`)."""
    if (repo / "HEAD").exists():
        return
    await asyncio.to_thread(_init_repo, repo)


def _init_repo(repo: Path) -> None:
    """A bare repository whose HEAD names `BRANCH`, with `_SETTINGS` in its config.

    It is made under a temporary name and renamed into place, so it either does not exist or is
    complete (never without its settings after a crash, never half-made for a racing creator,
    whose rename then fails and who finds ours).
    """
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = repo.with_name(f".{repo.name}.init-{secrets.token_hex(6)}")
    try:
        made = pygit2.init_repository(tmp, bare=True, initial_head=BRANCH.removeprefix("refs/heads/"))
        for key, value in _SETTINGS.items():
            made.config[key] = value
        del made  # closes its files before the rename
        try:
            os.rename(tmp, repo)
        except OSError:
            if not (repo / "HEAD").exists():
                raise
            # Someone else created it meanwhile: theirs is as good.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def head(repo: Path) -> str | None:
    """The branch's commit, or None if there is none yet; no process."""
    return await asyncio.to_thread(_read_branch, repo)


def _read_branch(repo: Path) -> str | None:
    if not (repo / "HEAD").exists():
        return None  # no repository yet
    ref = _branch(_open(repo))
    return None if ref is None else str(ref.target)


def _branch(repo: pygit2.Repository) -> pygit2.Reference | None:
    """The branch (a loose ref, else the one in packed-refs, as in git), or None."""
    try:
        ref = repo.references.get(BRANCH)
    except (pygit2.GitError, ValueError) as e:
        raise GitError(f"{BRANCH} in {repo.path} cannot be read: {e}") from None
    if ref is not None and ref.type != ReferenceType.DIRECT:
        raise GitError(f"{BRANCH} in {repo.path} is not a commit id but a link to {ref.target!r}")
    return ref


def _now() -> int:
    """The commit time in whole seconds (tests fix it to compare hashes with git's)."""
    return int(time.time())


async def commit_directory(repo: Path, directory: Path, message: str, parent: str | None) -> str:
    """Write `directory`'s files as a commit object in `repo`; the branch is not moved.

    The objects are the ones `git add --all --force .`, `write-tree` and `commit-tree -m` would
    write, written by libgit2 in a thread.
    """
    if parent and not _SHA.fullmatch(parent):
        raise GitError(f"parent {parent[:80]!r} is not a commit id")
    if "\0" in message:
        raise ValueError("a commit message cannot contain NUL")
    await ensure_repo(repo)
    return await asyncio.to_thread(_write_commit, repo, os.fsencode(directory), message, parent, _now())


def _write_commit(path: Path, directory: bytes, message: str, parent: str | None, now: int) -> str:
    repo = _open(path)
    tree = _write_tree(repo, directory, b"") or repo.TreeBuilder().write()
    signature = pygit2.Signature(*IDENTITY, now, 0)
    if message and not message.endswith("\n"):
        message += "\n"  # commit-tree -m completes the last line
    parents = [pygit2.Oid(hex=parent)] if parent else []
    try:
        return str(repo.create_commit(None, signature, signature, message, tree, parents))
    except pygit2.GitError as e:
        raise GitError(f"committing in {path} failed: {e}") from None


def _write_tree(repo: pygit2.Repository, directory: bytes, prefix: bytes) -> pygit2.Oid | None:
    """Store `directory` as a tree, by git's rules; None if it holds no file (git records no
    empty directory). `prefix` is its path in the tree, for messages.

    Files are 100644, or 100755 if the owner may execute them; symbolic links are 120000 with the
    target as content; other file types are skipped, and so is anything named `.git`, which git's
    directory walk never enters (uploads refuse `.git` anyway, so no embedded repository, which
    git would record as a submodule link, can come here). Contents are stored as they are: git
    would apply `.gitattributes` filters, but uploads refuse that file too. libgit2 orders the
    entries as git does.
    """
    builder = repo.TreeBuilder()
    with os.scandir(directory) as found:
        for entry in found:
            path = prefix + entry.name
            if entry.name == b".git":
                continue
            if entry.is_symlink():
                _check_name(path, symlink=True)
                _insert(builder, path, repo.create_blob(os.readlink(entry.path)), FileMode.LINK)
            elif entry.is_dir(follow_symlinks=False):
                tree = _write_tree(repo, entry.path, path + b"/")
                if tree is not None:
                    _check_name(path, symlink=False)
                    _insert(builder, path, tree, FileMode.TREE)
            elif entry.is_file(follow_symlinks=False):
                _check_name(path, symlink=False)
                executable = entry.stat(follow_symlinks=False).st_mode & stat.S_IXUSR
                with open(entry.path, "rb") as f:
                    blob = repo.create_blob(f.read())
                _insert(builder, path, blob, FileMode.BLOB_EXECUTABLE if executable else FileMode.BLOB)
    return builder.write() if len(builder) else None


def _insert(builder: pygit2.TreeBuilder, path: bytes, oid: pygit2.Oid, mode: FileMode) -> None:
    """Add the last part of `path` to the tree. libgit2 takes names as UTF-8 only; uploads only
    make such names (zip and query strings give text), so another name is refused."""
    try:
        name = path.rpartition(b"/")[2].decode()
    except UnicodeDecodeError:
        raise GitError(f"invalid path {path[:200]!r}: file names must be UTF-8") from None
    try:
        builder.insert(name, oid, mode)
    except pygit2.GitError as e:
        raise GitError(f"invalid path {path[:200]!r}: {e}") from None


def _check_name(path: bytes, symlink: bool) -> None:
    """Refuse the names `git add` refuses (read-cache.c `verify_path`, with core.protectNTFS,
    which git enables on every platform), so no tree is written that git would not write and
    `git fsck` would flag: `.git` in any case, also with trailing dots or spaces or an NTFS stream
    (`.git. `, `.GIT::$INDEX_ALLOCATION`) or as the short name `git~1`, and for a symbolic link
    the same spellings of `.gitmodules`. Git checks after every backslash too.
    """
    name = path.rpartition(b"/")[2]
    starts = [name] + [name[i + 1 :] for i, c in enumerate(name) if c == ord("\\")]
    for s in starts:
        if _is_ntfs_dotgit(s) or (symlink and _is_ntfs_dotgitmodules(s)):
            raise GitError(f"invalid path {path.decode(errors='replace')!r}: git refuses it")


def _is_ntfs_dotgit(name: bytes) -> bool:
    lower = name.lower()
    for spelling in (b".git", b"git~1"):
        if lower.startswith(spelling):
            rest = re.split(rb"[:\\]", lower[len(spelling) :], maxsplit=1)[0]
            return not rest.strip(b". ")
    return False


def _is_ntfs_dotgitmodules(name: bytes) -> bool:
    lower = name.lower()
    if lower.startswith(b".gitmodules"):
        rest = lower[11:]
    elif lower[:7] == b"gitmod~" and lower[7:8] in (b"1", b"2", b"3", b"4"):
        rest = lower[8:]
    else:
        # NTFS's fall-back short name: 8 characters, a prefix of "gi7eba", "~", then digits, no 0 first.
        tilde = lower.find(b"~", 0, 7)
        digits = lower[tilde + 1 : 8]
        if tilde < 0 or lower[:tilde] != b"gi7eba"[:tilde] or len(digits) != 7 - tilde:
            return False
        if not (digits.isdigit() and digits[0] != ord("0")):
            return False
        rest = lower[8:]
    return not rest.split(b":", 1)[0].strip(b". ")


async def update_branch(repo: Path, new: str, old: str | None) -> None:
    """Move the branch to `new` only if it still points at `old` (None: must not exist), as
    `git update-ref refs/heads/main new old` does (see `_compare_and_swap`)."""
    await asyncio.to_thread(_compare_and_swap, repo, new, old)


def _compare_and_swap(path: Path, new: str, old: str | None) -> None:
    """libgit2 moves the branch under git's lock: whoever creates `<ref>.lock` (O_EXCL) owns the
    ref until the lock is renamed over it or removed; the owner compares the current value (loose
    ref, else packed-refs) with the one expected, writes the new value into the lock and renames it
    into place. No reflog: bare repositories keep none (core.logAllRefUpdates is false for them).

    Only a commit goes on the branch, as git's update-ref requires, named by its full id.
    """
    for sha in (new, old):
        if sha is not None and not _SHA.fullmatch(sha):
            raise GitError(f"{sha[:80]!r} is not a commit id")
    repo = _open(path)
    found = _object(repo, new)
    if found is None:
        raise GitError(f"{new} is not in {path}")
    if found.type != ObjectType.COMMIT:
        raise GitError(f"{new} is a {found.type_str}, not a commit")
    target = pygit2.Oid(hex=new)

    def swap() -> None:
        if old is None:
            repo.references.create(BRANCH, target)  # refused if the branch exists meanwhile
        else:
            _expect(repo, old).set_target(target)  # refused if it no longer points at `old`

    _under_ref_lock(path, swap)


# Processes racing to move one branch: each lost race commits again on the winner's commit.
BRANCH_RACE_ATTEMPTS = 8


async def commit_on_branch(repo: Path, directory: Path, message: str) -> tuple[str, str | None]:
    """Commit `directory` on top of the branch and move the branch there: (commit, parent).

    Another process (a replica) may move the branch between our read and our compare-and-swap:
    then the swap fails, and the files are committed again on top of the other's commit, so
    neither is lost. A swap that fails while the branch stayed where it was is an error.
    """
    for attempt in range(1, BRANCH_RACE_ATTEMPTS + 1):
        parent = await head(repo)
        commit = await commit_directory(repo, directory, message, parent)
        try:
            await update_branch(repo, commit, parent)
            return commit, parent
        except GitError:
            if attempt == BRANCH_RACE_ATTEMPTS or await head(repo) == parent:
                raise
    raise AssertionError("unreachable")


async def revert_branch(repo: Path, new: str, old: str | None) -> None:
    """Undo `update_branch(repo, new, old)` when the database refused to record the commit:
    move the branch back, or delete it, only while it still points at `new`."""
    if old is not None:
        await update_branch(repo, old, new)
        return

    def delete() -> None:
        opened = _open(repo)
        _under_ref_lock(repo, lambda: _expect(opened, new).delete())  # also from packed-refs

    await asyncio.to_thread(delete)


def _expect(repo: pygit2.Repository, sha: str) -> pygit2.Reference:
    """The branch, if it points at `sha`. libgit2 then changes or deletes it only if it still
    does, checked under the lock."""
    ref = _branch(repo)
    current = None if ref is None else str(ref.target)
    if ref is None or current != sha:
        raise GitError(f"cannot lock ref {BRANCH!r}: is at {current} but expected {sha}")
    return ref


# git's core.filesRefLockTimeout default: a locked ref is retried for this long before giving up.
_REF_LOCK_TIMEOUT = 0.1


def _under_ref_lock(repo: Path, change: Callable[[], object]) -> None:
    """Run `change` (which reads the branch afresh each time), retrying while someone else holds
    the branch's lock, for `_REF_LOCK_TIMEOUT` with git's growing back-off, as git does, so a
    short-lived holder (git or us) does not fail the update. libgit2 itself fails at once."""
    lock = repo / f"{BRANCH}.lock"
    deadline = time.monotonic() + _REF_LOCK_TIMEOUT
    attempt = 0
    while True:
        try:
            change()
            return
        except (pygit2.GitError, OSError) as e:  # a held lock is an OSError; AlreadyExistsError
            if not lock.exists():
                raise GitError(f"cannot update {BRANCH} in {repo}: {e}") from None
        attempt += 1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GitError(f"Unable to create '{lock}': File exists. Another git process seems to be running")
        time.sleep(min(attempt * attempt / 1000, remaining))


async def archive_zip(repo: Path, commit: str) -> bytes:
    """The commit's files as a zip archive."""
    return await git("--git-dir", str(repo), "archive", "--format=zip", commit)


async def list_files(repo: Path, commit: str) -> list[str]:
    out = await git("--git-dir", str(repo), "ls-tree", "-r", "-z", "--name-only", commit)
    return [name for name in out.decode().split("\0") if name]


async def export(repo: Path, commit: str, dest: Path) -> None:
    """Write the commit's files into `dest` (which must exist), as `_export_with_git` does.

    Read through libgit2 by a thread which reads the whole tree before writing anything, unless
    git archive's own rules apply (`_LeaveToGit`); then by git, for the whole export, never mixing
    the two.
    """
    if not await asyncio.to_thread(_export_with_library, repo, commit, dest):
        await _export_with_git(repo, commit, dest)


async def _export_with_git(repo: Path, commit: str, dest: Path) -> None:
    """git writes the tar archive; a thread reads it and writes its files (no `tar` process)."""
    tar = await git("--git-dir", str(repo), "archive", "--format=tar", commit)
    await asyncio.to_thread(_extract, tar, dest, commit)


def _extract(tar: bytes, dest: Path, commit: str) -> None:
    try:
        entries, mtime = _tar_entries(tar)
    except tarfile.TarError as e:
        raise GitError(f"extracting {commit[:12]} failed: {e}") from e
    _write_entries(os.fsencode(dest), entries, mtime)


def _tar_entries(tar: bytes) -> tuple[list[tuple[bytes, int, bytes]], int]:
    """A tar archive's members as `(path, kind, content)` entries for `_write_entries`, and their
    date (git archive dates every member at the commit time).

    Members are read, never extracted by tarfile (whose extraction filters need Python 3.11.4):
    only directories, regular files and symbolic links are accepted, under relative names without
    empty, `.` or `..` parts, each name once, and no name git itself would refuse. Owners and
    modes are not taken from the archive; a file is executable if its owner could execute it.
    """
    entries: list[tuple[bytes, int, bytes]] = []
    seen: set[bytes] = set()
    mtime = 0
    with tarfile.open(
        fileobj=io.BytesIO(tar), mode="r:", encoding="utf-8", errors="surrogateescape"
    ) as archive:
        for member in archive:
            path = member.name.encode("utf-8", "surrogateescape")
            if (
                path.startswith(b"/")
                or b"\0" in path
                or any(p in (b"", b".", b"..") for p in path.split(b"/"))
            ):
                raise GitError(f"archive member {path[:200]!r} has an unsafe name, refused")
            if path in seen:
                raise GitError(f"archive member {path[:200]!r} appears twice, refused")
            seen.add(path)
            _check_name(path, symlink=member.issym())
            if member.isdir():
                entries.append((path, _DIR, b""))
            elif member.isreg():
                data = archive.extractfile(member)
                assert data is not None  # a regular file always has data
                entries.append((path, _EXECUTABLE if member.mode & stat.S_IXUSR else _FILE, data.read()))
            elif member.issym():
                entries.append((path, _LINK, member.linkname.encode("utf-8", "surrogateescape")))
            else:
                kind = "a hard link" if member.islnk() else "a device, fifo or other special file"
                raise GitError(f"archive member {path[:200]!r} is {kind}, refused")
            mtime = max(mtime, int(member.mtime))
    return entries, mtime


class _LeaveToGit(Exception):
    """An export git must do: the tree needs git archive's rules (`.gitattributes`, odd modes)."""


_DIR, _FILE, _EXECUTABLE, _LINK = 0o40000, 0o100644, 0o100755, 0o120000
_GITLINK = 0o160000


def _export_with_library(path: Path, commit: str, dest: Path) -> bool:
    """Export through libgit2; False, with nothing written, if git must do it (`_LeaveToGit`)."""
    if not _SHA.fullmatch(commit) or (path / "info" / "attributes").exists():
        return False
    repo = _open(path)
    found = _object(repo, commit)
    if not isinstance(found, pygit2.Commit):
        return False  # not there (git says so), or a tree or tag, which git archive accepts too
    entries: list[tuple[bytes, int, bytes]] = []
    try:
        _read_tree(repo, _object(repo, found.tree_id), b"", entries)
    except _LeaveToGit:
        return False
    _write_entries(os.fsencode(dest), entries, found.committer.time)
    return True


def _read_tree(
    repo: pygit2.Repository,
    tree: pygit2.Object | None,
    prefix: bytes,
    entries: list[tuple[bytes, int, bytes]],
) -> None:
    """Append the tree's entries to `entries` as `(path, mode, content)` in git archive's order
    (a directory, then what it holds). A submodule link is an empty directory, as git archive
    writes it; names the writer would refuse, or that would not stay in their directory, are
    errors."""
    if not isinstance(tree, pygit2.Tree):
        raise GitError(f"{prefix[:200]!r} is missing or not a tree")
    names: set[bytes] = set()
    for item in tree:
        name, mode = item.raw_name, item.filemode
        if name is None:  # (pygit2 names every object it reads from a tree)
            raise GitError(f"tree {tree.id} has an entry without a name")
        path = prefix + name
        if name in (b"", b".", b"..") or b"/" in name or name in names:
            raise GitError(f"tree {tree.id} has an invalid or repeated name {path[:200]!r}")
        names.add(name)
        if name == b".gitattributes":
            raise _LeaveToGit  # git archive obeys its export-ignore and export-subst
        if mode in (_DIR, _GITLINK):
            _check_name(path, symlink=False)
            entries.append((path, _DIR, b""))
            if mode == _DIR:
                _read_tree(repo, _object(repo, item.id), path + b"/", entries)
            continue
        if mode not in (_FILE, _EXECUTABLE, _LINK):
            raise _LeaveToGit
        _check_name(path, symlink=mode == _LINK)
        blob = _object(repo, item.id)
        if not isinstance(blob, pygit2.Blob):
            raise GitError(f"{item.id} ({path[:200]!r}) is missing or not a blob")
        entries.append((path, mode, blob.data))


def _write_entries(dest: bytes, entries: list[tuple[bytes, int, bytes]], mtime: int) -> None:
    """Write the entries under `dest` as `tar -x` would with a 022 umask: directories with the
    default mode, files 0644 or 0755, every file and directory dated at the commit time (a
    directory last, deepest first, as writing into it changes its time), links as they are.

    Nothing is ever followed through a link: an entry is written only into `dest` or a directory
    that is really one (made here, or found by `lstat`), never through a link, even one this
    export wrote. Links are judged once everything is written, since a later entry can change
    where an earlier link leads (`_leads_outside`); if one could lead outside `dest`, every link
    written is removed again and the export fails.
    """
    directories: list[bytes] = []
    links: list[bytes] = []
    try:
        _write_all(dest, entries, mtime, directories, links)
        for path, kind, content in entries:
            if kind == _LINK and _leads_outside(dest, path, content):
                raise GitError(
                    f"link {path[:200]!r} points to {content[:200]!r}, which could lead outside: refused"
                )
    except BaseException:
        for path in links:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(dest, path))
        raise
    for directory in sorted(directories, reverse=True):
        os.utime(directory, (mtime, mtime), follow_symlinks=False)


def _write_all(
    dest: bytes,
    entries: list[tuple[bytes, int, bytes]],
    mtime: int,
    directories: list[bytes],
    links: list[bytes],
) -> None:
    """Write every entry, noting the directories and links written."""
    real = {b""}  # directories (relative to dest) known not to be links
    for path, kind, content in entries:
        _ensure_directory(dest, path.rpartition(b"/")[0], real)
        target = os.path.join(dest, path)
        if kind == _DIR:
            try:
                os.mkdir(target)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(target).st_mode):
                    raise GitError(f"{target!r} is in the way of a directory") from None
            real.add(path)
            directories.append(target)
        elif kind == _LINK:
            if os.path.lexists(target):
                os.unlink(target)
            os.symlink(content, target)
            links.append(path)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                os.fchmod(fd, 0o755 if kind == _EXECUTABLE else 0o644)
            os.utime(target, (mtime, mtime), follow_symlinks=False)


def _ensure_directory(dest: bytes, path: bytes, real: set[bytes]) -> None:
    """Make sure `dest/path` is a directory and none of its parts is a link (creating missing
    parts, as tar does for a member listed without its directory)."""
    if path in real:
        return
    _ensure_directory(dest, path.rpartition(b"/")[0], real)
    where = os.path.join(dest, path)
    try:
        mode = os.lstat(where).st_mode
    except FileNotFoundError:
        os.mkdir(where)
    else:
        if not stat.S_ISDIR(mode):
            kind = "a link" if stat.S_ISLNK(mode) else "not a directory"
            raise GitError(f"{path[:200]!r} is {kind}: nothing is written through it, refused")
    real.add(path)


def _leads_outside(dest: bytes, link: bytes, target: bytes) -> bool:
    """Whether following `link` (a path under `dest`) could lead outside `dest`: its target is
    empty or absolute, climbs above `dest`, or climbs (`..`) after passing through a link, where
    `..` leaves the link's target rather than the directory it reads as. A `..` is safe only
    where the path so far is real, which is checked against the files as written.

    (Resolving the final path instead, as tarfile's data filter does, is fooled by a link written
    before the links it passes through: `a -> b/x/../..` then `b -> .` reads as `dest` but leads to
    its parent.)
    """
    if not target or os.path.isabs(target) or b"\0" in target:
        return True
    parts = [p for p in target.split(b"/") if p not in (b"", b".")]
    last_up = max((i for i, p in enumerate(parts) if p == b".."), default=-1)
    where = link.split(b"/")[:-1]  # the link's directory: a real one (`_ensure_directory`)
    for part in parts[: last_up + 1]:
        if part == b"..":
            if not where:
                return True
            where.pop()
        else:
            where.append(part)
            if os.path.islink(os.path.join(dest, *where)):
                return True  # a `..` follows this link
    return False


class RepoLocks:
    """One asyncio lock per repository, so commit-then-move-branch sequences never interleave."""

    def __init__(self) -> None:
        self._locks: dict[Path, asyncio.Lock] = {}

    def __call__(self, repo: Path) -> asyncio.Lock:
        return self._locks.setdefault(repo, asyncio.Lock())
