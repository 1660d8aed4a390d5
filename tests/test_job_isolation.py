"""What a grading job can reach on the service's machine: nothing of the instructor's source, and no
more disk than its limit. Both local sandboxes (the fork server's and bubblewrap), through
`LocalAutogradeExecutor` as the scheduler uses it; the Kubernetes pod is in tests/kube.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from grader_service.autograding.executor import GradingOutcome, GradingTask, JobLimits
from grader_service.autograding.local import LocalAutogradeExecutor

from .conftest import DATA
from .source_probe import CONTROL_FILE, CONTROL_MARK, probe_report, probing_submission, source_notebook

SANDBOXES = ["fork-server", "bubblewrap"]


def stage(root: Path, job_id: int, answer: str | None = None, probe: bool = False) -> Path:
    """A job directory as the scheduler stages it; the source carries the probe's markers."""
    job = root / f"job-{job_id}"
    for part in ("submission", "source", "output"):
        (job / part).mkdir(parents=True)
    submission = json.loads((DATA / "tiny_submission.ipynb").read_text())
    if probe:
        submission = probing_submission(submission)
        (job / "submission" / CONTROL_FILE).write_text(CONTROL_MARK)
    if answer is not None:
        submission["cells"][1]["source"] = answer
    (job / "submission" / "tiny.ipynb").write_text(json.dumps(submission))
    source = source_notebook(json.loads((DATA / "tiny" / "tiny.ipynb").read_text()))
    (job / "source" / "tiny.ipynb").write_text(json.dumps(source))
    (job / "source" / "data.csv").write_text((DATA / "tiny" / "data.csv").read_text())
    for path in (job, *job.rglob("*")):
        path.chmod(0o777 if path.is_dir() else 0o666)
    return job


def task(job: Path, job_id: int, **settings: Any) -> GradingTask:
    defaults = {"cell_timeout": 20.0, "timeout": 60.0, "memory": "1Gi", "cpu": 1.0, "disk": "32Mi"}
    return GradingTask(
        job_id, job_id, "c0ffee", "ml", "tiny", "stu", job, JobLimits(**{**defaults, **settings})
    )


def grade(sandbox: str, job: Path, job_id: int, **settings: Any) -> GradingOutcome:
    async def main() -> GradingOutcome:
        executor = LocalAutogradeExecutor(fork_server=sandbox == "fork-server", max_files=1000)
        await executor.start()
        try:
            assert executor.sandbox_report.startswith(sandbox.replace("-", " ")), executor.sandbox_report
            return await executor.run(task(job, job_id, **settings))
        finally:
            await executor.stop()

    return asyncio.run(main())


def bytes_in(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


# ---- the instructor's source ---------------------------------------------------------------------


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_kernel_code_gets_nothing_of_the_source(sandbox: str, tmp_path: Path) -> None:
    """The probe tries paths, every other process (descriptors, memory, ptrace, root) and its mounts."""
    job = stage(tmp_path, 1, probe=True)

    outcome = grade(sandbox, job, 1)

    assert outcome.graded and outcome.gradebook is not None, outcome.logs
    assert outcome.gradebook["score"] == 3.0, outcome.gradebook
    report = probe_report(json.loads((job / "output" / "tiny.ipynb").read_text()))
    assert report["found"] == [], report
    # The techniques work where they are allowed: the probe's own memory, its own files.
    assert "own mem" in report["controls"] and report["own_memory"].startswith("read ")
    assert any(c.endswith(CONTROL_FILE) for c in report["controls"]), report["controls"]
    # It saw the grader (which holds the source) and got nothing out of it.
    graders = [p for p in report["processes"].values() if "grader_service" in p["cmdline"]]
    assert graders, report["processes"]
    for process in report["processes"].values():
        assert process["ptrace"] != "attached" and not process["mem"].startswith("read "), process
        assert process["process_vm_readv"] != "read", process
    assert "/job" not in report["mounts"], "the job directory is in the sandbox"
    assert not outcome.gradebook["tampering"]


# ---- the disk ------------------------------------------------------------------------------------

# Each writes well past 32 MiB, in one of the ways and places a notebook can, then carries on.
FILLERS = {
    "one_big_file": "open('big.bin', 'wb').write(b'0' * (48 << 20))",
    "many_files": "for i in range(48):\n    open(f'part{i}.bin', 'wb').write(b'0' * (1 << 20))",
    "many_small_files": "import os\nos.mkdir('small')\nfor i in range(5000):\n"
    "    open(f'small/{i}.txt', 'wb').write(b'0' * 8192)",
    "tmp": "open('/tmp/big.bin', 'wb').write(b'0' * (48 << 20))",
    "var_tmp": "open('/var/tmp/big.bin', 'wb').write(b'0' * (48 << 20))",
    "dev_shm": "open('/dev/shm/big.bin', 'wb').write(b'0' * (48 << 20))",
    "spread_over_every_place": "for d in ('.', '/tmp', '/var/tmp', '/dev/shm'):\n"
    "    for i in range(4):\n        open(f'{d}/spread{i}.bin', 'wb').write(b'0' * (4 << 20))",
}


@pytest.mark.parametrize("sandbox", SANDBOXES)
@pytest.mark.parametrize("filler", sorted(FILLERS))
def test_a_job_that_fills_its_disk_stops_at_its_limit(sandbox: str, filler: str, tmp_path: Path) -> None:
    answer = f"try:\n    exec({FILLERS[filler]!r})\nexcept OSError as e:\n    print(e)\n"
    job = stage(tmp_path, 2, answer=answer + "def double(x):\n    return x + x")
    before = bytes_in(job)

    outcome = grade(sandbox, job, 2)

    assert not outcome.graded and not outcome.retryable, outcome.logs[-2000:]
    assert (outcome.reason or "").startswith("Grading stopped: the job reached its disk limit (32Mi)"), (
        outcome
    )
    assert bytes_in(job) - before < 1 << 20, "the job wrote onto the service's disk"


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_many_empty_files_count_too(sandbox: str, tmp_path: Path) -> None:
    """Files cost kernel memory whatever their size: the fork server caps their number (max_files)."""
    answer = "import os\nos.mkdir('empty')\nfor i in range(5000):\n    open(f'empty/{i}', 'w').close()\n"
    job = stage(tmp_path, 3, answer=f"try:\n    exec({answer!r})\nexcept OSError as e:\n    print(e)\n"
                "def double(x):\n    return x + x")  # fmt: skip

    outcome = grade(sandbox, job, 3)

    if sandbox == "fork-server":
        assert not outcome.graded and "disk limit" in (outcome.reason or ""), outcome
    else:  # bubblewrap cannot limit a tmpfs's inodes: documented
        assert outcome.graded, outcome


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_writing_within_the_limit_everywhere_grades_normally(sandbox: str, tmp_path: Path) -> None:
    writes = (
        "import os\nfor d in ('.', '/tmp', '/var/tmp', '/dev/shm'):\n"
        "    open(f'{d}/some.bin', 'wb').write(b'0' * (2 << 20))\n"
        "    assert os.path.getsize(f'{d}/some.bin') == 2 << 20\n"
    )
    job = stage(tmp_path, 4, answer=writes + "def double(x):\n    return x + x")

    outcome = grade(sandbox, job, 4)

    assert outcome.graded and outcome.gradebook is not None and outcome.gradebook["score"] == 3.0, outcome
    graded = json.loads((job / "output" / "tiny.ipynb").read_text())
    assert not graded["cells"][1]["outputs"], graded["cells"][1]["outputs"]


def test_disk_setting_is_validated_by_the_api() -> None:
    from grader_service.api.assignments import parse_settings
    from grader_service.api.errors import APIError

    assert parse_settings({"disk": "512Mi"}) == {"disk": "512Mi"}
    for bad in ("lots", "-1Gi", 0, True):
        with pytest.raises(APIError) as error:
            parse_settings({"disk": bad})
        assert error.value.status_code == 400 and "disk limit" in error.value.message
