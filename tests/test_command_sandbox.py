"""Command assignments' stages in the local executor's sandboxes (the fork server's and bubblewrap),
through `LocalAutogradeExecutor` as the scheduler uses it: real programs (make, gcc, Python
harnesses), and submissions that forge results, loop, print without end, fork without end or try
the network.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from grader_service.autograding.executor import GradingOutcome, GradingTask, JobLimits
from grader_service.autograding.local import LocalAutogradeExecutor

SANDBOXES = ["fork-server", "bubblewrap"]

# A harness helper: write Gradescope results.
WRITE_RESULTS = """
import json
def write_results(tests, path='/job/results/results.json'):
    with open(path, 'w') as f:
        json.dump({'tests': tests}, f)
"""


def stage_job(root: Path, grader_yaml: str, source: dict[str, str], submission: dict[str, str]) -> Path:
    """A job directory as the scheduler stages it."""
    job = root / "job"
    for part in ("submission", "source", "output"):
        (job / part).mkdir(parents=True)
    (job / "source" / "grader.yaml").write_text(textwrap.dedent(grader_yaml))
    for name, text in {"results_lib.py": WRITE_RESULTS, **source}.items():
        (job / "source" / name).write_text(textwrap.dedent(text))
    for name, text in submission.items():
        path = job / "submission" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for path in (job, *job.rglob("*")):
        path.chmod(0o777 if path.is_dir() else 0o666)
    return job


def grade(sandbox: str, job: Path, **traits: Any) -> GradingOutcome:
    if sandbox == "bubblewrap":
        assert shutil.which("bwrap"), "bubblewrap is not installed here (.ci/run installs it)"

    async def main() -> GradingOutcome:
        executor = LocalAutogradeExecutor(fork_server=sandbox == "fork-server", max_files=1000, **traits)
        await executor.start()
        try:
            assert executor.sandbox_report.startswith(sandbox.replace("-", " ")), executor.sandbox_report
            limits = JobLimits(timeout=30.0, memory="1Gi", cpu=1.0, disk="64Mi")
            task = GradingTask(5, 5, "c0ffee", "ml", "cmd", "stu", job, limits, kind="command")
            return await executor.run(task)
        finally:
            await executor.stop()

    return asyncio.run(main())


def cells(outcome: GradingOutcome) -> dict[str, Any]:
    assert outcome.graded and outcome.gradebook is not None, (outcome.reason, outcome.logs[-3000:])
    return outcome.gradebook["notebooks"]["results"]["cells"]


C_YAML = """
submission:
  files: ["Makefile", "src/**/*.c"]
stages:
  - name: build
    image: gcc:14
    command: ["make", "-C", "/job/submission"]
    timeout: 60
  - name: test
    command: ["python3", "/job/grader/run_tests.py"]
    results: /job/results/results.json
"""
C_HARNESS = """
import subprocess, sys
sys.path.insert(0, '/job/grader')
from results_lib import write_results
tests = []
for a, b in [(1, 2), (20, 22), (-5, 5)]:
    out = subprocess.run(['/job/submission/add', str(a), str(b)], capture_output=True, text=True, timeout=5)
    ok = out.stdout.strip() == str(a + b)
    tests.append({'name': f'add {a} {b}', 'score': 1 if ok else 0, 'max_score': 1,
                  'output': f'got {out.stdout.strip()!r}, want {a + b}'})
write_results(tests)
"""
C_MAKEFILE = "add: src/add.c src/lib/sum.c\n\tcc -O1 -o add src/add.c src/lib/sum.c\n"
C_MAIN = """
#include <stdio.h>
#include <stdlib.h>
int sum(int a, int b);
int main(int argc, char **argv) { printf("%d\\n", sum(atoi(argv[1]), atoi(argv[2]))); return 0; }
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_c_program_built_with_make_and_tested_by_a_python_harness(sandbox: str, tmp_path: Path) -> None:
    assert shutil.which("gcc") and shutil.which("make"), "gcc and make are needed (.ci/run installs them)"
    sum_c = "int sum(int a, int b) { return a == 20 ? 0 : a + b; }\n"  # one wrong answer
    job = stage_job(tmp_path, C_YAML, {"run_tests.py": C_HARNESS},
                    {"Makefile": C_MAKEFILE, "src/add.c": C_MAIN, "src/lib/sum.c": sum_c})  # fmt: skip

    outcome = grade(sandbox, job)

    got = cells(outcome)
    assert {k: v["points"] for k, v in got.items()} == {"add 1 2": 1.0, "add 20 22": 0.0, "add -5 5": 1.0}
    assert got["add 20 22"]["status"] == "failed" and "got '0', want 42" in got["add 20 22"]["output"]
    assert outcome.gradebook is not None and (outcome.gradebook["score"], outcome.gradebook["max_score"]) == (
        2,
        3,
    )
    assert "== stage build (exit code 0" in outcome.logs and "cc -O1" in outcome.logs
    assert json.loads((job / "output" / "gradebook.json").read_text())["score"] == 2.0


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_build_that_fails_stops_the_pipeline_naming_the_stage(sandbox: str, tmp_path: Path) -> None:
    job = stage_job(tmp_path, C_YAML, {"run_tests.py": C_HARNESS},
                    {"Makefile": C_MAKEFILE, "src/add.c": "syntax error", "src/lib/sum.c": ""})  # fmt: skip

    outcome = grade(sandbox, job)

    assert not outcome.graded and not outcome.retryable
    assert outcome.reason == "Stage 'build' failed (exit code 2)", outcome.reason
    assert "== stage test" not in outcome.logs


PY_YAML = """
stages:
  - name: test
    command: ["python3", "/job/grader/harness.py"]
    results: /job/results/results.json
    timeout: 20
"""
PY_HARNESS = """
import sys
sys.path.insert(0, '/job/grader'); sys.path.insert(0, '/job/submission')
from results_lib import write_results
import solution
tests = []
for x, want in [(2, 4), (3, 9)]:
    got = solution.square(x)
    tests.append({'name': f'square({x})', 'score': 2 if got == want else 0, 'max_score': 2, 'output': repr(got)})
write_results(tests)
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_python_harness_writes_results_json(sandbox: str, tmp_path: Path) -> None:
    job = stage_job(
        tmp_path, PY_YAML, {"harness.py": PY_HARNESS}, {"solution.py": "def square(x): return x * x\n"}
    )

    got = cells(grade(sandbox, job))

    assert [(c["grade_id"], c["points"], c["max_points"]) for c in got.values()] == [
        ("square(2)", 2.0, 2.0), ("square(3)", 2.0, 2.0)
    ]  # fmt: skip


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_results_from_stdout_are_the_last_json_object_printed(sandbox: str, tmp_path: Path) -> None:
    grader_yaml = """
    stages:
      - name: test
        command: ["python3", "/job/grader/harness.py"]
        results: stdout
    """
    harness = """
    import json
    print('{"tests": [{"score": 100, "max_score": 1}]}')  # printed earlier: not the results
    print("running the tests...")
    print(json.dumps({"tests": [{"name": "t1", "score": 0.5, "max_score": 1}]}, indent=2))
    """
    job = stage_job(tmp_path, grader_yaml, {"harness.py": harness}, {})

    got = cells(grade(sandbox, job))

    assert {k: v["points"] for k, v in got.items()} == {"t1": 0.5}


FORGED = {"tests": [{"name": "everything", "score": 1000, "max_score": 1}]}


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_results_forged_by_the_submission_before_the_harness_are_not_read(
    sandbox: str, tmp_path: Path
) -> None:
    """The build stage (the student's Makefile) writes results.json: each stage's results directory is
    its own and starts empty, so the test stage's results are the harness's."""
    grader_yaml = """
    stages:
      - name: build
        command: ["make", "-C", "/job/submission"]
      - name: test
        command: ["python3", "/job/grader/harness.py"]
        results: /job/results/results.json
    """
    forged = json.dumps(json.dumps(FORGED))
    makefile = f"all:\n\tprintf '%s' {forged} > /job/results/results.json\n\tmkdir -p /job/results/x\n"
    harness = """
    import os, sys
    sys.path.insert(0, '/job/grader')
    from results_lib import write_results
    assert os.listdir('/job/results') == [], os.listdir('/job/results')
    write_results([{'name': 'real', 'score': 0, 'max_score': 1}])
    """
    job = stage_job(tmp_path, grader_yaml, {"harness.py": harness}, {"Makefile": makefile})

    got = cells(grade(sandbox, job))

    assert {k: v["points"] for k, v in got.items()} == {"real": 0.0}


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_results_forged_by_a_detached_process_after_the_harness_are_not_read(
    sandbox: str, tmp_path: Path
) -> None:
    """The student's code, run by the harness, leaves a daemon (double fork, new session) that overwrites
    results.json once the harness is done: the stage ends with every one of its processes, and only
    then are the results read."""
    daemon = f"""
    import json, os, time
    def start():
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(0.5)
                with open('/job/results/results.json', 'w') as f:
                    json.dump({FORGED!r}, f)
                with open('/job/submission/daemon-was-here', 'w') as f:
                    f.write('late')
            os._exit(0)
    start()
    def answer(): return 1
    """
    harness = """
    import sys
    sys.path.insert(0, '/job/grader'); sys.path.insert(0, '/job/submission')
    from results_lib import write_results
    import solution
    write_results([{'name': 'real', 'score': 0, 'max_score': 1}])
    """
    job = stage_job(tmp_path, PY_YAML, {"harness.py": harness}, {"solution.py": daemon})

    got = cells(grade(sandbox, job))
    time.sleep(1.0)

    assert {k: v["points"] for k, v in got.items()} == {"real": 0.0}
    assert not (job / "submission" / "daemon-was-here").exists(), "the daemon outlived its stage"
    assert json.loads((job / "stages" / "0" / "results.json").read_text())["tests"][0]["name"] == "real"


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_an_endless_loop_times_out_naming_the_stage(sandbox: str, tmp_path: Path) -> None:
    grader_yaml = """
    stages:
      - name: loop-forever
        command: ["python3", "-c", "import os\\nos.fork()\\nwhile True: pass"]
        results: stdout
        timeout: 1.5
    """
    job = stage_job(tmp_path, grader_yaml, {}, {})
    started = time.monotonic()

    outcome = grade(sandbox, job)

    assert time.monotonic() - started < 15
    assert not outcome.graded and not outcome.retryable
    assert outcome.reason is not None and "timed out" in outcome.reason and "'loop-forever'" in outcome.reason


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_gigabyte_of_output_is_capped_and_the_grading_ends(sandbox: str, tmp_path: Path) -> None:
    grader_yaml = """
    stages:
      - name: chatty
        command: ["head", "-c", "1000000000", "/dev/zero"]
        results: stdout
        timeout: 60
    """
    job = stage_job(tmp_path, grader_yaml, {}, {})
    started = time.monotonic()

    outcome = grade(sandbox, job, stage_output_limit=8 << 20)

    assert time.monotonic() - started < 20
    assert not outcome.graded and outcome.reason is not None
    assert "'chatty'" in outcome.reason and "output limit" in outcome.reason
    assert len(outcome.logs) < 400_000 and "bytes of log omitted" in outcome.logs


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_fork_bomb_stops_at_the_process_limit(sandbox: str, tmp_path: Path) -> None:
    """The stage forks as many sleepers as it can: it gets no more than the limit, and its processes
    are gone with it."""
    harness = """
    import os, sys, time
    sys.path.insert(0, '/job/grader')
    from results_lib import write_results
    started = 0
    for _ in range(1000):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        started += 1
    write_results([{'name': 'forks', 'score': started, 'max_score': 1000}])
    """
    job = stage_job(tmp_path, PY_YAML, {"harness.py": harness}, {})
    started = time.monotonic()

    got = cells(grade(sandbox, job, max_processes=64))

    assert 0 < got["forks"]["points"] < 80, got  # the limit, and a few for the sandbox's own processes
    assert time.monotonic() - started < 20  # the sleepers did not hold the stage up


@pytest.fixture
def listener() -> Any:
    """A TCP port on 127.0.0.1 of the host (as the service's own port would be)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


NET_HARNESS = """
import socket, sys
sys.path.insert(0, '/job/grader')
from results_lib import write_results
try:
    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3).close()
    reached = 1
except OSError:
    reached = 0
write_results([{'name': 'reached', 'score': reached, 'max_score': 1}])
"""


def net_yaml(port: int, network: bool) -> str:
    return f"""
    stages:
      - name: test
        command: ["python3", "/job/grader/harness.py", "{port}"]
        results: /job/results/results.json
        network: {str(network).lower()}
    """


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_the_network_is_off_by_default(sandbox: str, tmp_path: Path, listener: int) -> None:
    job = stage_job(tmp_path / "a", net_yaml(listener, False), {"harness.py": NET_HARNESS}, {})
    assert cells(grade(sandbox, job, allow_network=True))["reached"]["points"] == 0.0
    # A stage asking for it gets it only if the admin allows it.
    job = stage_job(tmp_path / "b", net_yaml(listener, True), {"harness.py": NET_HARNESS}, {})
    assert cells(grade(sandbox, job))["reached"]["points"] == 0.0
    job = stage_job(tmp_path / "c", net_yaml(listener, True), {"harness.py": NET_HARNESS}, {})
    assert cells(grade(sandbox, job, allow_network=True))["reached"]["points"] == 1.0


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_malformed_results_fail_the_grading_naming_the_problem(sandbox: str, tmp_path: Path) -> None:
    harness = """
    import json
    tests = [{'score': 1, 'max_score': 1}, {'score': 1, 'max_score': 1}, {'score': 'all of them'}]
    json.dump({'tests': tests}, open('/job/results/results.json', 'w'))
    """
    job = stage_job(tmp_path, PY_YAML, {"harness.py": harness}, {})

    outcome = grade(sandbox, job)

    assert not outcome.graded and not outcome.retryable
    assert outcome.reason == "Stage 'test' gave malformed results (exit code 0): tests[2].score: not a number"
    assert outcome.reason in outcome.logs


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_results_linked_out_of_the_results_directory_are_refused(sandbox: str, tmp_path: Path) -> None:
    """results.json as a symlink to a host file (read by the service, outside the sandbox): refused."""
    harness = "import os\nos.symlink('/etc/hostname', '/job/results/results.json')\n"
    job = stage_job(tmp_path, PY_YAML, {"harness.py": harness}, {})

    outcome = grade(sandbox, job)

    assert not outcome.graded and outcome.reason is not None and "out of /job/results" in outcome.reason


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_stage_sees_its_directories_and_no_more(sandbox: str, tmp_path: Path) -> None:
    """/job/grader is read-only, /job/submission and /job/results writable, the root read-only."""
    harness = """
    import os, sys
    sys.path.insert(0, '/job/grader')
    from results_lib import write_results
    def writable(path):
        try:
            open(path, 'w').close()
            return 1
        except OSError:
            return 0
    write_results([
        {'name': 'grader', 'score': writable('/job/grader/x'), 'max_score': 0},
        {'name': 'submission', 'score': writable('/job/submission/x'), 'max_score': 0},
        {'name': 'root', 'score': writable('/usr/x'), 'max_score': 0},
        {'name': 'tmp', 'score': writable('/tmp/x'), 'max_score': 0},
        {'name': 'cwd', 'score': int(os.getcwd() == '/job/submission'), 'max_score': 0},
        {'name': 'data', 'score': int(os.path.exists('/job/output') or os.path.exists('/job/source')),
         'max_score': 0},
    ])
    """
    job = stage_job(tmp_path, PY_YAML, {"harness.py": harness}, {})

    got = cells(grade(sandbox, job))

    assert {k: v["points"] for k, v in got.items()} == {
        "grader": 0.0, "submission": 1.0, "root": 0.0, "tmp": 1.0, "cwd": 1.0, "data": 0.0
    }  # fmt: skip


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_continue_on_failure_runs_the_next_stages(sandbox: str, tmp_path: Path) -> None:
    grader_yaml = """
    stages:
      - name: lint
        command: ["sh", "-c", "echo style problems; exit 3"]
        continue_on_failure: true
      - name: missing
        command: ["no-such-program"]
        continue_on_failure: true
      - name: test
        command: ["sh", "-c", "echo '{\\"tests\\": [{\\"name\\": \\"t\\", \\"score\\": 1, \\"max_score\\": 1}]}'"]
        results: stdout
    """
    job = stage_job(tmp_path, grader_yaml, {}, {})

    outcome = grade(sandbox, job)

    assert {k: v["points"] for k, v in cells(outcome).items()} == {"t": 1.0}
    assert "Stage 'lint' failed (exit code 3)" in outcome.logs and "style problems" in outcome.logs
    assert "Stage 'missing' failed (exit code 127)" in outcome.logs
    assert outcome.gradebook is not None
    assert [(s["name"], s["exit_code"]) for s in outcome.gradebook["stages"]] == [
        ("lint", 3), ("missing", 127), ("test", 0)
    ]  # fmt: skip
