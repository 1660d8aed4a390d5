"""`AutogradeOptions`: the knobs of one `grader-convert autograde` run, each with one name and one default.

The service's executors build the command line from it (`command`), the CLI declares and parses
those flags from it (`add_arguments`, `from_args`), and the engine runs with it
(`autograde.Settings` extends it with what only tests turn off). A knob added here reaches all
three; `tests/convert/test_options.py` checks that a command line parses back to the same options.

The per-cell timeout's and output limit's defaults live here too: the executors' configurable
defaults (`c.AutogradeExecutor.cell_timeout`, `.output_limit`) start from them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

# The module `python -m` runs for `grader-convert`.
CLI_MODULE = "grader_service.convert.cli"
# Seconds a single cell may run, unless the assignment or the executor's configuration says otherwise.
DEFAULT_CELL_TIMEOUT = 30.0
# Bytes of output kept per cell (its outputs in the graded notebook; the rest is cut with a notice).
DEFAULT_OUTPUT_LIMIT = 1_000_000


@dataclass(frozen=True)
class AutogradeOptions:
    """What tunes one autograde run (the CLI's flags: `--cell-timeout` is `cell_timeout`, and so on)."""

    cell_timeout: float = DEFAULT_CELL_TIMEOUT
    timeout: float | None = None  # seconds for the whole submission
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    mutation_runs: bool = True  # re-run tests with wrong answers (tamper detection)
    watch_files: bool = True  # watch the output (and, without Landlock, the source) for kernel access
    kernel_python: str | None = None
    # Where kernels work: the submission is copied there (the job's size-limited scratch).
    work_dir: Path | None = None
    # Other size-limited places the job may write (a separate /dev/shm): full, they stop it too.
    scratch: tuple[Path, ...] = ()
    # Delete the source directory once read (the executors stage a private copy per job).
    remove_source: bool = False
    # Landlock each kernel away from the job's directories (see `confine`): for a pod, whose
    # kernels would otherwise see the job's volume.
    confine_kernels: bool = False

    def arguments(self, paths: tuple[str, str, str]) -> list[str]:
        """`autograde` and its arguments on the job's (submission, source, output) directories as
        the job sees them; a knob at its default is left out, except the limits, always written."""
        submission, source, output = paths
        args = [
            "autograde",
            "-i",
            submission,
            "-s",
            source,
            "-o",
            output,
            "--cell-timeout",
            f"{self.cell_timeout:g}",
        ]
        if self.timeout is not None:
            args += ["--timeout", f"{self.timeout:g}"]
        if self.kernel_python is not None:
            args += ["--kernel-python", self.kernel_python]
        if not self.mutation_runs:
            args.append("--no-mutation-runs")
        if not self.watch_files:
            args.append("--no-file-watch")
        if self.work_dir is not None:
            args += ["--work-dir", str(self.work_dir)]
        if self.remove_source:
            args.append("--remove-source")
        if self.confine_kernels:
            args.append("--confine-kernels")
        for place in self.scratch:
            args += ["--scratch", str(place)]
        return [*args, "--output-limit", str(self.output_limit)]

    def command(self, python: str, paths: tuple[str, str, str]) -> list[str]:
        """The whole command line, run with the interpreter `python`."""
        return [python, "-m", CLI_MODULE, *self.arguments(paths)]

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Declare the knobs as the `autograde` subcommand's flags (the directories are the CLI's own)."""
        parser.add_argument(
            "--cell-timeout",
            type=positive,
            default=DEFAULT_CELL_TIMEOUT,
            help=f"seconds per cell (default {DEFAULT_CELL_TIMEOUT:g})",
        )
        parser.add_argument("--timeout", type=positive, default=None, help="seconds for the whole submission")
        parser.add_argument(
            "--output-limit",
            type=int,
            default=DEFAULT_OUTPUT_LIMIT,
            help=f"bytes of output kept per cell (default {DEFAULT_OUTPUT_LIMIT:,})",
        )
        parser.add_argument("--kernel-python", default=None, help="python executable for the kernel")
        parser.add_argument(
            "--no-mutation-runs",
            dest="mutation_runs",
            action="store_false",
            help="skip re-running tests with wrong answers (tamper detection for tests that reference answers)",
        )
        parser.add_argument(
            "--no-file-watch",
            dest="watch_files",
            action="store_false",
            help="do not watch the output directory (and, without Landlock, the source) for kernel access",
        )
        parser.add_argument(
            "--work-dir",
            type=Path,
            default=None,
            help="run the kernels on a copy of the submission made here (a size-limited scratch filesystem: "
            "grading stops with exit code 3 once it is full)",
        )
        parser.add_argument(
            "--scratch",
            type=Path,
            action="append",
            default=[],
            help="another size-limited filesystem the job can write (e.g. a separate /dev/shm): grading "
            "stops with exit code 3 once it is full too (repeatable)",
        )
        parser.add_argument(
            "--remove-source",
            action="store_true",
            help="delete the source directory once it is read, before any kernel starts (for a private copy)",
        )
        parser.add_argument(
            "--confine-kernels",
            action="store_true",
            help="restrict kernels with Landlock: no access to the submission, source and output directories, "
            "writes only in the work directory and /tmp (for a pod, where those directories are a volume)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AutogradeOptions:
        """The options parsed by a parser `add_arguments` declared them on."""
        values = {f.name: getattr(args, f.name) for f in fields(cls)}
        values["scratch"] = tuple(values["scratch"])
        return cls(**values)


def positive(value: str) -> float:
    """An argparse type: a number above zero."""
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number
