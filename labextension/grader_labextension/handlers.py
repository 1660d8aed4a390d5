"""The REST endpoints under `<base_url>grader/`: each one request (or a few) to the service.

Bodies and answers use the service's JSON shapes (the models' `to_json()` is the service's JSON as
received), so the panels read fields by the service's names. Every verb needs a logged-in Lab user.
"""

from __future__ import annotations

import asyncio
from typing import Any

import tornado.web

from grader_client.errors import APIError, ConfigError, ConnectionFailed
from grader_client.operations import ASSIGNMENT_FIELDS

from . import files
from .base import GraderHandler
from .errors import Refusal, error_reply

CREATE_FIELDS = {"name", *ASSIGNMENT_FIELDS}
UPDATE_FIELDS = {"status", *ASSIGNMENT_FIELDS}
# Feedback pages show submission output: in a sandbox (no scripts, no same origin), nothing loaded.
FEEDBACK_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def items(models: list[Any]) -> dict[str, Any]:
    return {"items": [m.to_json() for m in models]}


class ConfigHandler(GraderHandler):
    """Whether the service is set up and reachable, and who the user is there: always 200."""

    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            client = self.grader.client()
        except ConfigError as e:
            reply = error_reply(e, None)
            assert reply is not None
            self.reply({"url": None, "user": None, "configured": False, "message": reply[1]["message"]})
            return
        try:
            user = await client.whoami()
        except (APIError, ConnectionFailed) as e:
            reply = error_reply(e, client.url)
            assert reply is not None
            self.reply({"url": client.url, "user": None, "configured": True, "message": reply[1]["message"]})
            return
        self.reply({"url": client.url, "user": user.to_json(), "configured": True, "message": None})


class LecturesHandler(GraderHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.reply(items([lecture async for lecture in self.grader.client().lectures()]))


class AssignmentsHandler(GraderHandler):
    @tornado.web.authenticated
    async def get(self, code: str) -> None:
        self.reply(items([a async for a in self.grader.client().assignments(code)]))

    @tornado.web.authenticated
    async def post(self, code: str) -> None:
        body = self.json_body(CREATE_FIELDS)
        name = body.pop("name", None)
        if not isinstance(name, str) or not name:
            raise Refusal(400, "Field 'name' is required")
        assignment = await self.grader.client().create_assignment(code, name, **body)
        self.reply(assignment.to_json(), 201)


class AssignmentHandler(GraderHandler):
    @tornado.web.authenticated
    async def get(self, code: str, name: str) -> None:
        self.reply((await self.grader.client().assignment(code, name)).to_json())

    @tornado.web.authenticated
    async def patch(self, code: str, name: str) -> None:
        body = self.json_body(UPDATE_FIELDS)
        self.reply((await self.grader.client().update_assignment(code, name, **body)).to_json())


class ReleaseHandler(GraderHandler):
    @tornado.web.authenticated
    async def post(self, code: str, name: str) -> None:
        self.reply((await self.grader.client().release_assignment(code, name)).to_json())


class SourceHandler(GraderHandler):
    """Upload the source from a folder (or a notebook, or a .zip) in the user's files."""

    @tornado.web.authenticated
    async def post(self, code: str, name: str) -> None:
        body = self.json_body({"path"})
        path = files.inside_root(self.root, body.get("path"))
        if not path.exists():
            raise Refusal(400, f"{body['path']} does not exist")
        self.reply((await self.grader.client().upload_assignment(code, name, path)).to_json())


class FetchHandler(GraderHandler):
    """The student version into `<code>/<name>/`, without silently replacing changed files."""

    @tornado.web.authenticated
    async def post(self, code: str, name: str) -> None:
        body = self.json_body({"overwrite"})
        overwrite = body.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise Refusal(400, "Field 'overwrite' must be true or false")
        folder = f"{code}/{name}"
        files.inside_root(self.root, folder)  # refused before anything is downloaded
        archive = await self.grader.client().download_assignment(code, name, "release")
        fetched = await asyncio.to_thread(files.write_release, self.root, folder, archive, overwrite)
        self.reply({"path": fetched.path, "files": fetched.files, "backup": fetched.backup})


class SubmissionsHandler(GraderHandler):
    @tornado.web.authenticated
    async def get(self, code: str, name: str) -> None:
        latest = not truthy(self.get_query_argument("all", None))
        user = self.get_query_argument("student", None) or None
        client = self.grader.client()
        self.reply(items([s async for s in client.submissions(code, name, user=user, latest=latest)]))

    @tornado.web.authenticated
    async def post(self, code: str, name: str) -> None:
        body = self.json_body({"path"})
        relative = body.get("path", f"{code}/{name}")
        path = files.inside_root(self.root, relative)
        if not path.exists():
            raise Refusal(400, f"{relative} does not exist; fetch the assignment first")
        self.reply((await self.grader.client().submit(code, name, path)).to_json(), 201)


class SubmissionHandler(GraderHandler):
    @tornado.web.authenticated
    async def get(self, code: str, name: str, submission: str) -> None:
        self.reply((await self.grader.client().submission(code, name, int(submission))).to_json())

    @tornado.web.authenticated
    async def patch(self, code: str, name: str, submission: str) -> None:
        body = self.json_body({"score", "comment"})
        changes: dict[str, Any] = {}
        if "score" in body:
            changes["manual_score"] = body["score"]
        if "comment" in body:
            changes["comment"] = body["comment"]
        updated = await self.grader.client().update_submission(code, name, int(submission), **changes)
        self.reply(updated.to_json())

    @tornado.web.authenticated
    async def delete(self, code: str, name: str, submission: str) -> None:
        await self.grader.client().delete_submission(code, name, int(submission))
        self.set_status(204)
        self.finish()


class GradebookHandler(GraderHandler):
    @tornado.web.authenticated
    async def get(self, code: str, name: str, submission: str) -> None:
        self.reply((await self.grader.client().gradebook(code, name, int(submission))).to_json())


class GradesHandler(GraderHandler):
    """A submission's per-cell grades; PUT sets some at once, guarded by the version read (409)."""

    @tornado.web.authenticated
    async def get(self, code: str, name: str, submission: str) -> None:
        self.reply((await self.grader.client().grades(code, name, int(submission))).to_json())

    @tornado.web.authenticated
    async def put(self, code: str, name: str, submission: str) -> None:
        body = self.json_body({"grades", "version"})
        grades, version = body.get("grades"), body.get("version")
        if not isinstance(grades, dict) or not all(isinstance(v, dict) for v in grades.values()):
            raise Refusal(400, 'Give {"grades": {"<grade_id>": {"points": ..., "comment": ...}}}')
        if version is not None and type(version) is not int:
            raise Refusal(400, "Field 'version' must be an integer")
        client = self.grader.client()
        saved = await client.set_grades(code, name, int(submission), grades, version)
        self.reply(saved.to_json())


class HistoryHandler(GraderHandler):
    @tornado.web.authenticated
    async def get(self, code: str, name: str, submission: str) -> None:
        self.reply(items(await self.grader.client().history(code, name, int(submission))))


class GradingQueueHandler(GraderHandler):
    @tornado.web.authenticated
    async def get(self, code: str, name: str) -> None:
        self.reply(items([i async for i in self.grader.client().grading_queue(code, name)]))


class SubmittedNotebooksHandler(GraderHandler):
    """The submitted notebooks (JSON, read-only), for the grading view to render beside the grades."""

    @tornado.web.authenticated
    async def get(self, code: str, name: str, submission: str) -> None:
        archive = await self.grader.client().download_submission(code, name, int(submission))
        notebooks = await asyncio.to_thread(files.archive_notebooks, archive)
        self.reply({"notebooks": notebooks})


class LogsHandler(GraderHandler):
    @tornado.web.authenticated
    async def get(self, code: str, name: str, submission: str) -> None:
        self.reply({"text": await self.grader.client().logs(code, name, int(submission))})


class FeedbackHandler(GraderHandler):
    """The feedback page, as HTML the browser may only show in a sandbox."""

    @property
    def content_security_policy(self) -> str:
        return FEEDBACK_CSP

    @tornado.web.authenticated
    async def get(self, code: str, name: str, submission: str) -> None:
        notebook = self.get_query_argument("notebook", None)
        html = await self.grader.client().feedback(code, name, int(submission), notebook)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(html, set_content_type="text/html; charset=UTF-8")


class RegradeHandler(GraderHandler):
    """Selected submissions (one job each) or all of them (a grading run with progress)."""

    @tornado.web.authenticated
    async def post(self, code: str, name: str) -> None:
        body = self.json_body({"submissions", "all", "scope"})
        client = self.grader.client()
        if body.get("all") is True:
            scope = body.get("scope", "latest")
            self.reply((await client.start_grading_run(code, name, scope)).to_json(), 201)
            return
        ids = body.get("submissions")
        if not isinstance(ids, list) or not ids or not all(type(i) is int and i > 0 for i in ids):
            raise Refusal(400, 'Give {"submissions": [ids]} (positive integers) or {"all": true}')
        jobs = [await client.autograde(code, name, i) for i in ids]
        self.reply({"jobs": [job.to_json() for job in jobs]}, 202)


class GradingRunHandler(GraderHandler):
    @tornado.web.authenticated
    async def get(self, code: str, name: str, run: str) -> None:
        self.reply((await self.grader.client().grading_run(code, name, int(run))).to_json())


class FeedbackReleaseHandler(GraderHandler):
    @tornado.web.authenticated
    async def post(self, code: str, name: str) -> None:
        self.reply({"released": await self.grader.client().release_feedback(code, name)})


class ExportHandler(GraderHandler):
    """The grade table as a CSV file in the user's files."""

    @tornado.web.authenticated
    async def post(self, code: str, name: str) -> None:
        body = self.json_body({"path", "overwrite"})
        overwrite = body.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise Refusal(400, "Field 'overwrite' must be true or false")
        files.export_target(self.root, body.get("path"), overwrite)  # checked before downloading
        text = await self.grader.client().scores(code, name, "csv")
        path = await asyncio.to_thread(files.write_export, self.root, body["path"], text, overwrite)
        self.reply({"path": path})


_A = r"lectures/([^/]+)/assignments/([^/]+)"
_S = _A + r"/submissions/([0-9]+)"
ROUTES: list[tuple[str, type[GraderHandler]]] = [
    (r"config", ConfigHandler),
    (r"lectures", LecturesHandler),
    (r"lectures/([^/]+)/assignments", AssignmentsHandler),
    (_A, AssignmentHandler),
    (_A + r"/release", ReleaseHandler),
    (_A + r"/source", SourceHandler),
    (_A + r"/fetch", FetchHandler),
    (_A + r"/submissions", SubmissionsHandler),
    (_S, SubmissionHandler),
    (_S + r"/gradebook", GradebookHandler),
    (_S + r"/logs", LogsHandler),
    (_S + r"/grades", GradesHandler),
    (_S + r"/history", HistoryHandler),
    (_S + r"/notebooks", SubmittedNotebooksHandler),
    (_A + r"/grading-queue", GradingQueueHandler),
    (_S + r"/feedback", FeedbackHandler),
    (_A + r"/regrade", RegradeHandler),
    (_A + r"/grading-runs/([0-9]+)", GradingRunHandler),
    (_A + r"/feedback-release", FeedbackReleaseHandler),
    (_A + r"/export", ExportHandler),
]
