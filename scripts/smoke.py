#!/usr/bin/env python3
"""Smoke test of an installed grader-service: start it, grade one submission, stop it.

What a new user does after the README's install command, checked end to end: the service starts
on the defaults with the sandbox required, an instructor publishes the "basics" assignment, a
student submits the reference solution and it is graded 10/10, in the sandbox /health names.
Only the standard library is used, so any Python 3 can run this against any installation:

    scripts/smoke.py --bin .venv/bin                      # the venv holding grader-service
    scripts/smoke.py --bin /opt/venv/bin --expect-sandbox fork-server

Prints the time each step took; exits non-zero, with the service's log, if a step fails.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "corpus"
SOURCE = CORPUS / "source" / "basics" / "basics.ipynb"
SUBMISSION = CORPUS / "submitted" / "s08" / "basics" / "basics.ipynb"  # the reference solution
EXPECTED_SCORE = 10.0


class SmokeFailed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base: str, token: str | None = None):
        self.base, self.token = base, token

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if self.token:
            request.add_header("Authorization", f"token {self.token}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise SmokeFailed(
                f"{method} {path}: {e.code} {e.read().decode(errors='replace')[:500]}"
            ) from None
        return json.loads(raw) if raw[:1] in (b"{", b"[") else raw


class Step:
    """Times a step and prints it: `with Step("name"): ...`."""

    timings: list[tuple[str, float]] = []

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        self.started = time.monotonic()
        print(f"-- {self.name} ...", flush=True)

    def __exit__(self, kind: object, *_: object) -> None:
        elapsed = time.monotonic() - self.started
        Step.timings.append((self.name, elapsed))
        print(f"   {self.name}: {'ok' if kind is None else 'FAILED'} in {elapsed:.1f} s", flush=True)


def run(args: argparse.Namespace, work: Path) -> None:
    service = str(Path(args.bin) / "grader-service")
    data = work / "data"
    config = work / "grader_service_config.py"
    # The default, spelled out: this smoke must never pass by grading without a sandbox.
    config.write_text("c.LocalAutogradeExecutor.require_sandbox = True\n")
    common = ["-f", str(config), "--data-dir", str(data)]
    port = free_port()
    log_path = work / "service.log"
    api_root = f"http://127.0.0.1:{port}/api/v1/"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [service, *common, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with Step("start the service (until /health answers)"):
            health = wait_healthy(proc, Api(api_root), args.start_timeout)
        print(f"   sandbox: {health.get('sandbox')}; grading: {health.get('grading')}")
        if not health.get("grading"):
            raise SmokeFailed(f"the service does not grade: {health.get('grading_reason')}")
        if args.expect_sandbox and health.get("sandbox") != args.expect_sandbox:
            raise SmokeFailed(f"sandbox is {health.get('sandbox')!r}, expected {args.expect_sandbox!r}")
        with Step("create tokens"):
            admin = Api(api_root, token(service, common, "admin", admin=True))
            alice = Api(api_root, token(service, common, "alice"))
        with Step("publish the basics assignment"):
            admin.call("POST", "lectures", {"code": "intro", "name": "Intro to Python"})
            admin.call("PUT", "lectures/intro/roles/alice", {"role": "student"})
            admin.call(
                "POST",
                "lectures/intro/assignments",
                {"name": "basics", "due_date": "2099-01-15T23:59:00Z", "max_submissions": 5},
            )
            admin.call("PUT", "lectures/intro/assignments/basics/files", zipped(SOURCE), "application/zip")
            admin.call("PATCH", "lectures/intro/assignments/basics", {"status": "released"})
            released = alice.call("GET", "lectures/intro/assignments/basics/files")
            if not zipfile.ZipFile(io.BytesIO(released)).namelist():
                raise SmokeFailed("the student version is empty")
        with Step("submit and wait until graded"):
            path = "lectures/intro/assignments/basics/submissions"
            sub = alice.call(
                "POST", f"{path}?filename=basics.ipynb", SUBMISSION.read_bytes(), "application/x-ipynb+json"
            )
            deadline = time.monotonic() + args.grade_timeout
            while sub["auto_status"] not in ("graded", "failed"):
                if time.monotonic() > deadline:
                    raise SmokeFailed(
                        f"submission {sub['id']} still {sub['auto_status']} after {args.grade_timeout} s"
                    )
                time.sleep(0.25)
                sub = admin.call("GET", f"{path}/{sub['id']}")  # staff see the score before its release
        if sub["auto_status"] != "graded" or sub["score"] != EXPECTED_SCORE:
            raise SmokeFailed(
                f"expected graded {EXPECTED_SCORE:g}, got {sub['auto_status']} {sub.get('score')}: {sub}"
            )
        print(f"   graded {sub['score']:g}/{sub['max_score']:g}")
    except BaseException:
        stop(proc)
        print(
            f"---- service log ({log_path}):\n{log_path.read_text(errors='replace')[-6000:]}", file=sys.stderr
        )
        raise
    with Step("stop the service"):
        code = stop(proc)
    if code != 0:
        raise SmokeFailed(f"the service exited with {code} on SIGTERM")


def wait_healthy(proc: subprocess.Popen, api: Api, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SmokeFailed(f"the service exited with {proc.returncode}")
        try:
            return api.call("GET", "health")
        except (SmokeFailed, OSError):
            time.sleep(0.2)
    raise SmokeFailed(f"no answer from /health within {timeout} s")


def token(service: str, common: list[str], user: str, admin: bool = False) -> str:
    argv = [service, "token", "create", *common, "--user", user] + (["--admin"] if admin else [])
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise SmokeFailed(f"token create failed: {out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def zipped(path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(path, path.name)
    return buf.getvalue()


def stop(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, help="directory holding the grader-service command")
    parser.add_argument("--expect-sandbox", default="", help="fail unless /health names this sandbox")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--grade-timeout", type=float, default=300.0)
    parser.add_argument("--work-dir", default="", help="where the data dir and log go (default: a temp dir)")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grader-smoke-") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            run(args, work)
        except SmokeFailed as e:
            print(f"SMOKE FAILED: {e}", file=sys.stderr)
            return 1
    print(
        f"smoke passed in {time.monotonic() - started:.1f} s: "
        + ", ".join(f"{n} {t:.1f} s" for n, t in Step.timings)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
