"""What the comparison checker of protected cells costs (see grader_service/convert/kernel_checks.py).

Two measurements:

1. Per grading, before/after: the sample corpus's `basics` and `numpy` submissions (the `slow`
   assignment is left out: its seconds of compute would drown the difference) graded by
   `grader-convert autograde` from this checkout and from a baseline commit (default `main`,
   checked out in a temporary git worktree), interleaved submission by submission so both see
   the same machine load. Median and mean seconds per grading, each side.
2. Per operation, in-process: `f(x) == y` natively and through the checker, for an int, a
   list of 10,000 floats, a numpy array of 10,000 floats, and a faked float (the slow path);
   a call of a student function and of `np.allclose`, natively and through the checker.

    python benchmarks/fake_values_benchmark.py [--baseline-ref main] [--rounds 3]

Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "corpus"


def grade_once(checkout: Path, source: Path, submission: Path, work: Path) -> float:
    """Seconds for one `grader-convert autograde` of `submission`, with the code of `checkout`."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(source, work / "source")
    shutil.copytree(submission, work / "submission")
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cmd = [
        sys.executable, "-m", "grader_service.convert.cli", "autograde",
        "-i", str(work / "submission"), "-s", str(work / "source"), "-o", str(work / "out"), "--cell-timeout", "30",
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=work)
    return time.monotonic() - started


def per_grading(baseline_ref: str, rounds: int) -> dict[str, dict[str, float]]:
    cases = [
        (CORPUS / "source" / assignment, student_dir / assignment)
        for assignment in ("basics", "numpy")
        for student_dir in sorted((CORPUS / "submitted").iterdir())
        if (student_dir / assignment).is_dir()
    ]
    times: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="fake-values-bench-") as tmp:
        baseline = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), baseline_ref],
            check=True,
            capture_output=True,
        )
        try:
            for _ in range(rounds):
                for source, submission in cases:
                    for label, checkout in (("before", baseline), ("after", REPO)):
                        times[label].append(grade_once(checkout, source, submission, Path(tmp) / "work"))
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False
            )
    return {
        label: {
            "gradings": len(values),
            "median_s": round(statistics.median(values), 3),
            "mean_s": round(statistics.fmean(values), 3),
        }
        for label, values in times.items()
    }


def per_comparison() -> dict[str, dict[str, float]]:
    import numpy as np

    sys.path.insert(0, str(REPO))
    from grader_service.convert.guard import checks_code

    module = types.ModuleType("_grader_checks_bench")
    exec(checks_code(), module.__dict__)
    cwd = os.getcwd()
    os.chdir(tempfile.mkdtemp(prefix="fake-values-bench-"))  # as a kernel: not in the checkout
    try:
        checker = module.Checker()
    finally:
        os.chdir(cwd)

    class Fake(float):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = float.__hash__

    values = {
        "int": (3, 3),
        "list of 10k floats": ([float(i) for i in range(10_000)], [float(i) for i in range(10_000)]),
        "ndarray of 10k floats": (np.arange(10_000.0), np.arange(10_000.0)),
        "faked float": (Fake(0.0), 3.0),
    }
    out = {}
    for name, (a, b) in values.items():
        ns = {"CHK": checker, "a": a, "b": b}
        # What a rewritten `a == b` is (see kernel_checks.CheckTransformer), against the plain one.
        n = 200 if "10k" in name else 20_000
        t_native = min(timeit.repeat("a == b", globals=ns, number=n, repeat=5)) / n
        t_checked = min(timeit.repeat("CHK.compare('==', a, b)", globals=ns, number=n, repeat=5)) / n
        checker.take_detected()
        out[name] = {"native_us": round(t_native * 1e6, 2), "checked_us": round(t_checked * 1e6, 2)}
    # Callees in test cells go through Checker.callee: the student's own function, and numpy's.
    ns = {"CHK": checker, "f": lambda x: x, "np": np, "a": np.arange(100.0)}
    for name, native, checked in (
        ("call of a student function", "f(1)", "CHK.callee(f)(1)"),
        ("np.allclose(array, array)", "np.allclose(a, a)", "CHK.callee(np.allclose)(a, a)"),
    ):
        t_native = min(timeit.repeat(native, globals=ns, number=20_000, repeat=5)) / 20_000
        t_checked = min(timeit.repeat(checked, globals=ns, number=20_000, repeat=5)) / 20_000
        out[name] = {"native_us": round(t_native * 1e6, 2), "checked_us": round(t_checked * 1e6, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main", help="git ref to compare with (default: main)")
    parser.add_argument("--rounds", type=int, default=3, help="gradings of each submission, each side")
    parser.add_argument("--skip-gradings", action="store_true", help="only the per-comparison figures")
    args = parser.parse_args()
    report = {"per_comparison": per_comparison()}
    if not args.skip_gradings:
        report["per_grading"] = per_grading(args.baseline_ref, args.rounds)
        before, after = report["per_grading"]["before"], report["per_grading"]["after"]
        report["per_grading"]["median_delta_s"] = round(after["median_s"] - before["median_s"], 3)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
