"""Git repositories holding uploaded sources, released versions and submissions.

A submission is on the service's hot path, and every git process costs a fork/exec on the event
loop's watch, so the hot paths spawn as few as possible:

- Commits are written in Python, as loose objects straight into `objects/xx/...` (blobs, trees,
  then the commit), built by the same rules as `git add --all --force .` + `write-tree` +
  `commit-tree -m`, so the hashes are the ones git itself would produce. No working tree, index,
  user config or hooks are involved, and the branch is not moved.
- `head` reads the branch's ref file (or `packed-refs`) in Python, and a new repository costs one
  `git init`, its settings appended to the config file in Python.
- Git stays the reader (archive, ls-tree) and the only ref-mover: a branch moves with an explicit
  compare-and-swap `update-ref` once the caller has decided the commit is to be kept, and git's
  lock files make that safe against anything else touching the repository.

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
    """Create a bare repository if it does not exist yet.

    One `git init`, then the settings appended to its config in Python. The repository is built
    under a temporary name and renamed into place, so it either does not exist or is complete
    (never without its settings after a crash, never with them appended twice by a race).
    """
    if (repo / "HEAD").exists():
        return
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = repo.with_name(f".{repo.name}.init-{secrets.token_hex(6)}")
    try:
        # No template: git's sample hooks and description would be copied only to never run.
        await git("init", "--quiet", "--bare", "--template=", "--initial-branch=main", str(tmp))
        await asyncio.to_thread(_configure_and_publish, tmp, repo)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
        raise


def _configure_and_publish(tmp: Path, repo: Path) -> None:
    with open(tmp / "config", "a", encoding="utf-8") as f:
        f.write(_SETTINGS)
    try:
        os.rename(tmp, repo)
    except OSError:
        if not (repo / "HEAD").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # someone else created it meanwhile


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
    """Move the branch to `new` only if it still points at `old` (None: must not exist)."""
    await git("--git-dir", str(repo), "update-ref", BRANCH, new, old or "0" * 40)


async def archive_zip(repo: Path, commit: str) -> bytes:
    """The commit's files as a zip archive."""
    return await git("--git-dir", str(repo), "archive", "--format=zip", commit)


async def export(repo: Path, commit: str, dest: Path) -> None:
    """Write the commit's files into `dest` (which must exist).

    git writes the tar archive and a thread unpacks it, rather than a `tar` process. The "data"
    filter refuses members or links that would land outside `dest` and special files, and keeps
    no owner: files are 0644, or 0755 when executable, as `tar -x` gives with a 022 umask.
    """
    tar = await git("--git-dir", str(repo), "archive", "--format=tar", commit)
    await asyncio.to_thread(_extract, tar, dest, commit)


def _extract(tar: bytes, dest: Path, commit: str) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
            archive.extractall(dest, filter="data")
    except tarfile.TarError as e:
        raise GitError(f"extracting {commit[:12]} failed: {e}") from e


async def list_files(repo: Path, commit: str) -> list[str]:
    out = await git("--git-dir", str(repo), "ls-tree", "-r", "-z", "--name-only", commit)
    return [name for name in out.decode().split("\0") if name]


async def revert_branch(repo: Path, new: str, old: str | None) -> None:
    """Undo `update_branch(repo, new, old)` when the database refused to record the commit."""
    if old is None:
        await git("--git-dir", str(repo), "update-ref", "-d", BRANCH, new)
    else:
        await git("--git-dir", str(repo), "update-ref", BRANCH, old, new)


class RepoLocks:
    """One asyncio lock per repository, so commit-then-move-branch sequences never interleave."""

    def __init__(self) -> None:
        self._locks: dict[Path, asyncio.Lock] = {}

    def __call__(self, repo: Path) -> asyncio.Lock:
        return self._locks.setdefault(repo, asyncio.Lock())
