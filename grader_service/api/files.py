"""Assignment files: instructors upload the source; students download the released version."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ..command import spec
from ..orm import Lecture
from ..states import AssignmentKind, RoleName
from ..storage import git
from ..storage.release import ReleaseFailed, release_assignment
from ..storage.uploads import UploadError, UploadLimits, extract_upload
from .assignments import caller_model
from .base import APIHandler, api_error
from .permissions import needs_role


class UploadMixin(APIHandler):
    """Shared by the source upload and the submission endpoints."""

    body_limit: int | None = None  # the service's max_request_size

    def upload_limits(
        self, allowed_files: list[str] | None = None, command: dict[str, Any] | None = None
    ) -> UploadLimits:
        """The upload's limits; `command`: a command assignment's `submission` of grader.yaml."""
        service = self.service
        command = command or {}
        return UploadLimits(
            max_extracted_size=min(
                service.max_extracted_size, command.get("max_bytes") or service.max_extracted_size
            ),
            max_files=service.max_files_per_upload,
            allowed_files=tuple(allowed_files or ()),
            allowed_globs=tuple(command.get("files") or ()),
        )

    @asynccontextmanager
    async def extracted_upload(
        self, limits: UploadLimits, filename: str | None = None
    ) -> AsyncIterator[Path]:
        """The request body's files in a temporary directory, removed afterwards whatever happens.

        Extracting takes a while: the request's database connection goes back to the pool meanwhile.
        """
        self.release_db()
        tmp_root = self.service.layout.tmp_dir()
        tmp_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=tmp_root, prefix="upload-"))
        try:
            content_type = self.request.headers.get("Content-Type", "")
            body = self.body_file()
            try:
                await asyncio.to_thread(extract_upload, content_type, body, tmp, limits, filename)
            except UploadError as e:
                raise api_error(e.status, e.message) from None
            yield tmp
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)


async def send_zip(handler: APIHandler, repo: Path, commit: str, filename: str) -> None:
    handler.release_db()  # no database connection held while git builds the archive
    data = await git.archive_zip(repo, commit)
    handler.set_header("Content-Type", "application/zip")
    handler.set_header("Content-Disposition", f'attachment; filename="{filename}"')
    handler.finish(data)


class AssignmentFilesHandler(UploadMixin, APIHandler):
    @needs_role(RoleName.STUDENT)
    async def get(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        staff = self.permissions.may_download_source(lecture.id)
        version = self.get_query_argument("version", "source" if staff else "release")
        layout = self.service.layout
        if version == "source":
            self.permissions.require_download_source(lecture.id)
            if assignment.source_commit is None:
                raise api_error(404, f"Assignment {name!r} has no source files yet")
            await send_zip(
                self, layout.source_repo(assignment.id), assignment.source_commit, f"{name}-source.zip"
            )
        elif version == "release":
            # (A student never gets here for an assignment that is not released: assignment_or_404.)
            if assignment.release_commit is None:
                raise api_error(404, f"Assignment {name!r} has not been released yet")
            await send_zip(self, layout.release_repo(assignment.id), assignment.release_commit, f"{name}.zip")
        else:
            raise api_error(400, "version must be 'source' or 'release'")

    @needs_role(RoleName.INSTRUCTOR)
    async def put(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        repo = self.service.layout.source_repo(assignment.id)
        filename = self.get_query_argument("filename", None)
        async with (
            self.extracted_upload(self.upload_limits(), filename) as files,
            self.service.repo_locks(repo),
        ):
            if assignment.kind == AssignmentKind.COMMAND:
                try:
                    await asyncio.to_thread(spec.read, files)
                except spec.SpecError as e:
                    raise api_error(422, str(e)) from None
            parent = await git.head(repo)
            commit = await git.commit_directory(repo, files, f"source upload by {self.me.name}", parent)
            released = None
            if assignment.release_commit is not None:
                # Already released: the new source must validate, and students get its release.
                try:
                    released = await release_assignment(self.service, assignment.id, commit, assignment.kind)
                except ReleaseFailed as e:
                    raise api_error(422, str(e)) from None
            await git.update_branch(repo, commit, parent)
            # No await between the first write and the commit (see submissions.py).
            try:
                if released is not None:
                    released.apply_to(assignment)
                assignment.source_commit = commit
                self.db.commit()
            except Exception:
                self.db.rollback()
                await git.revert_branch(repo, commit, parent)
                raise
        self.write_json(caller_model(self, assignment, True))


handlers = [(r"lectures/([^/]+)/assignments/([^/]+)/files", AssignmentFilesHandler)]
