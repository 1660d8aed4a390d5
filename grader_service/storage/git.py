"""Git repositories holding uploaded sources, released versions and submissions.

A submission is on the service's hot path, and every git process costs a fork/exec of the whole
service process plus git's own start-up, so the hot paths spawn none; what they do is done in
Python, by git's own rules and file formats, so git reads and writes the same repositories:

- Commits are written as loose objects straight into `objects/xx/...` (blobs, trees, then the
  commit), built by the same rules as `git add --all --force .` + `write-tree` + `commit-tree -m`,
  so the hashes are the ones git itself would produce. No working tree, index, user config or hooks
  are involved, and the branch is not moved.
- A new repository is the few files and directories `git init --bare --template=` writes, plus our
  settings, built under a temporary name and renamed into place.
- `head` reads the branch's ref file (or `packed-refs`), and `update_branch` moves it with git's
  lock-file protocol: a compare-and-swap under `refs/heads/main.lock`, which git itself honours and
  creates, so it stays safe against anything else touching the repository.
- `export` reads loose objects (checked against their names) and writes the files as `git archive`
  + `tar -x` would. A packed repository (after `git gc`), `.gitattributes` (which git archive
  obeys) or anything else unexpected is handed to git archive for the whole export, whose tar is
  read member by member here. Both end in one writer, `_write_entries`, which refuses what could
  reach outside the destination (absolute or `..` paths, writing through a link, links that lead
  out, devices, hard links) and sets every mode itself.

Git stays for the rare paths (zip download, file listing, deleting the branch): there it costs
little and saves reimplementing pack files.

Blocking file work runs in a thread (`asyncio.to_thread`) and git runs as an asyncio subprocess,
so the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

BRANCH = "refs/heads/main"
IDENTITY = b"grader-service <grader-service@localhost>"
_EMPTY_ENV_KEYS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")
_SHA = re.compile(r"[0-9a-f]{40}")
# Appended to a new repository's config (git config files may repeat a section): no hooks ever run,
# and no automatic gc, which would otherwise start inside a request.
_SETTINGS = f"[core]\n\thooksPath = {os.devnull}\n[gc]\n\tauto = 0\n"
# What `git init --bare` writes on a file system with modes, symbolic links and case-sensitive
# names (which the service needs anyway; git would add `symlinks = false` or `ignorecase = true`).
_GIT_INIT_CONFIG = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"


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


async def ensure_repo(repo: Path) -> None:
    """Create a bare repository if it does not exist yet (see `_init_repo`)."""
    if (repo / "HEAD").exists():
        return
    await asyncio.to_thread(_init_repo, repo)


def _init_repo(repo: Path) -> None:
    """Write what `git init --quiet --bare --template= --initial-branch=main` writes (no template:
    git's sample hooks and description would be copied only to never run), with `_SETTINGS`
    appended to the config, as the service did when it ran that command.

    The repository is built under a temporary name and renamed into place, so it either does not
    exist or is complete (never without its settings after a crash, never half-made for a racing
    creator, whose rename then fails and who finds ours).
    """
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = repo.with_name(f".{repo.name}.init-{secrets.token_hex(6)}")
    try:
        for directory in ("objects/info", "objects/pack", "refs/heads", "refs/tags"):
            (tmp / directory).mkdir(parents=True)
        (tmp / "HEAD").write_bytes(b"ref: %s\n" % BRANCH.encode())
        (tmp / "config").write_text(_GIT_INIT_CONFIG + _SETTINGS, encoding="utf-8")
        try:
            os.rename(tmp, repo)
        except OSError:
            if not (repo / "HEAD").exists():
                raise
            # Someone else created it meanwhile: theirs is as good.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def head(repo: Path) -> str | None:
    """The branch's commit, or None if there is none yet; read from the ref files, no process."""
    return await asyncio.to_thread(_read_branch, repo)


def _read_branch(repo: Path) -> str | None:
    # A loose ref wins over packed-refs, as in git; `git gc`/`git pack-refs` move it to packed-refs.
    try:
        sha = (repo / BRANCH).read_bytes().decode(errors="replace").strip()
    except FileNotFoundError:
        try:
            packed = (repo / "packed-refs").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return None
        for line in packed.splitlines():
            sha, _, name = line.partition(" ")
            if name == BRANCH:
                break
        else:
            return None
    if not _SHA.fullmatch(sha):
        raise GitError(f"{BRANCH} in {repo} is not a commit id: {sha[:80]!r}")
    return sha


def _now() -> int:
    """The commit time in whole seconds (tests fix it to compare hashes with git's)."""
    return int(time.time())


async def commit_directory(repo: Path, directory: Path, message: str, parent: str | None) -> str:
    """Write `directory`'s files as a commit object in `repo`; the branch is not moved.

    The objects are written in Python (see the module docstring) by a thread, and are the same
    objects `git add --all --force .`, `write-tree` and `commit-tree -m` would write.
    """
    if parent and not _SHA.fullmatch(parent):
        raise GitError(f"parent {parent[:80]!r} is not a commit id")
    if "\0" in message:
        raise ValueError("a commit message cannot contain NUL")
    await ensure_repo(repo)
    return await asyncio.to_thread(
        _write_commit, repo / "objects", os.fsencode(directory), message.encode(), parent, _now()
    )


def _write_commit(objects: Path, directory: bytes, message: bytes, parent: str | None, now: int) -> str:
    tree = _write_tree(objects, directory, b"") or _write_object(objects, b"tree", b"")
    signature = b"%s %d +0000" % (IDENTITY, now)
    body = b"tree %s\n" % tree.hex().encode()
    if parent:
        body += b"parent %s\n" % parent.encode()
    body += b"author %s\ncommitter %s\n\n%s" % (signature, signature, message)
    if message and not message.endswith(b"\n"):
        body += b"\n"  # commit-tree -m completes the last line
    return _write_object(objects, b"commit", body).hex()


def _write_tree(objects: Path, directory: bytes, prefix: bytes) -> bytes | None:
    """Store `directory` as a tree, by git's rules; None if it holds no file (git records no
    empty directory). `prefix` is its path in the tree, for messages.

    Files are 100644, or 100755 if the owner may execute them; symbolic links are 120000 with the
    target as content; other file types are skipped, and so is anything named `.git`, which git's
    directory walk never enters (uploads refuse `.git` anyway, so no embedded repository, which
    git would record as a submodule link, can come here). Contents are stored as they are: git
    would apply `.gitattributes` filters, but uploads refuse that file too.
    """
    entries: list[tuple[bytes, bytes, bytes, bytes]] = []  # (sort key, mode, name, object id)
    with os.scandir(directory) as found:
        for entry in found:
            name = entry.name
            if name == b".git":
                continue
            if entry.is_symlink():
                _check_name(prefix + name, symlink=True)
                entries.append(
                    (name, b"120000", name, _write_object(objects, b"blob", os.readlink(entry.path)))
                )
            elif entry.is_dir(follow_symlinks=False):
                tree = _write_tree(objects, entry.path, prefix + name + b"/")
                if tree is not None:
                    _check_name(prefix + name, symlink=False)
                    # Git orders a directory as if its name ended in "/".
                    entries.append((name + b"/", b"40000", name, tree))
            elif entry.is_file(follow_symlinks=False):
                _check_name(prefix + name, symlink=False)
                executable = entry.stat(follow_symlinks=False).st_mode & stat.S_IXUSR
                with open(entry.path, "rb") as f:
                    blob = _write_object(objects, b"blob", f.read())
                entries.append((name, b"100755" if executable else b"100644", name, blob))
    if not entries:
        return None
    entries.sort()
    return _write_object(objects, b"tree", b"".join(b"%s %s\0%s" % e[1:] for e in entries))


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


def _write_object(objects: Path, kind: bytes, body: bytes) -> bytes:
    """Store a loose object as git does (zlib of "<kind> <size>\\0<body>", named by its SHA-1) and
    return its id. The file is written under a temporary name (git's own `tmp_obj_` prefix, so
    `git prune` clears leftovers) and linked into place, so no reader sees half an object.
    """
    header = b"%s %d\0" % (kind, len(body))
    digest = hashlib.sha1(header)
    digest.update(body)
    name = digest.hexdigest()
    path = objects / name[:2] / name[2:]
    try:
        os.utime(path)  # there already: touch it as git does, so a prune of old unreachable objects spares it
        return digest.digest()
    except OSError:
        pass
    path.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="tmp_obj_", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            compressor = zlib.compressobj(1)  # git's core.looseCompression default
            f.write(compressor.compress(header))
            f.write(compressor.compress(body))
            f.write(compressor.flush())
        os.chmod(tmp, 0o444)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # written meanwhile, and an object's name is its content
        except OSError:
            os.replace(tmp, path)  # no hard links on this file system: rename, as git falls back to
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return digest.digest()


async def update_branch(repo: Path, new: str, old: str | None) -> None:
    """Move the branch to `new` only if it still points at `old` (None: must not exist).

    As `git update-ref refs/heads/main new old` does it, in Python (see `_compare_and_swap`), for
    a commit stored loose, as `commit_directory` leaves it; anything else (a packed commit, a name
    other than a full commit id) is left to git, which also reads packs and resolves names.
    """
    ids = _SHA.fullmatch(new) and (old is None or _SHA.fullmatch(old))
    if not (ids and await asyncio.to_thread(_compare_and_swap, repo, new, old)):
        await git("--git-dir", str(repo), "update-ref", BRANCH, new, old or "0" * 40)


# git's core.filesRefLockTimeout default: a locked ref is retried for this long before giving up.
_REF_LOCK_TIMEOUT = 0.1


def _compare_and_swap(repo: Path, new: str, old: str | None) -> bool:
    """Git's protocol for moving a loose ref, so git and this interleave safely: whoever creates
    `<ref>.lock` (O_EXCL) owns the ref until the lock is renamed over it or removed; the owner reads
    the current value (loose ref, else packed-refs, as `git pack-refs` also takes the ref's lock
    before deleting a loose ref), compares, writes the new value into the lock and renames it into
    place. No reflog: bare repositories keep none (core.logAllRefUpdates is false for them).

    False, with nothing done, if `new` is not a loose commit (git then decides) or the branch has a
    reflog after all (someone enabled it; git then writes it).
    """
    found = _read_loose(repo / "objects", new)
    if found is None or (repo / "logs" / BRANCH).exists():
        return False
    if found[0] != b"commit":
        raise GitError(f"{new} is a {found[0].decode(errors='replace')}, not a commit")
    ref = repo / BRANCH
    lock = ref.with_name(ref.name + ".lock")
    fd = _create_lock(lock)
    try:
        with os.fdopen(fd, "wb") as f:
            current = _read_branch(repo)
            if current != old:
                raise GitError(f"cannot lock ref {BRANCH!r}: is at {current} but expected {old}")
            f.write(new.encode() + b"\n")
        os.rename(lock, ref)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # still ours: nobody else can create it while it exists
        raise
    return True


def _create_lock(lock: Path) -> int:
    """Create `lock` exclusively, retrying a held one for `_REF_LOCK_TIMEOUT` with git's growing
    back-off, as git does, so a short-lived holder (git or us) does not fail the update."""
    deadline = time.monotonic() + _REF_LOCK_TIMEOUT
    attempt = 0
    while True:
        try:
            return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileNotFoundError:
            lock.parent.mkdir(exist_ok=True)  # refs/heads removed: git recreates it too
            continue
        except FileExistsError:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GitError(
                    f"Unable to create '{lock}': File exists. Another git process seems to be running"
                ) from None
            time.sleep(min(attempt * attempt / 1000, remaining))


async def revert_branch(repo: Path, new: str, old: str | None) -> None:
    """Undo `update_branch(repo, new, old)` when the database refused to record the commit.

    Deleting the branch is left to git, which must also remove it from packed-refs.
    """
    if old is None:
        await git("--git-dir", str(repo), "update-ref", "-d", BRANCH, new)
    else:
        await update_branch(repo, old, new)


async def archive_zip(repo: Path, commit: str) -> bytes:
    """The commit's files as a zip archive."""
    return await git("--git-dir", str(repo), "archive", "--format=zip", commit)


async def list_files(repo: Path, commit: str) -> list[str]:
    out = await git("--git-dir", str(repo), "ls-tree", "-r", "-z", "--name-only", commit)
    return [name for name in out.decode().split("\0") if name]


async def export(repo: Path, commit: str, dest: Path) -> None:
    """Write the commit's files into `dest` (which must exist), as `_export_with_git` does.

    Read in Python from the loose objects when all are loose, by a thread which reads the whole
    tree before writing anything; otherwise by git, for the whole export, never mixing the two.
    """
    if not await asyncio.to_thread(_export_loose, repo, commit, dest):
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


class _NotLoose(Exception):
    """An export git must do: an object is not stored loose, or the tree needs git's rules."""


_MODE = re.compile(rb"[0-7]{1,6}")
_DIR, _FILE, _EXECUTABLE, _LINK = 0o40000, 0o100644, 0o100755, 0o120000
_COMMIT_TREE = re.compile(rb"tree ([0-9a-f]{40})\n")
_COMMIT_TIME = re.compile(rb"^committer [^\n]*> (\d+) [+-]\d{4}$", re.MULTILINE)


def _export_loose(repo: Path, commit: str, dest: Path) -> bool:
    """Export from loose objects; False, with nothing written, if git must do it (`_NotLoose`)."""
    if not _SHA.fullmatch(commit) or (repo / "info" / "attributes").exists():
        return False
    objects = repo / "objects"
    try:
        found = _read_loose(objects, commit)
        if found is None or found[0] != b"commit":
            raise _NotLoose  # not there, or a tree or tag, which git archive accepts too
        headers = found[1].partition(b"\n\n")[0]
        tree, when = _COMMIT_TREE.match(headers), _COMMIT_TIME.search(headers)
        if tree is None or when is None:
            raise _NotLoose  # git's own reading of a malformed commit decides
        entries: list[tuple[bytes, int, bytes]] = []
        _read_tree(objects, tree.group(1).decode(), b"", entries)
    except _NotLoose:
        return False
    _write_entries(os.fsencode(dest), entries, int(when.group(1)))
    return True


def _read_loose(objects: Path, sha: str) -> tuple[bytes, bytes] | None:
    """A loose object's kind and body, or None if it is not stored loose. Its content is checked
    against its name: a damaged object is an error, never data."""
    try:
        with open(objects / sha[:2] / sha[2:], "rb") as f:
            stored = f.read()
    except FileNotFoundError:
        return None
    try:
        raw = zlib.decompress(stored)
    except zlib.error as e:
        raise GitError(f"object {sha} is corrupt: {e}") from None
    if hashlib.sha1(raw).hexdigest() != sha:
        raise GitError(f"object {sha} is corrupt: its content has another hash")
    header, _, body = raw.partition(b"\0")
    kind, _, size = header.partition(b" ")
    if size != b"%d" % len(body):
        raise GitError(f"object {sha} is corrupt: bad header {header[:40]!r}")
    return kind, body


def _read_tree(objects: Path, sha: str, prefix: bytes, entries: list[tuple[bytes, int, bytes]]) -> None:
    """Append the tree's entries to `entries` as `(path, mode, content)` in git archive's order
    (a directory, then what it holds). A submodule link is an empty directory, as git archive
    writes it; names the writer would refuse, or that would not stay in their directory, are
    errors."""
    found = _read_loose(objects, sha)
    if found is None:
        raise _NotLoose
    if found[0] != b"tree":
        raise GitError(f"{sha} is a {found[0].decode(errors='replace')}, not a tree")
    body, pos, names = found[1], 0, set()
    while pos < len(body):
        space = body.find(b" ", pos)
        nul = body.find(b"\0", space + 1)
        if space < 0 or nul < 0 or nul + 21 > len(body) or not _MODE.fullmatch(body[pos:space]):
            raise GitError(f"tree {sha} is malformed")
        mode, name, child = int(body[pos:space], 8), body[space + 1 : nul], body[nul + 1 : nul + 21].hex()
        pos = nul + 21
        path = prefix + name
        if name in (b"", b".", b"..") or b"/" in name or name in names:
            raise GitError(f"tree {sha} has an invalid or repeated name {path[:200]!r}")
        names.add(name)
        if name == b".gitattributes":
            raise _NotLoose  # git archive obeys its export-ignore and export-subst
        if stat.S_ISDIR(mode) or mode == 0o160000:
            _check_name(path, symlink=False)
            entries.append((path, _DIR, b""))
            if stat.S_ISDIR(mode):
                _read_tree(objects, child, path + b"/", entries)
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise _NotLoose
        _check_name(path, symlink=stat.S_ISLNK(mode))
        blob = _read_loose(objects, child)
        if blob is None:
            raise _NotLoose
        if blob[0] != b"blob":
            raise GitError(f"{child} ({path[:200]!r}) is a {blob[0].decode(errors='replace')}, not a blob")
        kind = _LINK if stat.S_ISLNK(mode) else _EXECUTABLE if mode & stat.S_IXUSR else _FILE
        entries.append((path, kind, blob[1]))


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
