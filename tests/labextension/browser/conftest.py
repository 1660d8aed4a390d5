"""The extension in a real browser: Debian's Chromium (driven by Playwright), a real JupyterLab with
the extension installed, its server extension, and the real service as a subprocess. Nothing mocked.

One Lab per user (each with that user's service token in its environment, as a user's own server
has it); each test drives its user's Lab through the UI only and saves a screenshot under
`$GRADER_TEST_OUTPUT` (default `test-output/`), which CI keeps.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ...postgres import free_port
from ...service import ServiceProcess

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
CHROMIUM = os.environ.get("GRADER_TEST_CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(os.environ.get("GRADER_TEST_OUTPUT", REPO / "test-output")) / "labextension"
TOKEN = "browser-test-token"


def _require(condition: bool, why: str) -> None:
    """Missing tools fail the run in CI (which installs them) and skip, saying why, elsewhere."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    """Chromium for one module's tests.

    Module-scoped on purpose: while `sync_playwright()` is open, Playwright's event loop counts as
    running in this thread, so every later test that calls `asyncio.run()` would fail.
    """
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    _require(
        importlib.util.find_spec("playwright") is not None,
        "Python playwright is missing (pip install playwright)",
    )
    from playwright.sync_api import sync_playwright

    listed = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True, text=True
    )
    _require(
        "grader-labextension" in listed.stdout + listed.stderr,
        "the grader-labextension JavaScript is not installed (pip install ./labextension)",
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("browser-service")
    proc = ServiceProcess(root / "data", f"sqlite:///{root / 'grader.sqlite'}")
    proc.start("--upgrade-db")
    try:
        yield proc
    finally:
        proc.stop()


class Course:
    """Lecture 'intro': instructor ins, student alice; out has no role in it.

    'basics' is released with immediate feedback, so alice sees her score at once.
    """

    def __init__(self, svc: ServiceProcess):
        from grader_client import GraderClient

        self.url = svc.url
        self.tokens = {name: svc.token(name) for name in ("ins", "alice", "out")}
        with GraderClient(self.url, svc.token("root", admin=True)) as admin:
            admin.create_lecture("intro", "Intro to Python")
            admin.set_role("intro", "ins", "instructor")
            admin.set_role("intro", "alice", "student")
        with GraderClient(self.url, self.tokens["ins"]) as ins:
            ins.create_assignment(
                "intro",
                "basics",
                due_date="2099-01-01T00:00:00Z",
                max_submissions=5,
                feedback_policy="immediate",
            )
            ins.upload_assignment("intro", "basics", EXAMPLES / "source" / "basics")
            ins.release_assignment("intro", "basics")


@pytest.fixture(scope="module")
def course(svc: ServiceProcess) -> Course:
    return Course(svc)


class Lab:
    """`jupyter lab` for one user, on a free port, with an empty root dir of its own."""

    def __init__(self, home: Path, grader_url: str, grader_token: str):
        self.home = home
        self.root = home / "files"
        self.root.mkdir(parents=True)
        self.port = free_port()
        config = home / "config"
        (config / "labconfig").mkdir(parents=True)
        # No news prompt over the panels.
        (config / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GRADER_", "JUPYTERHUB_"))},
            "GRADER_URL": grader_url,
            "GRADER_TOKEN": grader_token,
            "XDG_CONFIG_HOME": str(home / "xdg"),
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "HOME": str(home),
        }
        self.log_path = home / "lab.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - open while Lab runs
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--allow-root",
                "--no-browser",
                f"--port={self.port}",
                "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={TOKEN}",
                f"--ServerApp.root_dir={self.root}",
                f"--LabApp.user_settings_dir={self.home / 'settings'}",
                f"--LabApp.workspaces_dir={self.home / 'workspaces'}",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited:\n{self.log_path.read_text()}")
            try:
                if requests.get(f"{self.url}api/status?token={TOKEN}", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"jupyter lab did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def lab_for(course: Course, tmp_path_factory: pytest.TempPathFactory):
    """`lab_for("alice")`: that user's running Lab (started once per module)."""
    labs: dict[str, Lab] = {}

    def get(user: str) -> Lab:
        if user not in labs:
            lab = Lab(tmp_path_factory.mktemp(f"lab-{user}"), course.url, course.tokens[user])
            lab.start()
            labs[user] = lab
        return labs[user]

    yield get
    for lab in labs.values():
        lab.stop()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):
    """A fresh browser page; its screenshot is saved under OUTPUT whether the test passed or not."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{request.node.name}.png"), full_page=False)
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def open_lab(page, lab: Lab) -> None:
    """Lab in its default layout (the launcher), whatever an earlier page of this Lab left open."""
    page.goto(f"{lab.url}lab?reset&token={TOKEN}")
    page.wait_for_selector(".jp-Launcher", timeout=60_000)


def copy_example(root: Path, source: Path, relative: str) -> Path:
    target = root / relative
    shutil.copytree(source, target)
    return target


def open_grader_from_launcher(page) -> None:
    page.locator(".jp-LauncherCard", has_text="Grader").click()
    page.wait_for_selector(".jp-grader-panel h1")


def open_grader_from_menu(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Grader").click()
    page.locator(".lm-Menu-itemLabel", has_text="Grader").click()
    page.wait_for_selector(".jp-grader-panel h1")


# Every state the regrade progress bar shows, in order, recorded in the page as it changes (a
# poll from here could miss short-lived ones).
_RECORD_PROGRESS = """root => {
  window.graderProgress = [];
  const note = () => {
    const bar = root.querySelector('.jp-grader-progress progress');
    const text = root.querySelector('.jp-grader-progress [role=status]');
    if (!bar || !text) { return; }
    const state = { value: Number(bar.value), text: text.textContent };
    const last = window.graderProgress[window.graderProgress.length - 1];
    if (!last || last.value !== state.value || last.text !== state.text) {
      window.graderProgress.push(state);
    }
  };
  new MutationObserver(note).observe(root, {
    subtree: true, childList: true, characterData: true, attributes: true
  });
}"""


def record_progress(region) -> None:
    """Start recording the progress bar's states inside `region` (a locator)."""
    region.evaluate(_RECORD_PROGRESS)


def recorded_progress(page) -> list[dict]:
    return page.evaluate("window.graderProgress")


def assert_live_progress(states: list[dict], total: int) -> None:
    """The bar was seen before the regrade was done, only moved forward, and ended full."""
    assert states, "no progress bar was shown"
    assert states[0]["value"] < 1 and "(done)" not in states[0]["text"], states
    values = [state["value"] for state in states]
    assert values == sorted(values), states
    assert states[-1] == {"value": 1, "text": f"{total} of {total} graded (done)"}, states
