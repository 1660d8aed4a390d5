"""Service overhead of a command assignment's grading, end to end over HTTP, on the local executor.

Starts the real service (SQLite, local sandboxed executor) in a temp dir, releases a command
assignment whose one stage prints its results and exits at once (`echo`), and submits M times, each
once the previous is graded (what one student sees on a quiet service). For each grading:
submit -> graded (the submit request sent until the `graded` event arrives on the event stream),
the stage's own duration as the executor measured it (sandbox set-up, the command, tear-down), and
the command's own time (the same `echo` run M times directly, no sandbox). Prints p50/p95 of each
and the service overhead per grading: submit -> graded minus the command's own time
(target p50 <= 100 ms), and the same without the sandbox's share.

    python benchmarks/command_pipeline.py --submissions 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import zip_dir  # noqa: E402
from tests.service import ServiceProcess  # noqa: E402

RESULTS = '{"tests": [{"name": "t", "score": 1, "max_score": 1}]}'
GRADER_YAML = f"""
submission: {{files: ["*.py"]}}
stages:
  - name: test
    command: ["echo", {json.dumps(RESULTS)}]
    results: stdout
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def command_own_time(m: int) -> list[float]:
    """The stage's command run directly, no sandbox: what the grading itself costs."""
    times = []
    for _ in range(m):
        started = time.perf_counter()
        subprocess.run(["echo", RESULTS], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return times


class Follower:
    """The assignment's event stream: when each submission's `graded` event arrived."""

    def __init__(self, api: str, token: str):
        self.graded: dict[int, float] = {}
        self.cond = threading.Condition()
        self.response = requests.get(
            api + "events", params={"lecture": "bench", "assignment": "cmd"},
            headers={"Authorization": f"token {token}"}, stream=True, timeout=600,
        )  # fmt: skip
        self.response.raise_for_status()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event.get("auto_status") in ("graded", "failed"):
                        with self.cond:
                            self.graded.setdefault(event["submission"], time.perf_counter())
                            self.cond.notify_all()
        except (requests.RequestException, AttributeError):  # closed at the end
            pass

    def wait(self, submission_id: int, timeout: float = 120) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: submission_id in self.graded, timeout):
                raise TimeoutError(f"submission {submission_id} not graded in {timeout} s")
            return self.graded[submission_id]


def run(svc: ServiceProcess, tmp: Path, m: int) -> None:
    admin_token = svc.token("bench-admin", admin=True)
    admin = svc.client(admin_token)
    assert admin.post("lectures", json={"code": "bench", "name": "Bench"}).status_code == 201
    assert admin.put("lectures/bench/roles/stu", json={"role": "student"}).status_code == 201
    base = "lectures/bench/assignments"
    r = admin.post(base, json={"name": "cmd", "kind": "command", "feedback_policy": "immediate"})
    assert r.status_code == 201, r.text
    (tmp / "source").mkdir()
    (tmp / "source" / "grader.yaml").write_text(GRADER_YAML)
    r = admin.put(
        f"{base}/cmd/files", data=zip_dir(tmp / "source"), headers={"Content-Type": "application/zip"}
    )
    assert r.status_code == 200, r.text
    assert admin.patch(f"{base}/cmd", json={"status": "released"}).status_code == 200
    student = svc.client(svc.token("stu"))
    follower = Follower(svc.api, admin_token)

    total, stage = [], []
    for i in range(m + 1):  # the first one warms up (imports, caches): not counted
        started = time.perf_counter()
        r = student.post(f"{base}/cmd/submissions", files={"f": ("solution.py", f"# {i}\n".encode())})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        graded = follower.wait(sid)
        book = admin.get(f"{base}/cmd/submissions/{sid}/gradebook").json()
        assert book["score"] == 1.0, book
        if i:
            total.append(graded - started)
            stage.append(book["stages"][0]["duration_s"])
    own = command_own_time(m)
    own_p50 = statistics.median(own)
    overhead = [t - own_p50 for t in total]
    beyond_sandbox = [t - s for t, s in zip(total, stage, strict=True)]

    def ms(values: list[float]) -> str:
        return f"p50 {percentile(values, 50) * 1000:7.1f} ms   p95 {percentile(values, 95) * 1000:7.1f} ms"

    print(f"command assignment, one stage (echo), {m} gradings one after another, SQLite, local executor")
    print(f"  submit -> graded                        {ms(total)}")
    print(f"  the stage (sandbox + command)           {ms(stage)}")
    print(f"  the command alone (no sandbox)          {ms(own)}")
    print(f"  service overhead (graded - command)     {ms(overhead)}   target p50 <= 100 ms")
    print(f"  overhead beyond the stage's sandbox     {ms(beyond_sandbox)}")
    follower.response.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--submissions", type=int, default=40, help="gradings measured (default 40)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-command-") as tmp_name:
        tmp = Path(tmp_name)
        svc = ServiceProcess(tmp / "data", f"sqlite:///{tmp / 'bench.sqlite'}")
        svc.start()
        try:
            run(svc, tmp, args.submissions)
        finally:
            svc.stop()


if __name__ == "__main__":
    main()
