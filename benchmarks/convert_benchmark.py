"""Benchmark of `grader-convert autograde` over the sample corpus, optionally against nbgrader.

Each submission is graded the way the service does it: a fresh `grader-convert autograde`
subprocess on a private copy of the source and the submission. Reported per grader: seconds per
submission (median, p95, mean, max) and the peak resident memory of the grader process and all its
children (the kernel included), sampled every 20 ms. With `--nbgrader-venv PATH` the same
submissions are graded by `nbgrader autograde` from that virtualenv (one course directory per run,
assignments generated first), interleaved submission by submission so both see the same machine
load, and the ratios are printed.

    python benchmarks/convert_benchmark.py [--limit N] [--nbgrader-venv /tmp/nbgrader-venv]

Not part of the test run. Runs sequentially on purpose: grading is what is measured, not the
machine's parallelism.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
FALLBACK_CORPUS = REPO / "tests" / "data" / "corpus"


@dataclass
class Run:
    case: str
    seconds: float
    peak_rss: int
    ok: bool
    score: float | None = None
    expected: float | None = None


@dataclass
class Results:
    name: str
    runs: list[Run] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        times = sorted(r.seconds for r in self.runs)
        rss = sorted(r.peak_rss for r in self.runs)
        return {
            "n": len(times),
            "median_s": statistics.median(times),
            "p95_s": percentile(times, 95),
            "mean_s": statistics.fmean(times),
            "max_s": times[-1],
            "peak_rss_median_mb": statistics.median(rss) / 2**20,
            "peak_rss_max_mb": rss[-1] / 2**20,
        }


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run `cmd`, sampling the summed RSS of it and its descendants; (seconds, peak bytes, result)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.02)
    out, err = proc.communicate()
    seconds = time.monotonic() - started
    return seconds, peak, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def select(expected: dict, limit: int | None) -> list[tuple[str, str, dict]]:
    per_assignment = [
        [(a, s, case) for s, case in sorted(students.items())]
        for a, students in sorted(expected["submissions"].items())
    ]
    picked = []
    while any(per_assignment) and (limit is None or len(picked) < limit):
        for queue in per_assignment:
            if queue and (limit is None or len(picked) < limit):
                picked.append(queue.pop(0))
    return picked


def grade_ours(
    corpus: Path, assignment: str, student: str, case: dict, cell_timeout: float, work: Path
) -> Run:
    job = work / "ours" / assignment / student
    source = shutil.copytree(corpus / "source" / assignment, job / "source")
    submission = shutil.copytree(corpus / "submitted" / student / assignment, job / "submission")
    cmd = [
        sys.executable, "-m", "grader_service.convert.cli", "autograde",
        "-i", str(submission), "-s", str(source), "-o", str(job / "output"), "--cell-timeout", str(cell_timeout),
    ]  # fmt: skip
    seconds, peak, proc = measure(cmd, cwd=REPO)
    score = json.loads(proc.stdout.splitlines()[-1])["score"] if proc.returncode == 0 else None
    run = Run(f"{assignment}/{student}", seconds, peak, proc.returncode == 0, score, case.get("total"))
    flag = "" if score == case.get("total") else f"  MISMATCH (expected {case.get('total')})"
    print(
        f"  ours     {run.case:14s} {case['case']:24s} {seconds:6.2f}s {peak / 2**20:7.1f} MB score={score}{flag}",
        flush=True,
    )
    return run


NBGRADER_CONFIG = """
c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "bench"
c.Execute.timeout = {timeout}
c.Execute.interrupt_on_timeout = True
"""


class NbgraderCourse:
    """A course directory for `nbgrader autograde`, with the assignments generated and students added."""

    def __init__(self, venv: Path, corpus: Path, cases: list, cell_timeout: float, work: Path):
        self.root = work / "nbgrader-course"
        self.root.mkdir(parents=True)
        self.corpus = corpus
        self.nbgrader = str(venv / "bin" / "nbgrader")
        config = NBGRADER_CONFIG.format(root=str(self.root), timeout=int(cell_timeout))
        (self.root / "nbgrader_config.py").write_text(textwrap.dedent(config))
        self.env = dict(
            os.environ, PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(venv)
        )
        self.env.pop("PYTHONPATH", None)
        for assignment in sorted({a for a, _, _ in cases}):
            shutil.copytree(corpus / "source" / assignment, self.root / "source" / assignment)
            proc = self._run("generate_assignment", assignment, "--force")
            if proc.returncode != 0:
                raise SystemExit(f"nbgrader generate_assignment failed:\n{proc.stderr[-2000:]}")
        for student in sorted({s for _, s, _ in cases}):
            self._run("db", "student", "add", student)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.nbgrader, *args], cwd=self.root, env=self.env, capture_output=True, text=True
        )

    def grade(self, assignment: str, student: str, case: dict) -> Run:
        shutil.copytree(
            self.corpus / "submitted" / student / assignment, self.root / "submitted" / student / assignment
        )
        cmd = [self.nbgrader, "autograde", assignment, "--student", student, "--force"]
        seconds, peak, proc = measure(cmd, cwd=self.root, env=self.env)
        run = Run(f"{assignment}/{student}", seconds, peak, proc.returncode == 0)
        print(
            f"  nbgrader {run.case:14s} {case['case']:24s} {seconds:6.2f}s {peak / 2**20:7.1f} MB rc={proc.returncode}",
            flush=True,
        )
        return run


def report(all_results: list[Results]) -> dict:
    summaries = {r.name: r.summary() for r in all_results}
    print()
    print(
        f"{'grader':16s} {'n':>4s} {'median s':>9s} {'p95 s':>8s} {'mean s':>8s} {'max s':>8s} {'RSS med MB':>11s} {'RSS max MB':>11s}"
    )
    for name, s in summaries.items():
        print(
            f"{name:16s} {s['n']:4d} {s['median_s']:9.2f} {s['p95_s']:8.2f} {s['mean_s']:8.2f} {s['max_s']:8.2f} "
            f"{s['peak_rss_median_mb']:11.1f} {s['peak_rss_max_mb']:11.1f}"
        )
    if "nbgrader" in summaries and "grader-convert" in summaries:
        ours, theirs = summaries["grader-convert"], summaries["nbgrader"]
        ratios = {
            "median_time": theirs["median_s"] / ours["median_s"],
            "p95_time": theirs["p95_s"] / ours["p95_s"],
            "median_rss": theirs["peak_rss_median_mb"] / ours["peak_rss_median_mb"],
            "max_rss": theirs["peak_rss_max_mb"] / ours["peak_rss_max_mb"],
        }
        summaries["nbgrader_over_ours"] = ratios
        print("nbgrader / grader-convert: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    ours_runs = next((r.runs for r in all_results if r.name == "grader-convert"), [])
    mismatches = [r.case for r in ours_runs if r.expected is not None and r.score != r.expected]
    summaries["score_mismatches"] = mismatches
    print(f"grader-convert score mismatches with expected.json: {len(mismatches)} {mismatches}")
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS if DEFAULT_CORPUS.is_dir() else FALLBACK_CORPUS
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="grade only N submissions (spread over assignments)"
    )
    parser.add_argument(
        "--cell-timeout", type=float, default=None, help="default: the corpus's cell_timeout_s"
    )
    parser.add_argument("--nbgrader-venv", type=Path, default=None, help="virtualenv with nbgrader installed")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    args = parser.parse_args()

    expected = json.loads((args.corpus / "expected.json").read_text())
    cell_timeout = args.cell_timeout or float(expected.get("cell_timeout_s", 30))
    cases = select(expected, args.limit)
    print(
        f"corpus {args.corpus}: {len(cases)} submissions, cell timeout {cell_timeout:g} s, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="convert-bench-") as tmp:
        work = Path(tmp)
        ours = Results("grader-convert")
        theirs = Results("nbgrader")
        course = (
            NbgraderCourse(args.nbgrader_venv, args.corpus, cases, cell_timeout, work)
            if args.nbgrader_venv
            else None
        )
        # Interleaved, so both graders see the same machine load (this machine is shared).
        for assignment, student, case in cases:
            ours.runs.append(grade_ours(args.corpus, assignment, student, case, cell_timeout, work))
            if course is not None:
                theirs.runs.append(course.grade(assignment, student, case))
        summary = report([ours, theirs] if course is not None else [ours])
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
