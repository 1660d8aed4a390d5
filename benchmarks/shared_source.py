"""Benchmark: what one grading costs, alone and with many graders sharing one source directory.

Two figures, for the code in `--repo` (default: this checkout), so that a checkout from before a
change can be measured the same way:

- *alone*: `--runs` gradings one after another of one corpus submission (`grader-convert autograde`,
  a subprocess each, on a private source copy): seconds per grading (median, min) and the seconds
  the grader reports for its notebook's kernel run;
- *shared*: `--graders` gradings started `--stagger` seconds apart on ONE source directory, every
  submission correct: wall time for all, median seconds per grading, and whether every score was
  exact (what a grader took for another's reads of the source shows up as a lower score).

With `--no-fence` the shared run calls `autograde(fence_kernels=False)` (what a machine without
Landlock does: graders watch the source and take turns on it). Not part of the test run.

    python benchmarks/shared_source.py [--repo PATH] [--runs 5] [--graders 8] [--stagger 0.5] [--no-fence]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "corpus"
ASSIGNMENT, STUDENT, SCORE = "basics", "s08", 10.0  # the corpus's canonical correct submission
LIBRARY = """
import json, sys
from grader_service.convert.autograde import autograde
print(json.dumps(autograde(sys.argv[1], sys.argv[2], sys.argv[3], cell_timeout=60, fence_kernels=False)))
"""


def start(repo: Path, submission: Path, source: Path, output: Path, fence: bool) -> subprocess.Popen:
    """A grader; run from `repo` so that `python -m` imports that checkout's package."""
    if fence:
        cmd = [sys.executable, "-m", "grader_service.convert.cli", "autograde", "-i", str(submission),
               "-s", str(source), "-o", str(output), "--cell-timeout", "60"]  # fmt: skip
    else:
        cmd = [sys.executable, "-c", LIBRARY, str(submission), str(source), str(output)]
    return subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, started: float) -> tuple[float, float | None, float | None]:
    """(seconds since `started`, score, seconds the notebook's kernel ran) of a finished grader."""
    out, err = proc.communicate(timeout=900)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        print(err[-2000:], file=sys.stderr)
        return seconds, None, None
    summary = json.loads(out.splitlines()[-1])
    book = json.loads(Path(summary["gradebook"]).read_text())
    kernel = sum(nb["execution"]["duration_s"] for nb in book["notebooks"].values())
    return seconds, summary["score"], kernel


def stage(work: Path, name: str) -> tuple[Path, Path]:
    source = shutil.copytree(CORPUS / "source" / ASSIGNMENT, work / name / "source")
    submission = shutil.copytree(CORPUS / "submitted" / STUDENT / ASSIGNMENT, work / name / "submission")
    return source, submission


def alone(repo: Path, work: Path, runs: int) -> dict[str, float]:
    seconds, kernels = [], []
    for i in range(runs):
        source, submission = stage(work, f"alone-{i}")
        started = time.monotonic()
        took, score, kernel = finish(
            start(repo, submission, source, work / f"alone-{i}" / "out", True), started
        )
        assert score == SCORE, f"alone: scored {score}, not {SCORE}"
        seconds.append(took)
        kernels.append(kernel or 0.0)
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "kernel_median_s": statistics.median(kernels),
    }


def shared(repo: Path, work: Path, graders: int, stagger: float, fence: bool) -> dict[str, float | int]:
    source = shutil.copytree(CORPUS / "source" / ASSIGNMENT, work / "shared-source")
    started_all = time.monotonic()
    running = []
    for i in range(graders):
        submission = shutil.copytree(
            CORPUS / "submitted" / STUDENT / ASSIGNMENT, work / f"shared-{i}" / "sub"
        )
        running.append(
            (start(repo, submission, source, work / f"shared-{i}" / "out", fence), time.monotonic())
        )
        time.sleep(stagger)
    results = [finish(proc, started) for proc, started in running]
    wall = time.monotonic() - started_all
    return {
        "wall_s": wall,
        "median_s": statistics.median(r[0] for r in results),
        "exact": sum(1 for r in results if r[1] == SCORE),
        "graders": graders,
        "scores": [r[1] for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose grader_service is measured")
    parser.add_argument("--runs", type=int, default=5, help="gradings one after another (default 5)")
    parser.add_argument("--graders", type=int, default=8, help="gradings on one source (default 8)")
    parser.add_argument(
        "--stagger", type=float, default=0.5, help="seconds between their starts (default 0.5)"
    )
    parser.add_argument("--no-fence", action="store_true", help="shared run without the Landlock fence")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shared-source-bench-") as tmp:
        work = Path(tmp)
        one = alone(args.repo.resolve(), work, args.runs)
        print(f"alone  ({args.runs} runs): {one['median_s']:.2f} s per grading (median; min {one['min_s']:.2f} s), "
              f"kernel run {one['kernel_median_s']:.2f} s", flush=True)  # fmt: skip
        many = shared(args.repo.resolve(), work, args.graders, args.stagger, not args.no_fence)
        print(f"shared ({many['graders']} graders, {args.stagger:g} s apart{', no fence' if args.no_fence else ''}): "
              f"{many['wall_s']:.1f} s for all, {many['median_s']:.2f} s per grading (median), "
              f"{many['exact']}/{many['graders']} scores exact {many['scores']}")  # fmt: skip


if __name__ == "__main__":
    main()
