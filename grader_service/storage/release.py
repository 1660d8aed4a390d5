"""Producing the student version of an assignment from its uploaded source.

The conversion itself is the notebook engine's (`grader_service.convert`); this module stages
the source out of git, runs the conversion in a worker thread (it executes no code, but it
parses notebooks, which should not hold up the event loop) and stores the result as a commit
in the assignment's release repository, which is what students download.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..orm import Assignment, utcnow
from ..states import AssignmentKind
from . import git

if TYPE_CHECKING:
    from ..app import GraderService
    from ..convert.release import Release as ConvertRelease

# Files the conversion may write for the service that must not reach students.
SERVICE_ONLY_FILES = ("gradebook.json",)


class ReleaseFailed(Exception):
    """The source does not validate; the message lists every problem."""


@dataclass(frozen=True)
class Released:
    commit: str
    gradebook: dict[str, Any]
    max_score: float | None
    hidden_lines: list[str]

    def apply_to(self, assignment: Assignment) -> None:
        assignment.release_commit = self.commit
        assignment.gradebook_skeleton = self.gradebook
        assignment.max_score = self.max_score
        assignment.hidden_tests = {"lines": self.hidden_lines}
        assignment.released_at = utcnow()


def _convert(source: Path, output: Path) -> ConvertRelease:
    from ..convert.errors import SourceValidationError
    from ..convert.release import release_assignment as convert_release

    try:
        return convert_release(source, output)
    except SourceValidationError as e:
        problems = "; ".join(
            f"{p['notebook']}" + (f", cell {p['cell']}" if p.get("cell") else "") + f": {p['problem']}"
            for p in e.problems
        )
        raise ReleaseFailed(f"The source does not validate: {problems or e}") from None


def _command_release(source: Path, output: Path) -> dict[str, Any]:
    """A command assignment's release: grader.yaml must validate; students get no files (the harness
    stays the instructor's). Its skeleton keeps what submissions may hold."""
    from ..command import spec
    from ..convert.gradebook import SCHEMA

    try:
        parsed = spec.read(source)
    except spec.SpecError as e:
        raise ReleaseFailed(str(e)) from None
    output.mkdir()
    return {"schema": SCHEMA, "kind": "skeleton", "engine": "command", "max_score": parsed.max_score,
            "notebooks": {}, "submission": parsed.as_dict()}  # fmt: skip


async def release_assignment(
    service: GraderService, assignment_id: int, source_commit: str, kind: str = AssignmentKind.NOTEBOOK
) -> Released:
    layout = service.layout
    layout.tmp_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layout.tmp_dir(), prefix="release-") as tmp:
        source, output = Path(tmp) / "source", Path(tmp) / "release"
        source.mkdir()
        await git.export(layout.source_repo(assignment_id), source_commit, source)
        if kind == AssignmentKind.COMMAND:
            skeleton = await asyncio.to_thread(_command_release, source, output)
            commit = await _store_release(service, assignment_id, source_commit, output)
            return Released(
                commit=commit, gradebook=skeleton, max_score=skeleton["max_score"], hidden_lines=[]
            )
        converted = await asyncio.to_thread(_convert, source, output)
        for name in SERVICE_ONLY_FILES:
            target = output / name
            if target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
        commit = await _store_release(service, assignment_id, source_commit, output)
    return Released(
        commit=commit,
        gradebook=converted.gradebook,
        max_score=float(converted.gradebook.get("max_score", 0.0)),
        hidden_lines=converted.hidden_lines,
    )


async def _store_release(service: GraderService, assignment_id: int, source_commit: str, output: Path) -> str:
    """The release directory as the next commit of the assignment's release repository."""
    repo = service.layout.release_repo(assignment_id)
    async with service.repo_locks(repo):
        parent = await git.head(repo)
        commit = await git.commit_directory(repo, output, f"release from source {source_commit[:12]}", parent)
        await git.update_branch(repo, commit, parent)
    return commit
