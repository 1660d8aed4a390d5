"""The JupyterLab extension in Chromium: click Submit → score shown, and the panel's first paint.

Starts the real service (SQLite, local sandboxed executor), a real JupyterLab with the extension
(its JavaScript must be installed: `pip install ./labextension`), and Debian's Chromium through
Playwright, as the browser tests do (tests/labextension/browser). Then:

- submit: alice's fetched README example notebook (the solution, 10/10) is open; the notebook
  toolbar's Submit is clicked N times, each timed until the toolbar shows that submission's score
  (save, POST, queued → running → graded over the event relay, the score). After warm-up runs.
- first paint: the Grader panel is opened from the main menu with 20 released assignments and
  timed until all 20 assignment cards are shown; closed and opened again N times.
- the size of the extension's JavaScript bundle.

    python benchmarks/lab_submit.py --runs 20
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.cli_submit import client_job_seconds  # noqa: E402
from grader_client import GraderClient  # noqa: E402
from tests.labextension.browser.conftest import CHROMIUM, TOKEN, Lab  # noqa: E402
from tests.service import ServiceProcess  # noqa: E402

EXAMPLES = ROOT / "examples"
BUNDLE = ROOT / "labextension" / "grader_labextension" / "labextension" / "static"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, times: list[float]) -> None:
    print(
        f"{name:<44} p50 {statistics.median(times) * 1000:6.0f} ms   p95 {percentile(times, 0.95) * 1000:6.0f} ms"
        f"   min {min(times) * 1000:6.0f} ms   (n={len(times)})"
    )


def set_up(svc: ServiceProcess, assignments: int) -> dict[str, str]:
    """Lecture 'intro' with 'basics' (unlimited, immediate feedback) and `assignments` more in 'many'."""
    tokens = {"admin": svc.token("admin", admin=True), "alice": svc.token("alice")}
    source = EXAMPLES / "source" / "basics"
    with GraderClient(svc.url, tokens["admin"]) as admin:
        for code in ("intro", "many"):
            admin.create_lecture(code, code.title())
            admin.set_role(code, "alice", "student")
        admin.create_assignment(
            "intro", "basics", due_date="2099-01-15T23:59:00Z", feedback_policy="immediate"
        )
        admin.upload_assignment("intro", "basics", source)
        admin.release_assignment("intro", "basics")
        for i in range(assignments):
            name = f"week-{i + 1:02d}"
            admin.create_assignment(
                "many", name, due_date=f"2099-{1 + i % 12:02d}-15T23:59:00Z", max_submissions=3
            )
            admin.upload_assignment("many", name, source)
            admin.release_assignment("many", name)
    return tokens


def time_submits(page, runs: int) -> list[float]:
    status = page.locator(".jp-NotebookPanel .jp-grader-toolbar-status")
    button = page.locator(".jp-NotebookPanel .jp-grader-submit")
    times = []
    for _ in range(runs):
        before = status.get_attribute("data-submission")
        started = time.perf_counter()
        button.click()
        page.wait_for_function(
            """([before]) => {
                const s = document.querySelector('.jp-NotebookPanel .jp-grader-toolbar-status');
                return s && s.dataset.submission && s.dataset.submission !== before
                    && s.textContent.includes('Graded: 10/10');
            }""",
            arg=[before or ""],
            polling="raf",
            timeout=120_000,
        )
        times.append(time.perf_counter() - started)
        if status.get_attribute("data-status") != "graded":
            raise RuntimeError(f"not graded: {status.inner_text()}")
    return times


def time_first_paint(page, runs: int, assignments: int) -> list[float]:
    times = []
    for _ in range(runs):
        page.locator(".lm-MenuBar-itemLabel", has_text="Grader").click()
        item = page.locator(".lm-Menu-itemLabel", has_text="Grader")
        item.wait_for()
        started = time.perf_counter()
        item.click()
        page.wait_for_function(
            "n => document.querySelectorAll('.jp-grader-panel article.jp-grader-assignment').length >= n",
            arg=assignments + 1,
            polling="raf",
            timeout=60_000,
        )
        times.append(time.perf_counter() - started)
        page.locator(".lm-TabBar-tab", has_text="Grader").locator(".lm-TabBar-tabCloseIcon").click()
        page.locator(".jp-grader-panel").wait_for(state="detached")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="timed submits and panel openings")
    parser.add_argument("--warmup", type=int, default=3, help="submits before timing")
    parser.add_argument("--assignments", type=int, default=20, help="assignments in the panel")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        svc = ServiceProcess(root / "data", f"sqlite:///{root / 'grader.sqlite'}")
        svc.start("--upgrade-db")
        lab = None
        try:
            tokens = set_up(svc, args.assignments)
            lab = Lab(root / "lab", svc.url, tokens["alice"])
            # alice's fetched notebook, already solved and saved.
            (lab.root / "intro" / "basics").mkdir(parents=True)
            shutil.copy(
                EXAMPLES / "submission" / "basics.ipynb", lab.root / "intro" / "basics" / "basics.ipynb"
            )
            lab.start()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{lab.url}lab/tree/intro/basics/basics.ipynb?token={TOKEN}")
                page.locator(".jp-NotebookPanel .jp-grader-submit").wait_for(timeout=60_000)
                time_submits(page, args.warmup)
                submits = time_submits(page, args.runs)
                report("click Submit -> 10/10 shown (warm)", submits)
                with GraderClient(svc.url, tokens["admin"]) as admin:
                    timed = list(admin.submissions("intro", "basics"))[: args.runs]
                service = [client_job_seconds(svc, s.id) for s in timed]
                report("  of which the service: submit -> graded", service)
                print(
                    "  browser + Lab server share (p50 difference): "
                    f"{(statistics.median(submits) - statistics.median(service)) * 1000:.0f} ms"
                )
                paints = time_first_paint(page, args.runs, args.assignments)
                browser.close()
        finally:
            if lab is not None:
                lab.stop()
            svc.stop()
    report(f"panel first paint, {args.assignments}+1 assignments", paints)
    size = sum(f.stat().st_size for f in BUNDLE.glob("*.js"))
    print(f"extension JavaScript bundle: {size / 1000:.1f} kB ({len(list(BUNDLE.glob('*.js')))} files)")


if __name__ == "__main__":
    main()
