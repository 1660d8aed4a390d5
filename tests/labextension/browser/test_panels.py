"""The panels' other promises (issue 17), in Chromium against the real service: Submit disabled with
the reason, every refusal shown with the service's own message, a Lab notification when a grading
finishes while the panel is closed, regrade of a selection with live progress, every control reached
by keyboard and named, and the Lab's dark theme followed.

One service, one course and one Lab per user for the whole module (the first Labs of the module are
the costly part); each test loads the Lab afresh in its own page.
"""

from __future__ import annotations

import re
import shutil

import pytest

from .conftest import (
    EXAMPLES,
    OUTPUT,
    Course,
    assert_live_progress,
    open_grader_from_launcher,
    open_grader_from_menu,
    open_lab,
    record_progress,
    recorded_progress,
)

SOLUTION = EXAMPLES / "submission" / "basics.ipynb"
PAST = "2020-01-01T00:00:00Z"
FUTURE = "2099-01-01T00:00:00Z"


class Extra:
    """More assignments of 'intro' (all released, from the basics example), each for one state:

    once    max 1 submission, alice used it
    closed  due in the past, no late window
    stale   open when alice's panel loads; the instructor then moves the due date into the past
    last    max 2, alice used 1; she uses the second elsewhere while her panel shows 1 of 2
    """

    def __init__(self, course: Course):
        from grader_client import GraderClient

        self.course = course
        with GraderClient(course.url, course.tokens["ins"]) as ins:
            for name, due, limit in (
                ("once", FUTURE, 1),
                ("closed", PAST, None),
                ("stale", FUTURE, None),
                ("last", FUTURE, 2),
            ):
                ins.create_assignment(
                    "intro", name, due_date=due, max_submissions=limit, feedback_policy="immediate"
                )
                ins.upload_assignment("intro", name, EXAMPLES / "source" / "basics")
                ins.release_assignment("intro", name)
        with self.client("alice") as alice:
            for name in ("once", "last"):
                alice.wait("intro", name, alice.submit("intro", name, SOLUTION).id)

    def client(self, user: str):
        from grader_client import GraderClient

        return GraderClient(self.course.url, self.course.tokens[user])

    def refusal(self, user: str, assignment: str) -> str:
        """The service's own message when `user` submits to `assignment` now."""
        from grader_client.errors import APIError

        with self.client(user) as client, pytest.raises(APIError) as refused:
            client.submit("intro", assignment, SOLUTION)
        return refused.value.message


@pytest.fixture(scope="module")
def extra(course: Course) -> Extra:
    return Extra(course)


def card_of(page, name: str):
    return page.locator("article.jp-grader-assignment").filter(
        has=page.get_by_role("heading", name=name, exact=True)
    )


def fetch(card, name: str) -> None:
    card.get_by_role("button", name="Fetch").click()
    card.get_by_text(f"Fetched into intro/{name}/").wait_for()


def test_submit_is_disabled_with_the_reason(page, lab_for, extra) -> None:
    lab = lab_for("alice")
    open_lab(page, lab)
    open_grader_from_launcher(page)
    for name, reason in (
        ("once", "All 1 allowed submissions are used."),
        ("closed", "The deadline has passed."),
    ):
        card = card_of(page, name)
        submit = card.get_by_role("button", name="Submit")
        card.get_by_text("Fetch the assignment first.").wait_for()
        assert submit.is_disabled()
        fetch(card, name)
        card.get_by_text(reason).wait_for()
        assert submit.is_disabled()
        # The reason is the button's description, for screen readers too.
        described = submit.get_attribute("aria-describedby")
        assert described and page.locator(f"[id='{described}']").inner_text() == reason
    card_of(page, "closed").locator(".jp-grader-deadline", has_text="Closed ").wait_for()

    # The notebook toolbar's button says the same.
    page.locator('.jp-DirListing-item[title*="basics.ipynb"]').dblclick()  # intro/closed/ (fetched last)
    toolbar = page.locator(".jp-NotebookPanel .jp-grader-toolbar")
    toolbar.wait_for()
    button = toolbar.locator(".jp-grader-submit")
    assert button.is_disabled()
    assert button.get_attribute("title") == "The deadline has passed."
    assert toolbar.locator(".jp-grader-toolbar-status").inner_text() == "The deadline has passed."


def test_service_refusals_show_the_services_message(page, lab_for, extra) -> None:
    lab = lab_for("alice")
    open_lab(page, lab)
    open_grader_from_launcher(page)
    stale, last = card_of(page, "stale"), card_of(page, "last")
    last.get_by_text("1 of 2 submissions used").wait_for()
    fetch(stale, "stale")
    fetch(last, "last")

    # The deadline moves into the past while the panel still shows the assignment open.
    with extra.client("ins") as ins:
        ins.update_assignment("intro", "stale", due_date=PAST)
    deadline_message = extra.refusal("alice", "stale")
    stale.get_by_role("button", name="Submit").click()
    alert = stale.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text() == deadline_message

    # The last allowed submission is used elsewhere while the panel shows 1 of 2.
    with extra.client("alice") as alice:
        alice.submit("intro", "last", SOLUTION)
    limit_message = extra.refusal("alice", "last")
    last.get_by_role("button", name="Submit").click()
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_text("This is your last allowed submission (2 of 2).").wait_for()
    dialog.get_by_role("button", name="Submit").click()
    alert = last.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text() == limit_message
    assert deadline_message != limit_message


def test_a_grading_that_finishes_while_the_panel_is_closed_is_notified(page, lab_for, extra) -> None:
    lab = lab_for("alice")
    open_lab(page, lab)
    open_grader_from_launcher(page)
    fetch(card_of(page, "basics"), "basics")
    shutil.copy(SOLUTION, lab.root / "intro" / "basics" / "basics.ipynb")  # alice's finished work
    tab = page.locator(".lm-TabBar-tab", has_text="Grader")
    tab.locator(".lm-TabBar-tabCloseIcon").click()
    assert tab.count() == 0

    page.locator('.jp-DirListing-item[title*="basics.ipynb"]').dblclick()
    notebook = page.locator(".jp-NotebookPanel")
    button = notebook.locator(".jp-grader-submit")
    button.wait_for()
    assert tab.count() == 0
    button.click()
    status = notebook.locator(".jp-grader-toolbar-status")
    status.get_by_text("Queued").or_(status.get_by_text("Running")).or_(
        status.get_by_text("Graded")
    ).wait_for()
    submission = int(status.get_attribute("data-submission"))
    toast = page.locator(".jp-Notification-Toast-success", has_text=f"basics #{submission} graded:")
    toast.wait_for(timeout=120_000)
    with extra.client("alice") as alice:
        graded = alice.submission("intro", "basics", submission)
    assert graded.auto_status == "graded" and graded.score == 10
    assert f"basics #{submission} graded: 10/10" in toast.inner_text()
    # Its action opens the panel, which shows the same result.
    toast.get_by_role("button", name="Open Grader").click()
    card_of(page, "basics").locator(".jp-grader-status", has_text="Graded: 10/10").wait_for()


def test_refetch_asks_and_keeps_a_backup_and_withdraw_asks(page, lab_for, extra) -> None:
    lab = lab_for("alice")
    folder = lab.root / "intro" / "basics"
    shutil.rmtree(folder, ignore_errors=True)
    with extra.client("alice") as alice:
        withdrawn = alice.submit("intro", "basics", SOLUTION).id
    open_lab(page, lab)
    open_grader_from_launcher(page)
    card = card_of(page, "basics")
    fetch(card, "basics")
    notebook = folder / "basics.ipynb"
    released = notebook.read_text()
    notebook.write_text(released.replace("raise NotImplementedError()", "return 42  # my work", 1))
    changed = notebook.read_text()
    assert changed != released

    dialog = page.locator(".jp-Dialog")
    card.get_by_role("button", name="Fetch").click()
    dialog.get_by_text("intro/basics/basics.ipynb").wait_for()
    dialog.get_by_role("button", name="Keep my files").click()
    dialog.wait_for(state="detached")
    assert notebook.read_text() == changed

    card.get_by_role("button", name="Fetch").click()
    dialog.get_by_role("button", name="Back up and replace").click()
    info = card.get_by_text("your previous files are in")
    info.wait_for()
    backup = info.inner_text().split("your previous files are in ")[1].rstrip(")")
    assert (lab.root / backup / "basics.ipynb").read_text() == changed
    assert notebook.read_text() == released

    # Withdraw asks first, then the submission leaves the history.
    card.locator(".jp-grader-history summary").click()
    row = card.locator(".jp-grader-history tbody tr").filter(
        has=page.get_by_role("cell", name=str(withdrawn), exact=True)
    )
    row.get_by_role("button", name="Withdraw").click()
    dialog.get_by_text(f"Submission #{withdrawn} of").wait_for()
    dialog.get_by_role("button", name="Withdraw").click()
    row.wait_for(state="detached")
    with extra.client("alice") as alice:
        remaining = {s.id for s in alice.submissions("intro", "basics")}
    assert withdrawn not in remaining


def test_instructor_edits_reads_logs_scores_by_hand_and_releases_feedback(page, lab_for, extra) -> None:
    lab = lab_for("ins")
    open_lab(page, lab)
    open_grader_from_menu(page)
    page.get_by_role("tab", name="Course management").click()
    page.get_by_role("button", name="last", exact=True).click()
    admin = page.get_by_role("region", name="Manage last")
    admin.get_by_role("button", name="Edit").click()
    form = page.get_by_role("form", name="Edit last")
    form.get_by_label("Title").fill("The last one")
    form.get_by_label("Late penalty (0–1)").fill("0.25")
    form.get_by_role("button", name="Save").click()
    page.get_by_role("button", name="The last one", exact=True).wait_for()
    with extra.client("ins") as ins:
        edited = ins.assignment("intro", "last")
    assert edited.title == "The last one" and edited.late_penalty == 0.25

    row = admin.locator("table.jp-grader-submissions tbody tr", has_text="alice")
    row.wait_for()
    number = int(row.locator("td").nth(1).inner_text())
    row.get_by_role("button", name="Logs").click()
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_text(f"Grading log of #{number} (alice)").wait_for()
    with extra.client("ins") as ins:
        log = ins.logs("intro", "last", number)
    assert log.strip() and log.strip().splitlines()[0] in dialog.locator("pre").inner_text()
    dialog.get_by_role("button", name="Close").click()
    dialog.wait_for(state="detached")

    row.get_by_role("button", name="Score").click()
    dialog.locator("input").fill("7")
    dialog.locator("textarea").fill("Good, but see the feedback")
    dialog.get_by_role("button", name="Save").click()
    row.get_by_text("7/10 — Good, but see the feedback").wait_for()
    with extra.client("ins") as ins:
        scored = ins.submission("intro", "last", number)
    assert scored.score == 7 and scored.comment == "Good, but see the feedback"

    admin.get_by_role("button", name="Release feedback").click()
    released = admin.get_by_text(re.compile(r"Feedback released for \d+ submission"))
    released.wait_for()


# --- keyboard and labels ------------------------------------------------------------------------

# Mark every control a keyboard user must reach (shown and enabled) and return how many.
_MARK_CONTROLS = """root => {
  const selector = 'button, input, select, textarea, summary, a[href], [tabindex]:not([tabindex="-1"])';
  const controls = Array.from(root.querySelectorAll(selector)).filter(
    el => !el.disabled && el.checkVisibility() && !el.closest('details:not([open]) > :not(summary)')
  );
  controls.forEach((el, i) => el.setAttribute('data-grader-control', String(i)));
  return controls.length;
}"""


def tab_through(page, root_selector: str) -> list[dict]:
    """Focus the first control in the root, then press Tab until focus leaves it: each stop's
    control (its mark), role and accessible name as Chromium's accessibility tree has them."""
    root = page.locator(root_selector)
    count = root.evaluate(_MARK_CONTROLS)
    assert count > 0
    cdp = page.context.new_cdp_session(page)
    root.locator("[data-grader-control='0']").focus()
    stops: list[dict] = []
    for _ in range(3 * count + 5):
        active = cdp.send(
            "Runtime.evaluate",
            {"expression": f"(e => e && e.closest({root_selector!r}) ? e : null)(document.activeElement)"},
        )["result"]
        if active.get("subtype") == "null" or "objectId" not in active:
            break
        node = cdp.send(
            "Accessibility.getPartialAXTree", {"objectId": active["objectId"], "fetchRelatives": False}
        )["nodes"][0]
        mark = cdp.send(
            "Runtime.callFunctionOn",
            {
                "objectId": active["objectId"],
                "functionDeclaration": "function () { return this.getAttribute('data-grader-control'); }",
                "returnByValue": True,
            },
        )["result"].get("value")
        stop = {
            "control": mark,
            "role": node.get("role", {}).get("value"),
            "name": (node.get("name") or {}).get("value", ""),
        }
        if stops and stop["control"] == stops[0]["control"]:
            break
        stops.append(stop)
        page.keyboard.press("Tab")
    cdp.detach()
    reached = {stop["control"] for stop in stops}
    missed = [str(i) for i in range(count) if str(i) not in reached]
    assert not missed, (
        f"not reachable by Tab: {[root.locator(f'[data-grader-control={m!r}]').evaluate('e => e.outerHTML') for m in missed]}"
    )
    unnamed = [stop for stop in stops if not stop["name"].strip()]
    assert not unnamed, f"focused controls without an accessible name: {unnamed}"
    return stops


def test_student_panel_is_usable_by_keyboard_with_named_controls(page, lab_for, extra) -> None:
    lab = lab_for("alice")
    open_lab(page, lab)
    open_grader_from_launcher(page)
    once = card_of(page, "once")
    once.locator(".jp-grader-history summary").wait_for()
    # The history opens from the keyboard, and its Withdraw buttons join the tab order.
    once.locator(".jp-grader-history summary").focus()
    page.keyboard.press("Enter")
    once.get_by_role("button", name="Withdraw").first.wait_for()
    stops = tab_through(page, ".jp-grader-panel")
    names = [stop["name"] for stop in stops]
    assert {"Fetch", "Withdraw", "Lecture code", "Open"} <= set(names), names
    print(f"student panel: {len(stops)} controls reached by Tab, all named")


def test_instructor_panel_is_usable_by_keyboard_and_regrades_a_selection_live(page, lab_for, extra) -> None:
    lab = lab_for("ins")
    open_lab(page, lab)
    open_grader_from_menu(page)
    page.get_by_role("tab", name="Course management").focus()
    page.keyboard.press("Enter")
    page.get_by_role("button", name="once", exact=True).focus()
    page.keyboard.press("Enter")
    admin = page.get_by_role("region", name="Manage once")
    row = admin.locator("table.jp-grader-submissions tbody tr", has_text="alice")
    row.wait_for()
    # Regrade the selected submission from the keyboard; the bar follows it live.
    row.get_by_role("checkbox").focus()
    page.keyboard.press("Space")
    assert row.get_by_role("checkbox").is_checked()
    record_progress(admin)
    admin.get_by_role("button", name="Regrade selected").focus()
    page.keyboard.press("Enter")
    admin.locator(".jp-grader-progress").get_by_text("1 of 1 graded (done)").wait_for(timeout=120_000)
    assert_live_progress(recorded_progress(page), 1)
    row.locator("td", has_text="graded").wait_for()

    page.get_by_role("button", name="New assignment").focus()
    page.keyboard.press("Enter")
    page.get_by_role("form", name="New assignment").wait_for()
    stops = tab_through(page, ".jp-grader-panel")
    names = {stop["name"] for stop in stops}
    expected = {"Course management", "Name", "Due", "Create", "Source folder", "Upload source", "Regrade all"}
    assert expected <= names, names
    assert any(name.startswith("Select submission") for name in names), names
    print(f"instructor panel: {len(stops)} controls reached by Tab, all named")


# --- theme ----------------------------------------------------------------------------------------

_COLORS = """() => {
  const css = getComputedStyle(document.body);
  const of = selector => {
    const style = getComputedStyle(document.querySelector(selector));
    return { background: style.backgroundColor, color: style.color };
  };
  return {
    theme: document.body.dataset.jpThemeName,
    layout1: css.getPropertyValue('--jp-layout-color1').trim(),
    layout0: css.getPropertyValue('--jp-layout-color0').trim(),
    panel: of('.jp-grader'),
    card: of(%r),
    input: of('.jp-grader input')
  };
}"""


def _luminance(css_color: str) -> float:
    """0 (black) .. 1 (white) of an `rgb(r, g, b)` / `rgba(...)` value."""
    parts = css_color[css_color.index("(") + 1 : css_color.index(")")].split(",")
    r, g, b = (float(p) / 255 for p in parts[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _rgb(page, css_value: str) -> str:
    """A theme variable's value as Chromium computes it (`rgb(...)`)."""
    return page.evaluate(
        "v => { const e = document.createElement('div'); e.style.color = v; document.body.append(e);"
        " const c = getComputedStyle(e).color; e.remove(); return c; }",
        css_value,
    )


def switch_to_dark(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel").get_by_text("JupyterLab Dark", exact=True).click()
    page.wait_for_function("document.body.dataset.jpThemeName === 'JupyterLab Dark'")
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'")


def check_theme(page, card: str, dark: bool) -> dict:
    colors = page.evaluate(_COLORS % card)
    assert colors["panel"]["background"] == _rgb(page, colors["layout1"]), colors
    assert colors["card"]["background"] == _rgb(page, colors["layout0"]), colors
    for part in ("panel", "card", "input"):
        background = _luminance(colors[part]["background"])
        text = _luminance(colors[part]["color"])
        if dark:
            assert background < 0.35 < text, (part, colors)
        else:
            assert text < 0.35 < background, (part, colors)
    return colors


def test_panels_follow_the_dark_theme(page, browser, lab_for, extra) -> None:
    lab = lab_for("alice")
    open_lab(page, lab)
    open_grader_from_launcher(page)
    card_of(page, "basics").wait_for()
    light = check_theme(page, "article.jp-grader-assignment", dark=False)
    switch_to_dark(page)
    dark = check_theme(page, "article.jp-grader-assignment", dark=True)
    assert dark["panel"] != light["panel"]

    # The instructor panel, in the instructor's Lab.
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        staff = context.new_page()
        open_lab(staff, lab_for("ins"))
        open_grader_from_menu(staff)
        staff.get_by_role("tab", name="Course management").click()
        staff.get_by_role("button", name="once", exact=True).click()
        staff.get_by_role("region", name="Manage once").locator("tbody tr", has_text="alice").wait_for()
        check_theme(staff, ".jp-grader-assignment-admin", dark=False)
        switch_to_dark(staff)
        check_theme(staff, ".jp-grader-assignment-admin", dark=True)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        staff.screenshot(path=str(OUTPUT / "instructor_panel_dark.png"))
    finally:
        context.close()


def test_service_down_is_said_in_the_panel(page, lab_for, extra, svc) -> None:
    """Last in the module: it stops the service."""
    lab = lab_for("alice")
    open_lab(page, lab)
    open_grader_from_launcher(page)
    card = card_of(page, "basics")
    card.get_by_role("button", name="Fetch").wait_for()
    svc.stop()
    card.get_by_role("button", name="Fetch").click()
    alert = card.get_by_role("alert")
    alert.wait_for()
    address = extra.course.url.rstrip("/")
    assert alert.inner_text().startswith(f"The grader service at {address}"), alert.inner_text()
    assert "is not reachable" in alert.inner_text()
    # Opened again, the panel says it at once (the server extension's own config answer).
    open_lab(page, lab)
    open_grader_from_launcher(page)
    panel_alert = page.locator(".jp-grader-panel > .jp-grader-error")
    panel_alert.wait_for()
    assert "is not reachable" in panel_alert.inner_text()
