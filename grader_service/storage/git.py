"""Git repositories holding uploaded sources, released versions and submissions.

Every operation runs git as an asyncio subprocess, so the event loop never waits on disk.
Commits are built with plumbing (a private index file, `write-tree`, `commit-tree`) so no
working tree, user config or hooks are involved, and a branch only moves with an explicit
compare-and-swap `update-ref` once the caller has decided the commit is to be kept.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

BRANCH = "refs/heads/main"
_EMPTY_ENV_KEYS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")


class GitError(RuntimeError):
    pass


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _EMPTY_ENV_KEYS}
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": "grader-service",
            "GIT_AUTHOR_EMAIL": "grader-service@localhost",
            "GIT_COMMITTER_NAME": "grader-service",
            "GIT_COMMITTER_EMAIL": "grader-service@localhost",
        }
    )
    if extra:
        env.update(extra)
    return env


async def git(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(env),
    )
    out, err = await proc.communicate(stdin)
    if proc.returncode != 0:
        raise GitError(f"git {args[0]} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
    return out


async def ensure_repo(repo: Path) -> None:
    """Create a bare repository if it does not exist yet."""
    if (repo / "HEAD").exists():
        return
    repo.parent.mkdir(parents=True, exist_ok=True)
    await git("init", "--quiet", "--bare", "--initial-branch=main", str(repo))
    await git("--git-dir", str(repo), "config", "core.hooksPath", os.devnull)
    await git("--git-dir", str(repo), "config", "gc.auto", "0")


async def head(repo: Path) -> str | None:
    if not (repo / "HEAD").exists():
        return None
    try:
        return (
            (await git("--git-dir", str(repo), "rev-parse", "--verify", "--quiet", BRANCH)).decode().strip()
        )
    except GitError:
        return None


async def commit_directory(repo: Path, directory: Path, message: str, parent: str | None) -> str:
    """Write `directory`'s files as a commit object in `repo`; the branch is not moved."""
    await ensure_repo(repo)
    with tempfile.TemporaryDirectory(prefix="grader-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        base = ("--git-dir", str(repo), "--work-tree", str(directory))
        await git(*base, "add", "--all", "--force", ".", env=env)
        tree = (await git(*base, "write-tree", env=env)).decode().strip()
    args = ["--git-dir", str(repo), "commit-tree", tree, "-m", message]
    if parent:
        args += ["-p", parent]
    return (await git(*args)).decode().strip()


async def update_branch(repo: Path, new: str, old: str | None) -> None:
    """Move the branch to `new` only if it still points at `old` (None: must not exist)."""
    await git("--git-dir", str(repo), "update-ref", BRANCH, new, old or "0" * 40)


async def archive_zip(repo: Path, commit: str) -> bytes:
    """The commit's files as a zip archive."""
    return await git("--git-dir", str(repo), "archive", "--format=zip", commit)


async def export(repo: Path, commit: str, dest: Path) -> None:
    """Write the commit's files into `dest` (which must exist)."""
    tar = await git("--git-dir", str(repo), "archive", "--format=tar", commit)
    proc = await asyncio.create_subprocess_exec(
        "tar", "-x", "-C", str(dest), stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate(tar)
    if proc.returncode != 0:
        raise GitError(f"extracting {commit[:12]} failed: {err.decode(errors='replace').strip()}")


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
