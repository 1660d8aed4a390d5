"""`grader regrade` and `grader watch`: grading as it happens, driven by the service's event stream."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..errors import GraderError
from . import output
from .common import Session, assignment_option, command, json_option, lecture_option, with_client

if TYPE_CHECKING:
    from ..aio import AsyncGraderClient
    from ..models import GradingRun

# Events wake the progress display; this is only the fallback refresh should the stream go quiet.
REFRESH_SECONDS = 5.0


@command("regrade", "grader regrade --all --watch")
@click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
@click.option("--all", "everything", is_flag=True, help="Every submission, not only each student's latest.")
@click.option("--watch", is_flag=True, help="Show a progress bar until the regrade ends.")
@lecture_option
@assignment_option
@with_client
def regrade(
    session: Session,
    ids: tuple[int, ...],
    everything: bool,
    watch: bool,
    lecture: str | None,
    assignment: str | None,
) -> None:
    """Regrade submissions IDs, or each student's latest (tutors); --all regrades every submission.

    Regrades wait behind fresh submissions, so students are never held up by them.
    """
    import asyncio

    if ids and everything:
        raise click.UsageError("Give submission IDs or --all, not both")
    code, name = session.lecture(lecture), session.assignment(assignment)
    client = session.client()
    if ids:
        for submission_id in ids:  # all must exist before any is queued
            client.submission(code, name, submission_id)
        for submission_id in ids:
            job = client.autograde(code, name, submission_id)
            output.note(f"Submission {submission_id}: regrade queued (job {job.id})")
        if watch:
            asyncio.run(_watch_submissions(session, code, name, ids))
        return
    run = client.start_grading_run(code, name, "all" if everything else "latest")
    output.note(f"Grading run {run.id}: {run.total} submission(s) queued")
    if watch:
        run = asyncio.run(_watch_run(session, code, name, run))
        output.note(
            f"Grading run {run.id}: {run.counts.get('succeeded', 0)} graded, {run.failed_count} failed"
        )


def _progress(total: int) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=output.err_console(),
    )
    task = progress.add_task("regrading", total=total, failed=0, rate="-")
    return progress, task


def _rate(done: int, started: float) -> str:
    elapsed = time.monotonic() - started
    return f"{done / elapsed:.1f}/s" if done and elapsed > 0 else "-"


async def _watch_run(session: Session, code: str, name: str, run: GradingRun) -> GradingRun:
    import asyncio

    async with session.async_client() as client:
        wake = asyncio.Event()

        async def follow() -> None:
            async for event in client.events(lecture=code, assignment=name):
                if event.finished:
                    wake.set()

        follower = asyncio.create_task(follow())
        progress, task = _progress(run.total)
        started = time.monotonic()
        try:
            with progress:
                while True:
                    run = await client.grading_run(code, name, run.id)
                    done = run.finished_count
                    progress.update(
                        task,
                        total=run.total,
                        completed=done,
                        failed=run.failed_count,
                        rate=_rate(done, started),
                    )
                    if run.done:
                        return run
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), REFRESH_SECONDS)
                    if follower.done():
                        follower.result()  # its error, if it had one
        finally:
            follower.cancel()


async def _watch_submissions(session: Session, code: str, name: str, ids: tuple[int, ...]) -> None:
    import asyncio

    async with session.async_client() as client:
        progress, task = _progress(len(ids))
        started = time.monotonic()
        counts = {"done": 0, "failed": 0}

        async def follow(submission_id: int) -> None:
            final = None
            async for event in client.events(submission=submission_id):
                final = event
            counts["done"] += 1
            counts["failed"] += final is not None and final.auto_status == "failed"
            progress.update(
                task, completed=counts["done"], failed=counts["failed"], rate=_rate(counts["done"], started)
            )

        with progress:
            await asyncio.gather(*(follow(i) for i in ids))


@command("watch", "grader watch -l intro")
@lecture_option
@assignment_option
@json_option
@with_client
def watch(session: Session, lecture: str | None, assignment: str | None, as_json: bool) -> None:
    """Live feed of grading in the lecture (tutors): one line per status change, until Ctrl-C.

    Follows the given assignment, or else every assignment the lecture has when it starts.
    --json prints one JSON object per line.
    """
    import asyncio

    code = session.lecture(lecture)
    name = assignment or session.defaults.assignment
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_watch(session, code, name, as_json))


async def _watch(session: Session, code: str, name: str | None, as_json: bool) -> None:
    import asyncio

    async with session.async_client() as client:
        names = [name] if name else [a.name async for a in client.assignments(code)]
        if not names:
            output.note(f"{code} has no assignments to watch")
            return
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def follow(assignment: str) -> None:
            try:
                async for event in client.events(lecture=code, assignment=assignment):
                    await queue.put((assignment, event))
            except Exception as e:  # handed to the printing loop, which raises it
                await queue.put((assignment, e))

        tasks = [asyncio.create_task(follow(n)) for n in names]
        if not as_json:
            output.note(f"Watching {code}: {', '.join(names)} (Ctrl-C to stop)")
        users: dict[int, str] = {}
        try:
            while True:
                assignment, event = await queue.get()
                if isinstance(event, Exception):
                    raise event
                user = await _user_of(client, users, code, assignment, event.submission)
                if as_json:
                    click.echo(json.dumps({"assignment": assignment, "user": user, **event.to_json()}))
                    continue
                detail = (
                    output.score(event.score, event.max_score)
                    if event.auto_status == "graded"
                    else (event.reason or "")
                )
                stamp = datetime.now().strftime("%H:%M:%S")
                click.echo(
                    f"{stamp}  {assignment}  #{event.submission}  {user}  {event.auto_status}  {detail}".rstrip()
                )
        finally:
            for t in tasks:
                t.cancel()


async def _user_of(
    client: AsyncGraderClient, cache: dict[int, str], code: str, assignment: str, submission: int
) -> str:
    if submission not in cache:
        try:
            cache[submission] = (await client.submission(code, assignment, submission)).user
        except GraderError:  # withdrawn meanwhile, or the service is restarting: the feed goes on
            cache[submission] = "?"
    return cache[submission]


COMMANDS = [regrade, watch]
