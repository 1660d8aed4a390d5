"""The README's walkthrough, run as written (bash), against a fresh service: it must work as documented."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

from ..service import ServiceProcess
from .conftest import EXAMPLES, REPO


def walkthrough() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Five-minute walkthrough") :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_readme_walkthrough_goes_from_an_empty_service_to_a_csv(tmp_path: Path) -> None:
    service = ServiceProcess(
        tmp_path / "grader-data", f"sqlite:///{tmp_path / 'grader-data' / 'grader.sqlite'}"
    )
    service.start("--upgrade-db")
    try:
        script = walkthrough().replace("http://127.0.0.1:4010/", service.url)
        script = script.replace("/tmp/alice-basics", "alice-basics")
        script = script.replace(". .venv/bin/activate", "")  # the tests' interpreter's bin is on PATH
        (tmp_path / "examples").symlink_to(EXAMPLES)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GRADER_")},
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }
        done = subprocess.run(
            ["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        service.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_primes_partial" in done.stdout and "Logged in" in done.stderr
    rows = list(csv.DictReader((tmp_path / "grades.csv").read_text().splitlines()))
    assert [(r["user"], r["final_score"], r["max_score"]) for r in rows] == [("alice", "10.0", "10.0")]
    assert (tmp_path / "alice-basics" / "basics.ipynb").is_file()
