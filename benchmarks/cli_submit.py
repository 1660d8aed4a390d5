"""`grader submit --wait` end to end, as a student runs it, on the README's example.

Starts the real service (SQLite, local sandboxed executor) in a temp dir, sets up the README's lecture
and assignment with the client library, warms the service up with a few gradings, then runs the
`grader` command as a subprocess N times (`grader submit examples/submission/basics.ipynb --wait`,
credentials from the environment) and reports wall-clock p50/p95 per run, next to the service's own
submit->graded time of the same submissions (so the client's share shows). Also reports how long
`python -c "import grader_client"` and `grader --help` take (p50 of many runs).

    python benchmarks/cli_submit.py --runs 20
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader_client import GraderClient  # noqa: E402
from tests.service import ServiceProcess  # noqa: E402

EXAMPLES = ROOT / "examples"
GRADER = Path(sys.executable).with_name("grader")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


CPU: dict[str, float] = {}  # CPU seconds (user + system) per run of the last timed command


def timed(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall-clock seconds per run; the command's own CPU time per run goes to CPU[command name]."""
    times = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[" ".join(command[1:3])] = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / runs
    return times


def report(name: str, times: list[float]) -> None:
    print(
        f"{name:<44} p50 {statistics.median(times) * 1000:6.0f} ms   p95 {percentile(times, 0.95) * 1000:6.0f} ms"
        f"   min {min(times) * 1000:6.0f} ms   (n={len(times)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="timed `grader submit --wait` runs")
    parser.add_argument("--warmup", type=int, default=3, help="gradings before timing")
    parser.add_argument("--startup-runs", type=int, default=30, help="runs of the import and --help timings")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_")}
    report(
        "python -c 'import grader_client'",
        timed([sys.executable, "-c", "import grader_client"], env, args.startup_runs),
    )
    report(
        "python -c pass (interpreter alone)", timed([sys.executable, "-c", "pass"], env, args.startup_runs)
    )
    report("grader --help", timed([str(GRADER), "--help"], env, args.startup_runs))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        svc = ServiceProcess(root / "data", f"sqlite:///{root / 'grader.sqlite'}")
        svc.start("--upgrade-db")
        try:
            admin, alice = svc.token("admin", admin=True), svc.token("alice")
            with GraderClient(svc.url, admin) as client:
                client.create_lecture("intro", "Intro to Python")
                client.set_role("intro", "alice", "student")
                client.create_assignment("intro", "basics", due_date="2099-01-15T23:59:00Z")
                client.upload_assignment("intro", "basics", EXAMPLES / "source" / "basics")
                client.release_assignment("intro", "basics")
            env.update(
                GRADER_URL=svc.url,
                GRADER_TOKEN=alice,
                GRADER_LECTURE="intro",
                GRADER_ASSIGNMENT="basics",
                XDG_CONFIG_HOME=str(root / "config"),
            )
            command = [str(GRADER), "submit", str(EXAMPLES / "submission" / "basics.ipynb"), "--wait"]
            timed(command, env, args.warmup)
            times = timed(command, env, args.runs)
            with GraderClient(svc.url, admin) as client:
                graded = list(client.submissions("intro", "basics"))[: args.runs]
            service_times = []
            for submission in graded:
                assert submission.score == 10.0, submission
                jobs_done = client_job_seconds(svc, submission.id)
                service_times.append(jobs_done)
        finally:
            svc.stop()
    report("grader submit --wait (end to end)", times)
    report("  of which the service: submit -> graded", service_times)
    print(
        f"  client share (p50 difference): {(statistics.median(times) - statistics.median(service_times)) * 1000:.0f} ms"
    )
    print(
        f"  CPU of the grader process per run: {CPU[' '.join(command[1:3])] * 1000:.0f} ms (load-independent)"
    )
    print(f"CPU of `grader --help` per run: {CPU['--help'] * 1000:.0f} ms")


def client_job_seconds(svc: ServiceProcess, submission_id: int) -> float:
    """Submission stored -> grading job finished, from the service's own timestamps."""
    from sqlalchemy import select

    from grader_service.orm import GradingJob, Submission

    with svc.engine.connect() as connection:
        submitted = connection.execute(
            select(Submission.submitted_at).where(Submission.id == submission_id)
        ).scalar_one()
        finished = connection.execute(
            select(GradingJob.finished_at)
            .where(GradingJob.submission_id == submission_id)
            .order_by(GradingJob.id.desc())
        ).first()[0]
    return (finished - submitted).total_seconds()


if __name__ == "__main__":
    main()
