"""`grader-convert`: the notebook engine's command line (release, autograde, feedback, validate).

The service runs `grader-convert autograde` as a subprocess (locally in a sandbox, or as the
command of a Kubernetes pod) and reads exactly one JSON line from stdout; logs go to stderr.
Exit codes: 0 done (for autograde: graded, whatever the score), 1 validate found failing tests,
2 could not do it (invalid source, kernel could not start, bad arguments), 3 autograde stopped
because the job's scratch filesystem (`--work-dir`) filled up.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import cells as nbcells
from .errors import DiskLimitReached, GradingError, SourceValidationError
from .options import DEFAULT_CELL_TIMEOUT, AutogradeOptions, positive

if TYPE_CHECKING:
    from .forked_kernel import KernelLauncher

EXIT_OK = 0
EXIT_FAILING_TESTS = 1
EXIT_COULD_NOT = 2
EXIT_DISK_LIMIT = 3


def _emit(summary: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(summary, separators=(",", ":")) + "\n")
    sys.stdout.flush()


@functools.lru_cache(maxsize=1)
def build_parser() -> argparse.ArgumentParser:
    """The CLI's parser; built once (the fork server builds it for every grader it forks)."""
    parser = argparse.ArgumentParser(prog="grader-convert", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="WARNING", help="logging level for stderr (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)

    rel = sub.add_parser("release", help="write the student version of an assignment")
    rel.add_argument("-i", "--input", required=True, type=Path, help="source assignment directory")
    rel.add_argument("-o", "--output", required=True, type=Path, help="release directory to write")
    rel.add_argument("--gradebook", type=Path, help="also write the gradebook skeleton to this file")
    rel.add_argument("--code-stub", default=nbcells.DEFAULT_CODE_STUB, help="replaces code solutions")
    rel.add_argument("--text-stub", default=nbcells.DEFAULT_TEXT_STUB, help="replaces written solutions")

    auto = sub.add_parser("autograde", help="grade a submission against the source")
    auto.add_argument("-i", "--input", required=True, type=Path, help="submission directory")
    auto.add_argument("-s", "--source", required=True, type=Path, help="source assignment directory")
    auto.add_argument("-o", "--output", required=True, type=Path, help="output directory")
    AutogradeOptions.add_arguments(auto)

    fb = sub.add_parser("feedback", help="render HTML feedback from an autograde output directory")
    fb.add_argument("-i", "--input", required=True, type=Path, help="autograde output directory")
    fb.add_argument("-o", "--output", required=True, type=Path, help="feedback directory")
    fb.add_argument("--grades", type=Path, help="JSON file of per-cell manual points, extra credit, comments")

    val = sub.add_parser("validate", help="run a notebook and report which visible tests pass")
    val.add_argument("notebook", type=Path)
    val.add_argument("--cell-timeout", type=positive, default=DEFAULT_CELL_TIMEOUT)
    val.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: list[str] | None = None, kernel_launcher: KernelLauncher | None = None) -> int:
    """Run one command; `kernel_launcher` (the fork server's) makes autograde fork its kernels."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(message)s")
    if argv is None and args.command == "autograde":
        from . import processes

        # Keep "grader-convert autograde" visible; hide the paths from the student's kernel.
        processes.harden_grader_process(keep_through="autograde")
    if args.command == "autograde":
        return _autograde(args, kernel_launcher)
    handler = {"release": _release, "feedback": _feedback, "validate": _validate}
    return handler[args.command](args)


def _release(args: argparse.Namespace) -> int:
    from .release import release_assignment

    try:
        skeleton = release_assignment(
            args.input, args.output, code_stub=args.code_stub, text_stub=args.text_stub
        ).gradebook
    except SourceValidationError as e:
        print(str(e), file=sys.stderr)
        _emit({"status": "invalid", "problems": e.problems})
        return EXIT_COULD_NOT
    if args.gradebook:
        from .notebooks import atomic_write_text

        atomic_write_text(args.gradebook, json.dumps(skeleton, indent=1) + "\n")
    _emit(
        {
            "status": "released",
            "max_score": skeleton["max_score"],
            "notebooks": {name: nb["max_score"] for name, nb in skeleton["notebooks"].items()},
        }
    )
    return EXIT_OK


def _autograde(args: argparse.Namespace, kernel_launcher: KernelLauncher | None) -> int:
    from .autograde import autograde

    try:
        summary = autograde(
            args.input,
            args.source,
            args.output,
            AutogradeOptions.from_args(args),
            kernel_launcher=kernel_launcher,
        )
    except DiskLimitReached as e:
        print(f"grading stopped: {e}", file=sys.stderr)
        _emit({"status": "error", "reason": "disk-limit", "error": str(e)})
        return EXIT_DISK_LIMIT
    except GradingError as e:
        print(f"could not grade: {e}", file=sys.stderr)
        _emit({"status": "error", "error": str(e)})
        return EXIT_COULD_NOT
    _emit(summary)
    return EXIT_OK


def _feedback(args: argparse.Namespace) -> int:
    from .feedback import generate_feedback

    try:
        grades = json.loads(args.grades.read_text(encoding="utf-8")) if args.grades else None
        pages = generate_feedback(args.input, args.output, grades)
    except (FileNotFoundError, ValueError) as e:
        print(f"no feedback: {e}", file=sys.stderr)
        _emit({"status": "error", "error": str(e)})
        return EXIT_COULD_NOT
    _emit({"status": "done", "pages": [str(p) for p in pages]})
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from .validate import format_report, validate_notebook

    try:
        report = validate_notebook(args.notebook, cell_timeout=args.cell_timeout)
    except GradingError as e:
        print(f"could not validate: {e}", file=sys.stderr)
        return EXIT_COULD_NOT
    if args.json:
        _emit(report)
    else:
        print(format_report(report))
    return EXIT_OK if report["status"] == "passed" else EXIT_FAILING_TESTS


if __name__ == "__main__":
    sys.exit(main())
