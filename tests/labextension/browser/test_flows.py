"""The three flows of issue 17, clicked through in Chromium against the real service."""

from __future__ import annotations

import csv
import re
import time

import requests

from .conftest import (
    EXAMPLES,
    assert_live_progress,
    copy_example,
    open_grader_from_launcher,
    open_grader_from_menu,
    open_lab,
    record_progress,
    recorded_progress,
)

# What alice types into the five answer cells of the fetched notebook (the student version has
# `raise NotImplementedError()` there).
ANSWERS = [
    "def add(a, b):\n    return a + b",
    'def fizzbuzz(n):\n    return ["FizzBuzz" if i % 15 == 0 else "Fizz" if i % 3 == 0 else "Buzz" if i % 5 == 0'
    " else str(i) for i in range(1, n + 1)]",
    "def is_palindrome(s):\n    t = [c.lower() for c in s if c.isalnum()]\n    return t == t[::-1]",
    "def word_count(text):\n    counts = {}\n    for w in text.split():\n        w = w.strip('.,!?;:').lower()\n"
    "        if w:\n            counts[w] = counts.get(w, 0) + 1\n    return counts",
    "def primes_upto(n):\n    return [p for p in range(2, n + 1) if all(p % d for d in range(2, int(p ** 0.5) + 1))]",
]


def test_student_fetches_edits_submits_from_the_notebook_and_sees_the_score_live(page, lab_for) -> None:
    lab = lab_for("alice")
    open_lab(page, lab)
    open_grader_from_launcher(page)
    card = page.locator("article.jp-grader-assignment", has_text="basics")
    card.get_by_text("1 of 5 submissions used").or_(card.get_by_text("0 of 5 submissions used")).wait_for()
    submit = card.get_by_role("button", name="Submit")
    assert submit.is_disabled()
    card.get_by_text("Fetch the assignment first.").wait_for()
    assert re.search(r"Due in \d+ days", card.inner_text())

    card.get_by_role("button", name="Fetch").click()
    card.get_by_text("Fetched into intro/basics/").wait_for()
    assert (lab.root / "intro" / "basics" / "basics.ipynb").exists()
    assert not submit.is_disabled()

    # Open the fetched notebook from the file browser (the panel went to its folder).
    page.locator('.jp-DirListing-item[title*="basics.ipynb"]').dblclick()
    notebook = page.locator(".jp-NotebookPanel")
    notebook.locator(".jp-Cell").first.wait_for()
    button = notebook.locator(".jp-grader-submit")
    button.wait_for()
    cells = notebook.locator(".jp-Notebook .jp-Cell")
    for index, answer in zip((1, 3, 5, 7, 9), ANSWERS, strict=True):
        editor = cells.nth(index).locator(".cm-content")
        editor.click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(answer)
    assert "raise NotImplementedError" not in cells.nth(1).inner_text()

    started = time.perf_counter()
    button.click()  # saves first, then submits
    status = notebook.locator(".jp-grader-toolbar-status")
    status.get_by_text("Graded: 10/10").wait_for(timeout=120_000)
    elapsed = time.perf_counter() - started
    # What alice typed was saved before the submission (the service graded it 10/10 above).
    saved = (lab.root / "intro" / "basics" / "basics.ipynb").read_text()
    assert (
        "return a + b" in saved
        and "NotImplementedError" not in saved.split("def add")[1].split("def fizzbuzz")[0]
    )
    # The panel (in its own tab) followed the same submission live, without a reload.
    page.locator(".lm-TabBar-tab", has_text="Grader").click()
    card.locator(".jp-grader-status", has_text="Graded: 10/10").wait_for()
    card.get_by_text("1 of 5 submissions used").wait_for()
    table = card.locator("table.jp-grader-tests")
    table.wait_for()
    assert table.locator("tbody tr").count() == 6
    assert "test_add" in table.inner_text() and "3/3" in table.inner_text()
    # The feedback page opens in a Lab tab, in an iframe sandboxed with no permission at all.
    card.get_by_role("button", name="Feedback").click()
    frame = page.locator(".jp-grader-feedback iframe")
    frame.wait_for()
    assert frame.get_attribute("sandbox") == ""
    assert "test_add" in page.frame_locator(".jp-grader-feedback iframe").locator("body").inner_text()
    page.locator(".lm-TabBar-tab", has_text="Grader").click()
    print(f"submit click -> 10/10 shown: {elapsed:.2f} s")


def test_outsider_sees_the_services_refusal(page, lab_for, course) -> None:
    lab = lab_for("out")
    open_lab(page, lab)
    open_grader_from_menu(page)
    panel = page.locator(".jp-grader-panel")
    panel.get_by_text("You are not in any lecture yet.").wait_for()
    # The course is not listed for them; opening it by its code shows the service's own refusal.
    expected = requests.get(
        f"{course.url}api/v1/lectures/intro/assignments",
        headers={"Authorization": f"token {course.tokens['out']}"},
        timeout=30,
    )
    assert expected.status_code in (403, 404), expected.text  # (it does not say whether the lecture exists)
    panel.get_by_label("Lecture code").fill("intro")
    panel.get_by_role("button", name="Open", exact=True).click()
    alert = panel.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text() == expected.json()["message"]


def test_instructor_creates_uploads_releases_regrades_all_and_exports(page, lab_for, course) -> None:
    lab = lab_for("ins")
    copy_example(lab.root, EXAMPLES / "source" / "basics", "intro/second-source")
    open_lab(page, lab)
    open_grader_from_menu(page)
    page.get_by_role("tab", name="Course management").click()
    page.get_by_role("button", name="New assignment").click()
    form = page.get_by_role("form", name="New assignment")
    form.get_by_label("Name").fill("second")
    form.get_by_label("Title").fill("Second week")
    form.get_by_label("Due").fill("2099-02-01T12:00")
    form.get_by_label("Max submissions (empty: unlimited)").fill("2")
    form.get_by_role("button", name="Create").click()
    admin = page.get_by_role("region", name="Manage second")
    admin.wait_for()
    admin.get_by_label("Source folder").fill("intro/second-source")
    admin.get_by_role("button", name="Upload source").click()
    admin.get_by_text("Uploaded intro/second-source as the source.").wait_for()
    admin.get_by_role("button", name="Release", exact=True).click()
    admin.get_by_text("Released.").wait_for()

    # A student's submission to regrade (through the client, as another user would submit).
    from grader_client import GraderClient

    with GraderClient(course.url, course.tokens["alice"]) as alice:
        submission = alice.submit("intro", "second", EXAMPLES / "submission" / "basics.ipynb")
        alice.wait("intro", "second", submission.id)
    admin.get_by_role("button", name="Apply").click()
    admin.locator("table.jp-grader-submissions tbody tr", has_text="alice").wait_for()

    record_progress(admin)
    admin.get_by_role("button", name="Regrade all").click()
    progress = admin.locator(".jp-grader-progress")
    progress.get_by_text("1 of 1 graded (done)").wait_for(timeout=120_000)
    assert progress.locator("progress").get_attribute("value") == "1"
    # The bar moved on its own while the run went on: first seen not done, then full.
    assert_live_progress(recorded_progress(page), 1)

    admin.get_by_label("CSV file").fill("intro/second-scores.csv")
    admin.get_by_role("button", name="Export CSV").click()
    admin.get_by_text("Scores exported to intro/second-scores.csv.").wait_for()
    rows = list(csv.DictReader((lab.root / "intro" / "second-scores.csv").open()))
    assert [row.get("user") or row.get("student") for row in rows] == ["alice"], rows
