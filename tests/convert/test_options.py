"""`AutogradeOptions`: the command line the executors build parses back, in the CLI, to the same options."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader_service.convert.cli import build_parser
from grader_service.convert.options import DEFAULT_CELL_TIMEOUT, DEFAULT_OUTPUT_LIMIT, AutogradeOptions

PATHS = ("/job/submission", "/job/source", "/job/output")


def parsed(options: AutogradeOptions) -> AutogradeOptions:
    return AutogradeOptions.from_args(build_parser().parse_args(options.arguments(PATHS)))


@pytest.mark.parametrize(
    "options",
    [
        AutogradeOptions(),
        AutogradeOptions(cell_timeout=2.5, timeout=600.0, output_limit=4096),
        AutogradeOptions(work_dir=Path("/tmp/job"), remove_source=True, confine_kernels=True),  # a pod
        AutogradeOptions(work_dir=Path("/tmp/job"), scratch=(Path("/dev/shm"), Path("/run/x"))),  # bubblewrap
        AutogradeOptions(mutation_runs=False, watch_files=False, kernel_python="/usr/bin/python3"),
    ],
)
def test_a_command_line_parses_back_to_its_options(options: AutogradeOptions) -> None:
    assert parsed(options) == options


def test_the_defaults_are_the_parsers() -> None:
    args = build_parser().parse_args(["autograde", "-i", "s", "-s", "src", "-o", "out"])
    assert AutogradeOptions.from_args(args) == AutogradeOptions()
    assert (args.cell_timeout, args.output_limit) == (DEFAULT_CELL_TIMEOUT, DEFAULT_OUTPUT_LIMIT)


def test_the_limits_are_always_written() -> None:
    """The service's limits reach the grader even where they equal the grader's own defaults."""
    args = AutogradeOptions().arguments(PATHS)
    assert args[:7] == ["autograde", "-i", *PATHS[:1], "-s", PATHS[1], "-o", PATHS[2]]
    assert args[args.index("--cell-timeout") + 1] == f"{DEFAULT_CELL_TIMEOUT:g}"
    assert args[-2:] == ["--output-limit", str(DEFAULT_OUTPUT_LIMIT)]
    assert "--timeout" not in args  # no total limit unless one is given


def test_command_runs_the_cli_module() -> None:
    assert AutogradeOptions().command("py", PATHS)[:4] == [
        "py",
        "-m",
        "grader_service.convert.cli",
        "autograde",
    ]


@pytest.mark.parametrize("flag", ["--cell-timeout", "--timeout"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_timeouts_must_be_positive(flag: str, value: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["autograde", "-i", "s", "-s", "src", "-o", "out", flag, value])
