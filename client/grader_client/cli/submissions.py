"""`grader submit`, `submissions`, `logs`, `feedback`, `score`, `scores`: submissions and their results."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import APIError, GraderError, UsageError
from . import output
from .common import Session, assignment_option, command, group, json_option, lecture_option, with_client

if TYPE_CHECKING:
    from ..models import StatusEvent, Submission

submissions = group("submissions", "List and show submissions.")
score = group("score", "Set scores by hand.")
scores = group("scores", "The grade table of an assignment or of the whole lecture.")


@command("submit", "grader submit basics.ipynb --wait -l intro -a basics")
@click.argument("path", required=False, default=".", type=click.Path(exists=True, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow grading live and print the score table at the end.")
@click.option(
    "--for",
    "for_user",
    metavar="USER",
    help="Submit on behalf of this student (instructors; after the deadline too).",
)
@lecture_option
@assignment_option
@json_option
@with_client
def submit(
    session: Session,
    path: Path,
    wait: bool,
    for_user: str | None,
    lecture: str | None,
    assignment: str | None,
    as_json: bool,
) -> None:
    """Submit PATH: a notebook, or a directory (zipped for you; default: the current one).

    With --wait, exits 1 if grading failed.
    """
    code, name = session.lecture(lecture), session.assignment(assignment)
    client = session.client()
    submission = client.submit(code, name, path, user=for_user)
    if not as_json:
        output.note(
            f"Submitted {path} to {code}/{name}"
            + (f" for {for_user}" if for_user else "")
            + f": submission {submission.id} ({submission.auto_status})"
        )
    if not wait:
        if as_json:
            output.print_json(submission)
        return
    if not as_json:
        import threading

        # The score table's imports (~30 ms) overlap the wait for grading instead of following it.
        threading.Thread(target=output.preload, daemon=True).start()
    last = (submission.auto_status, None)

    def show_change(event: StatusEvent) -> None:
        nonlocal last
        now = (event.auto_status, event.status_detail or event.reason)
        if now != last and not as_json:
            output.note(f"  {now[0]}" + (f": {now[1]}" if now[1] else ""))
        last = now

    final = client.wait(code, name, submission.id, on_event=show_change)
    if as_json:
        output.print_json(final)
    else:
        show_result(session, final)
    if final.auto_status == "failed":
        click.get_current_context().exit(1)


def show_result(session: Session, submission: Submission) -> None:
    """The score table if the caller may see the gradebook, else the score alone."""
    if submission.auto_status == "graded":
        try:
            book = session.client().gradebook(submission.lecture, submission.assignment, submission.id)
        except APIError as e:  # e.g. results held back until the instructor releases them
            if submission.score is None:
                output.note(f"Graded. {e.message}")
            else:
                output.note(f"Score {output.score(submission.score, submission.max_score)} ({e.message})")
            return
        output.score_table(book)
    elif submission.auto_status == "failed":
        output.note(f"Grading failed; see: grader logs {submission.id}")


@command("list", "grader submissions list --latest --json", submissions)
@click.option("--user", help="Only this user's (tutors).")
@click.option("--latest", is_flag=True, help="Only each user's latest.")
@lecture_option
@assignment_option
@json_option
@with_client
def submissions_list(
    session: Session,
    user: str | None,
    latest: bool,
    lecture: str | None,
    assignment: str | None,
    as_json: bool,
) -> None:
    """Submissions to the assignment, newest first (students see their own)."""
    found = list(
        session.client().submissions(
            session.lecture(lecture), session.assignment(assignment), user=user, latest=latest
        )
    )
    if as_json:
        output.print_json(found)
        return
    rows = [
        (
            s.id,
            s.user,
            output.when(s.submitted_at),
            "late" if s.late else "",
            s.auto_status,
            output.score(s.score, s.max_score),
            s.feedback_status,
        )
        for s in found
    ]
    output.table(
        ("id", "user", "submitted", "late", "status", "score", "feedback"), rows, empty="No submissions."
    )


@command("show", "grader submissions show 12", submissions)
@click.argument("submission_id", metavar="ID", type=int)
@lecture_option
@assignment_option
@json_option
@with_client
def submissions_show(
    session: Session, submission_id: int, lecture: str | None, assignment: str | None, as_json: bool
) -> None:
    """One submission and, once graded, its score table."""
    found = session.client().submission(
        session.lecture(lecture), session.assignment(assignment), submission_id
    )
    if as_json:
        output.print_json(found)
        return
    output.fields(
        [
            ("id", found.id),
            ("user", found.user),
            ("submitted", output.when(found.submitted_at)),
            ("late", f"yes, by {found.late_seconds:.0f} s" if found.late else "no"),
            ("status", found.auto_status),
            ("score", output.score(found.score, found.max_score)),
            ("manual score", output.number(found.manual_score)),
            ("comment", found.comment),
            ("feedback", found.feedback_status),
            ("commit", found.commit_hash),
        ]
    )
    show_result(session, found)


@command("logs", "grader logs 12")
@click.argument("submission_id", metavar="ID", type=int)
@lecture_option
@assignment_option
@with_client
def logs(session: Session, submission_id: int, lecture: str | None, assignment: str | None) -> None:
    """The grading log of submission ID."""
    text = session.client().logs(session.lecture(lecture), session.assignment(assignment), submission_id)
    click.echo(text, nl=not text.endswith("\n"))


@command("feedback", "grader feedback 12 --open")
@click.argument("submission_id", metavar="ID", type=int)
@click.option(
    "-o",
    "--output",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File (default: feedback-ID.html).",
)
@click.option("--notebook", help="Which notebook's page (default: the first).")
@click.option("--open", "open_page", is_flag=True, help="Open the page in the web browser.")
@lecture_option
@assignment_option
@with_client
def feedback(
    session: Session,
    submission_id: int,
    target: Path | None,
    notebook: str | None,
    open_page: bool,
    lecture: str | None,
    assignment: str | None,
) -> None:
    """Save the feedback page of submission ID as HTML (and open it with --open)."""
    html = session.client().feedback(
        session.lecture(lecture), session.assignment(assignment), submission_id, notebook
    )
    target = target or Path(f"feedback-{submission_id}.html")
    target.write_text(html, encoding="utf-8")
    output.note(f"Feedback saved to {target}")
    if open_page:
        import webbrowser

        if not webbrowser.open(target.resolve().as_uri()):
            raise GraderError(f"No web browser to open {target} with")


@command("set", "grader score set 12 8.5 --comment 'Good work'", score)
@click.argument("submission_id", metavar="ID", type=int)
@click.argument("points", type=click.FloatRange(min=0))
@click.option("--comment", help="Comment for the student.")
@lecture_option
@assignment_option
@json_option
@with_client
def score_set(
    session: Session,
    submission_id: int,
    points: float,
    comment: str | None,
    lecture: str | None,
    assignment: str | None,
    as_json: bool,
) -> None:
    """Set the manual score of submission ID (tutors); it replaces the automatic one."""
    from ..operations import UNSET

    updated = session.client().update_submission(
        session.lecture(lecture),
        session.assignment(assignment),
        submission_id,
        manual_score=points,
        comment=UNSET if comment is None else comment,
        manual_status="done",
    )
    if as_json:
        output.print_json(updated)
    else:
        output.note(
            f"Submission {updated.id} of {updated.user}: {output.score(updated.score, updated.max_score)}"
        )


@command("export", "grader scores export --lecture intro --format csv -o gradebook.csv", scores)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option(
    "--policy",
    type=click.Choice(["latest", "best"]),
    help="Whole lecture only: count every assignment by this policy (default: each assignment's own).",
)
@click.option(
    "-o",
    "--output",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File (default: stdout).",
)
@lecture_option
@assignment_option
@with_client
def scores_export(
    session: Session,
    fmt: str,
    policy: str | None,
    target: Path | None,
    lecture: str | None,
    assignment: str | None,
) -> None:
    """One row per student (latest or best submission, late penalty applied) (tutors).

    Of one assignment, or, with --lecture and no --assignment, of the whole lecture: one row per student
    on the roster (also those who never submitted), one column per assignment, and the total.
    """
    import json

    client = session.client()
    if assignment is None and (lecture is not None or not session.defaults.assignment):
        result = client.lecture_scores(session.lecture(lecture), policy, fmt)
    elif policy is not None:
        raise UsageError("--policy is for the whole lecture's gradebook: give --lecture without --assignment")
    else:
        result = client.scores(session.lecture(lecture), session.assignment(assignment), fmt)
    text = (
        result
        if isinstance(result, str)
        else json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"
    )
    if target is None:
        click.echo(text, nl=False)
    else:
        target.write_text(text, encoding="utf-8")
        output.note(f"Scores written to {target}")


COMMANDS = [submit, submissions, logs, feedback, score, scores]
