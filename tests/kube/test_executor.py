"""KubeAutogradeExecutor against the fake apiserver: every outcome, restarts, and a flaky API.

Jobs are staged on the fake's PVC as the scheduler stages them (``jobs/<id>/{submission,source,
output}``); the fake's kubelet runs the pod's command with the job directory mounted at ``/job``,
so a successful job really grades the tiny notebook. Failure modes that need a particular
command (out of memory, deadline) swap the grading command for a one-liner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from grader_service.autograding.executor import MAX_LOG_BYTES
from grader_service.autograding.kube.client import KubeError
from grader_service.autograding.kube.executor import KubeAutogradeExecutor, last_log_line
from grader_service.autograding.kube.objects import make_labels

from ..source_probe import CONTROL_FILE, CONTROL_MARK, probe_report, probing_submission, source_notebook
from .conftest import KUBE_NAMESPACE, KUBE_PVC_CLAIM
from .fake_apiserver import FakeKubeAPIServer, RequestRecord
from .fake_kubelet import PULL_ERRORS, PullFailure
from .jobs import DATA, make_task, stage_job

NS = KUBE_NAMESPACE
IMAGE = "ghcr.io/grader-service/grading:test"
SERIALIZER = client.ApiClient()
MakeExecutor = Callable[..., KubeAutogradeExecutor]


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


@contextlib.asynccontextmanager
async def started(executor: KubeAutogradeExecutor) -> AsyncIterator[KubeAutogradeExecutor]:
    await executor.start()
    assert executor.reflector is not None
    executor.reflector.max_backoff = 1.0  # tests break the apiserver on purpose; reconnect quickly
    try:
        yield executor
    finally:
        await executor.stop()


@pytest.fixture
def make_executor(fake_kube: FakeKubeAPIServer, kube_pvc_dir: Path, kubeconfig: Path) -> MakeExecutor:
    def make(**traits: Any) -> KubeAutogradeExecutor:
        settings: dict[str, Any] = dict(
            kubeconfig=str(kubeconfig),
            namespace=NS,
            pvc_name=KUBE_PVC_CLAIM,
            data_mount_path=str(kube_pvc_dir),
            image=IMAGE,
            start_timeout=30,
            api_retry_seconds=15,
            orphan_min_age=0,
            log=logging.getLogger("test.kube.executor"),
        )
        settings.update(traits)
        return KubeAutogradeExecutor(**settings)

    return make


def use_command(executor: KubeAutogradeExecutor, argv: list[str]) -> None:
    """Replace the grading command (for failure modes no notebook produces reliably)."""
    executor.grading_command = lambda task: argv  # type: ignore[method-assign]


def job_requests(fake: FakeKubeAPIServer) -> list[RequestRecord]:
    """Requests of single jobs: everything but the shared list and watch of the reflector."""
    return [r for r in fake.requests if not (r.method == "GET" and r.path.rstrip("/").endswith("/pods"))]


def slow_submission(tmp_path: Path, seconds: float = 2.0) -> Path:
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = f"import time\ntime.sleep({seconds})\ndef double(x):\n    return x + x"
    path = tmp_path / "slow.ipynb"
    path.write_text(json.dumps(nb))
    return path


async def wait_pod(
    fake: FakeKubeAPIServer,
    name: str,
    predicate: Callable[[dict[str, Any] | None], bool],
    timeout: float = 30,
) -> dict[str, Any] | None:
    return await asyncio.to_thread(fake.wait_for_pod, NS, name, predicate, timeout)


def phase_is(*phases: str) -> Callable[[dict[str, Any] | None], bool]:
    return lambda pod: pod is not None and pod["status"].get("phase") in phases


def create_pod(kube_api: client.CoreV1Api, pod: client.V1Pod) -> dict[str, Any]:
    return SERIALIZER.sanitize_for_serialization(kube_api.create_namespaced_pod(NS, pod))


# ------------------------------------------------------------------------------------------------
# the pod
# ------------------------------------------------------------------------------------------------
def test_the_pod_mounts_only_its_job_and_runs_autograde(tmp_path: Path) -> None:
    executor = KubeAutogradeExecutor(
        namespace=NS,
        pvc_name="data",
        data_mount_path=str(tmp_path),
        image=IMAGE,
        cpu_request=0.25,
        memory_request="1Gi",
        deadline_grace=30,
        node_selector={"kubernetes.io/arch": "arm64"},
        image_pull_secrets=["regcred"],
    )
    task = make_task(executor, tmp_path / "jobs" / "17", 17, memory="512Mi", cpu=0.5, timeout=120)
    pod = SERIALIZER.sanitize_for_serialization(executor.make_pod(task, attempt="a1"))
    meta, spec = pod["metadata"], pod["spec"]
    container = spec["containers"][0]
    assert meta["name"] == executor.runner_name(task) == f"autograde-{task.commit_hash[:12]}-17"
    assert meta["labels"] == make_labels("intro-2024", "tiny", task.submission_id, 17)
    assert meta["labels"]["app.kubernetes.io/name"] == "grader-service"
    assert meta["labels"]["app.kubernetes.io/component"] == "autograde"
    assert meta["annotations"]["grader-service/attempt"] == "a1"
    assert {"name": "job", "mountPath": "/job", "subPath": "jobs/17"} in container["volumeMounts"]
    assert {"name": "job", "persistentVolumeClaim": {"claimName": "data"}} in spec["volumes"]
    assert container["command"] == [
        "python", "-m", "grader_service.convert.cli", "autograde",
        "-i", "/job/submission", "-s", "/job/source", "-o", "/job/output",
        "--cell-timeout", "30", "--timeout", "120",
        "--work-dir", "/tmp/job", "--remove-source", "--confine-kernels",
        "--output-limit", str(executor.output_limit),
    ]  # fmt: skip
    assert container["command"][-6:-1] == [
        "--work-dir", "/tmp/job", "--remove-source", "--confine-kernels", "--output-limit"
    ]  # fmt: skip
    assert spec["activeDeadlineSeconds"] == 150
    # the request above the assignment's limit is lowered to it; the disk limit is the default
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
        "limits": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
    }
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    small = SERIALIZER.sanitize_for_serialization(
        executor.make_pod(make_task(executor, task.job_dir, 17, disk="200Mi"))
    )
    assert small["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] == "200Mi"
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "200Mi"}} in small["spec"]["volumes"]
    assert container["image"] == IMAGE
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["automountServiceAccountToken"] is False

    # image: the trait, overridden by the assignment, overridden by image_for
    assert executor.image_of(make_task(executor, task.job_dir, 17, image="custom:1")) == "custom:1"
    executor.image_for = lambda t: "by-lecture:2" if t.lecture == "intro-2024" else None
    assert executor.image_of(make_task(executor, task.job_dir, 17, image="custom:1")) == "by-lecture:2"
    executor.image_for = lambda t: None
    assert executor.image_of(task) == IMAGE

    outside = make_task(executor, tmp_path.parent / "elsewhere" / "jobs" / "1", 1)
    with pytest.raises(KubeError, match="not inside data_mount_path"):
        executor.make_pod(outside)


@pytest.mark.parametrize(
    ("request_cores", "limit", "expected"),
    [
        (1.0, "500m", {"requests": "500m", "limits": "500m"}),  # a quantity limit below the request
        (0.75, "0.5", {"requests": "0.5", "limits": "0.5"}),  # a decimal string
        (0.25, "2", {"requests": "250m", "limits": "2"}),  # a request under the limit stays
        (0.5, "1500m", {"requests": "500m", "limits": "1500m"}),
    ],
)
def test_cpu_limits_given_as_quantities_bound_the_request(
    tmp_path: Path, request_cores: float, limit: str, expected: dict[str, str]
) -> None:
    """An assignment may give its CPU limit as a quantity ('500m'), as the API accepts."""
    executor = KubeAutogradeExecutor(
        namespace=NS, pvc_name="data", data_mount_path=str(tmp_path), image=IMAGE, cpu_request=request_cores
    )
    pod = executor.make_pod(make_task(executor, tmp_path / "jobs" / "3", 3, cpu=limit))
    resources = SERIALIZER.sanitize_for_serialization(pod)["spec"]["containers"][0]["resources"]
    assert {kind: resources[kind]["cpu"] for kind in ("requests", "limits")} == expected


def test_configuration_errors_fail_the_job_for_good(make_executor: MakeExecutor, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(make_executor(data_mount_path=str(tmp_path / "elsewhere"))) as executor:
            outcome = await executor.run(make_task(executor, tmp_path / "jobs" / "1", 1))
            assert not outcome.graded and not outcome.retryable
            assert outcome.reason is not None
            assert outcome.reason.startswith("The grading pod could not be built: the job directory ")
            executor.data_mount_path = str(tmp_path)
            executor.extra_pod_config = {"priorityClass": "low"}  # a typo of priorityClassName
            outcome = await executor.run(make_task(executor, tmp_path / "jobs" / "1", 1))
            assert (
                outcome.reason
                == "The grading pod could not be built: unknown pod field(s): spec.priorityClass"
            )

    run(scenario())


def test_last_log_line_prefers_the_graders_error() -> None:
    summary = json.dumps({"status": "error", "error": "no notebooks"})
    assert last_log_line(f"Traceback\nValueError: x\n{summary}\n") == "could not grade: no notebooks"
    assert last_log_line('Killed\n{"status": "graded"}\n\n') == "Killed"
    assert last_log_line("") == ""


# ------------------------------------------------------------------------------------------------
# outcomes
# ------------------------------------------------------------------------------------------------
def test_grades_the_tiny_notebook_in_a_pod(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    async def scenario() -> None:
        async with started(make_executor()) as executor:
            job_dir = stage_job(kube_pvc_dir, 11)
            outcome = await executor.run(make_task(executor, job_dir, 11))
            assert outcome.graded, outcome
            assert outcome.gradebook is not None and outcome.gradebook["score"] == 3.0
            assert outcome.exit_code == 0 and outcome.reason is None
            assert '"status":"graded"' in outcome.logs
            assert 0 <= outcome.runner_seconds < 60
            assert (job_dir / "output" / "gradebook.json").exists()
            assert fake_kube.list_pods() == []  # deleted, and the DELETED event was awaited

    run(scenario())
    calls = [
        (r.method, r.path.removeprefix(f"/api/v1/namespaces/{NS}/"), r.code) for r in job_requests(fake_kube)
    ]
    pod = calls[-1][1]
    assert calls == [("POST", "pods", 201), ("GET", f"{pod}/log", 200), ("DELETE", pod, 200)], calls
    watches = [r for r in fake_kube.requests if r.watch]
    assert len(watches) == 1  # one shared watch, no polling


def test_concurrent_jobs_share_one_watch(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    trivial = "import pathlib; pathlib.Path('/job/output/gradebook.json').write_text('{\"score\": 1}')"

    async def scenario() -> None:
        async with started(make_executor(max_concurrent_pods=10)) as executor:
            use_command(executor, ["python", "-c", trivial])
            tasks = [make_task(executor, stage_job(kube_pvc_dir, i, source=None), i) for i in range(100, 110)]
            outcomes = await asyncio.gather(*(executor.run(task) for task in tasks))
            assert all(o.graded for o in outcomes), [o.reason for o in outcomes]

    run(scenario())
    assert len([r for r in fake_kube.requests if r.watch]) == 1
    assert len(job_requests(fake_kube)) == 3 * 10  # create, log, delete: no polling


def test_could_not_grade_is_reported_with_the_graders_message(
    make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    async def scenario() -> None:
        async with started(make_executor()) as executor:
            job_dir = stage_job(kube_pvc_dir, 12, source=None)  # no source notebook: exit code 2
            outcome = await executor.run(make_task(executor, job_dir, 12))
            assert not outcome.graded and outcome.exit_code == 2
            assert outcome.reason == (
                "The grading pod exited with code 2: could not grade: the source does not validate: "
                "/job/source: no notebooks in the source directory"
            )
            assert not outcome.retryable  # the assignment is the problem; retrying cannot help

    run(scenario())


def test_kernel_code_in_the_pod_gets_nothing_of_the_source(
    make_executor: MakeExecutor, kube_pvc_dir: Path, tmp_path: Path
) -> None:
    """The pod's copy of the source is gone before the first kernel starts; the grader holding it in
    memory is out of the kernel's reach (see tests/source_probe.py for what the probe tries)."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "tiny.ipynb").write_text(
        json.dumps(source_notebook(json.loads((DATA / "tiny" / "tiny.ipynb").read_text())))
    )
    submission = tmp_path / "probe.ipynb"
    submission.write_text(
        json.dumps(probing_submission(json.loads((DATA / "tiny_submission.ipynb").read_text())))
    )

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            job_dir = stage_job(kube_pvc_dir, 20, submission=submission, source=source)
            (job_dir / "submission" / CONTROL_FILE).write_text(CONTROL_MARK)
            outcome = await executor.run(make_task(executor, job_dir, 20))
            assert outcome.graded and outcome.gradebook is not None, outcome
            assert outcome.gradebook["score"] == 3.0
            report = probe_report(json.loads((job_dir / "output" / "tiny.ipynb").read_text()))
            assert report["found"] == [], report
            assert "own mem" in report["controls"], report["controls"]
            assert any(c.endswith(CONTROL_FILE) for c in report["controls"]), report["controls"]
            # (The fake kubelet's bwrap reaper is readable; a real pod's pid 1 is the grader.)
            graders = [p for p in report["processes"].values() if "grader_service.convert" in p["cmdline"]]
            assert graders, report["processes"]
            for process in graders:
                assert process["ptrace"] != "attached" and not process["mem"].startswith("read "), process
            assert not (job_dir / "source").exists()

    run(scenario())


PVC_WRITER = """
import json, os
attempts = {}
for path in ('/job/output/planted.txt', '/job/submission/planted.txt', '/job/planted.txt',
             '/job/source/planted.txt', '/tmp/job/planted-in-work.txt', 'planted-in-cwd.txt'):
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            f.write('x' * 1000)
        attempts[path] = 'written'
    except OSError as e:
        attempts[path] = type(e).__name__
for path in ('/job/submission/tiny.ipynb', '/job/output'):
    try:
        open(path).read() if path.endswith('.ipynb') else os.listdir(path)
        attempts['read ' + path] = 'read'
    except OSError as e:
        attempts['read ' + path] = type(e).__name__
try:
    os.kill(os.getppid(), 0)
    attempts['signal grader'] = 'allowed'
except OSError as e:
    attempts['signal grader'] = type(e).__name__
print('ATTEMPTS' + json.dumps(attempts))
def double(x):
    return x + x
"""


def test_kernels_in_the_pod_cannot_reach_the_jobs_volume(
    make_executor: MakeExecutor, kube_pvc_dir: Path, tmp_path: Path
) -> None:
    """Landlock: the job's volume (the service's data volume) is out of the kernel's reach; its work
    directory in /tmp is not."""
    from grader_service.convert import confine

    if confine.abi_version() == 0:
        pytest.skip("Landlock is not available on this machine")
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = PVC_WRITER
    submission = tmp_path / "writer.ipynb"
    submission.write_text(json.dumps(nb))

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            job_dir = stage_job(kube_pvc_dir, 21, submission=submission)
            outcome = await executor.run(make_task(executor, job_dir, 21))
            assert outcome.graded and outcome.gradebook is not None and outcome.gradebook["score"] == 3.0, (
                outcome
            )
            graded = json.loads((job_dir / "output" / "tiny.ipynb").read_text())
            text = "".join(o.get("text", "") for o in graded["cells"][1]["outputs"])
            attempts = json.loads(text.split("ATTEMPTS", 1)[1])
            for path in ("/job/output", "/job/submission", "/job", "/job/source"):
                assert attempts[f"{path}/planted.txt"] == "PermissionError", attempts
            assert attempts["/tmp/job/planted-in-work.txt"] == "written"
            assert attempts["planted-in-cwd.txt"] == "written"
            assert attempts["read /job/submission/tiny.ipynb"] == "PermissionError", attempts
            assert attempts["read /job/output"] == "PermissionError", attempts
            if confine.abi_version() >= 6:
                assert attempts["signal grader"] == "PermissionError", attempts
            assert not list(job_dir.rglob("planted*"))

    run(scenario())


# What a notebook may write to fill the disk: each is followed by a pause, as a student's
# notebook would go on computing (the kubelet measures, it does not block writes).
DISK_FILLERS = {
    "one_big_file": "open('big.bin', 'wb').write(b'0' * (48 << 20))",
    "many_files": "for i in range(48):\n    open(f'part{i}.bin', 'wb').write(b'0' * (1 << 20))",
    "many_small_files": "import os\nos.mkdir('small')\nfor i in range(3000):\n"
    "    open(f'small/{i}.txt', 'wb').write(b'0' * 16384)",
    "tmp": "open('/tmp/scratch.bin', 'wb').write(b'0' * (48 << 20))",
}


@pytest.mark.parametrize("filler", sorted(DISK_FILLERS))
def test_a_job_that_fills_its_disk_is_evicted_with_a_disk_limit_reason(
    make_executor: MakeExecutor, kube_pvc_dir: Path, tmp_path: Path, filler: str
) -> None:
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = (
        DISK_FILLERS[filler] + "\nimport time\ntime.sleep(20)\ndef double(x):\n    return 2 * x"
    )
    submission = tmp_path / "filler.ipynb"
    submission.write_text(json.dumps(nb))

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            job_dir = stage_job(kube_pvc_dir, 18, submission=submission)
            begin = time.monotonic()
            outcome = await executor.run(make_task(executor, job_dir, 18, disk="32Mi"))
            assert time.monotonic() - begin < 15, "evicted long before the cell's end"
            assert not outcome.graded and not outcome.retryable
            assert outcome.reason is not None and outcome.reason.startswith(
                "Grading stopped: the job reached its disk limit (32Mi)"
            ), outcome.reason
            assert 'Kubernetes evicted the pod: Usage of EmptyDir volume "tmp" exceeds the limit "32Mi".' in (
                outcome.reason
            )
            # The notebook worked on its copy in the pod's /tmp: nothing landed on the claim.
            written = sum(p.stat().st_size for p in job_dir.rglob("*") if p.is_file())
            assert written < 1 << 20, written

    run(scenario())


def test_container_ephemeral_storage_limit_counts_logs_and_volumes(
    make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    """The pod-level check: the emptyDirs plus the container's log against its limit."""

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            use_command(executor, ["python", "-c", "import sys, time\nsys.stdout.write(('x' * 1023 + '\\n') * (40 << 10))\n"
                                   "sys.stdout.flush(); time.sleep(20)"])  # fmt: skip
            job_dir = stage_job(kube_pvc_dir, 19)
            outcome = await executor.run(make_task(executor, job_dir, 19, disk="32Mi"))
            assert outcome.reason == (
                "Grading stopped: the job reached its disk limit (32Mi) with the files the notebook wrote "
                "(in its working directory and /tmp). Write less, or delete files the notebook no longer "
                "needs. (Kubernetes evicted the pod: Pod ephemeral local storage usage exceeds the total "
                "limit of containers 32Mi.)"
            ), outcome.reason

    run(scenario())


def test_out_of_memory(make_executor: MakeExecutor, kube_pvc_dir: Path) -> None:
    async def scenario() -> None:
        async with started(make_executor()) as executor:
            use_command(executor, ["python", "-c", "x = b'x' * (400 * 2**20); import time; time.sleep(30)"])
            job_dir = stage_job(kube_pvc_dir, 13)
            outcome = await executor.run(make_task(executor, job_dir, 13, memory="200Mi"))
            assert not outcome.graded and outcome.exit_code == 137
            assert outcome.reason == "The grading pod ran out of memory (OOMKilled, limit 200Mi)"
            assert not outcome.retryable

    run(scenario())


def test_deadline_exceeded(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    async def scenario() -> None:
        executor = make_executor(deadline_grace=1, extra_pod_config={"terminationGracePeriodSeconds": 1})
        async with started(executor):
            use_command(executor, ["python", "-c", "import time; time.sleep(60)"])
            job_dir = stage_job(kube_pvc_dir, 14)
            begin = time.monotonic()
            outcome = await executor.run(make_task(executor, job_dir, 14, timeout=1))
            assert time.monotonic() - begin < 15
            assert not outcome.graded
            assert outcome.reason == "The grading pod exceeded its time limit of 2 s (DeadlineExceeded)"
            assert not outcome.retryable
            assert fake_kube.list_pods() == []

    run(scenario())


def test_failing_command_exit_code_and_last_line(make_executor: MakeExecutor, kube_pvc_dir: Path) -> None:
    async def scenario() -> None:
        async with started(make_executor()) as executor:
            use_command(
                executor,
                ["python", "-c", "import sys; print('starting', flush=True); sys.exit('boom: disk full')"],
            )
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 15), 15))
            assert (outcome.graded, outcome.exit_code) == (False, 1)
            assert outcome.reason == "The grading pod exited with code 1: boom: disk full"
            assert "starting" in outcome.logs and not outcome.retryable

    run(scenario())


def test_long_logs_keep_their_head_and_tail(make_executor: MakeExecutor, kube_pvc_dir: Path) -> None:
    # all on stderr: the order of lines across stdout and stderr is not defined
    noisy = "import sys\nfor i in range(3000): print(f'line {i:05d} ' + 'x' * 200, file=sys.stderr)\nsys.exit('the end')"

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            use_command(executor, ["python", "-c", noisy])
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 22), 22))
            assert outcome.reason == "The grading pod exited with code 1: the end"
            assert len(outcome.logs) <= MAX_LOG_BYTES + 100
            assert outcome.logs.startswith("line 00000 ") and "\n[... log truncated ...]\n" in outcome.logs
            assert outcome.logs.rstrip().endswith("line 02999 " + "x" * 200 + "\nthe end")

    run(scenario())


def statuses_of(executor: KubeAutogradeExecutor) -> list[str | None]:
    """Record what the executor reports as its jobs' status (the scheduler stores it)."""
    seen: list[str | None] = []
    executor.status_listener = lambda task, detail: seen.append(detail)
    return seen


@pytest.mark.parametrize("kind", ["not found", "unauthorized", "manifest unknown"])
def test_a_permanent_pull_failure_fails_at_once(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path, kind: str
) -> None:
    image = "registry.example/grading:gone"
    fake_kube.set_pull_failure(image, PullFailure(PULL_ERRORS[kind]))
    fake_kube.set(image_pull_backoff=0.2)

    async def scenario() -> None:
        async with started(make_executor(start_timeout=60, image_pull_timeout=60)) as executor:
            seen = statuses_of(executor)
            begin = time.monotonic()
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 16), 16, image=image))
            assert time.monotonic() - begin < 10  # not the 60 s of either timeout
            assert not outcome.graded and not outcome.retryable
            error = PULL_ERRORS[kind].format(image=image)
            assert outcome.reason == (
                f"The grading image {image!r} cannot be pulled (ErrImagePull: {error}). Not retried: correct "
                "the image name, tag or pull secret (the assignment's 'image' setting, or the executor's "
                "image and image_pull_secrets), then regrade"
            )
            assert seen == []  # failed before there was anything to wait for
            assert fake_kube.list_pods() == []

    run(scenario())


def test_an_invalid_image_name_fails_at_once(make_executor: MakeExecutor, kube_pvc_dir: Path) -> None:
    async def scenario() -> None:
        async with started(make_executor(start_timeout=60)) as executor:
            begin = time.monotonic()
            task = make_task(executor, stage_job(kube_pvc_dir, 17), 17, image="Not A Valid Image")
            outcome = await executor.run(task)
            assert time.monotonic() - begin < 5
            assert outcome.reason is not None
            assert "is not a valid image name (InvalidImageName: " in outcome.reason, outcome.reason
            assert not outcome.retryable

    run(scenario())


@pytest.mark.parametrize("kind", ["timeout", "server error"])
@pytest.mark.parametrize("with_error", [True, False], ids=["kubelet-1.32+", "older-kubelet"])
def test_a_transient_pull_failure_is_waited_out_up_to_the_cap(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path, kind: str, with_error: bool
) -> None:
    image = "registry.example/grading:flaky"
    fake_kube.set_pull_failure(image, PullFailure(PULL_ERRORS[kind]))
    fake_kube.set(image_pull_backoff=0.2, backoff_message_has_error=with_error)

    async def scenario() -> None:
        async with started(make_executor(start_timeout=60, image_pull_timeout=2)) as executor:
            seen = statuses_of(executor)
            begin = time.monotonic()
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 18), 18, image=image))
            assert 2 <= time.monotonic() - begin < 8  # the pull cap, not start_timeout
            assert not outcome.graded and outcome.retryable  # the scheduler tries again, max_attempts times
            error = PULL_ERRORS[kind].format(image=image)
            assert outcome.reason is not None
            assert outcome.reason.startswith(f"The grading image {image!r} could not be pulled within 2 s (")
            assert outcome.reason.endswith(f": {error})"), outcome.reason  # the registry's error, either way
            # while it waited, the reason was reported (the kubelet's own words), each change once
            assert seen and all(s is not None for s in seen), seen
            assert seen[0] == (
                f"Waiting for the grading image {image!r} (ErrImagePull: {error}); the kubelet retries the "
                "pull, the job gives up after 2 s"
            )
            assert any("ImagePullBackOff" in s for s in seen)
            assert all(a != b for a, b in zip(seen, seen[1:], strict=False))

    run(scenario())


def test_a_pull_that_recovers_grades_and_clears_the_status(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    fake_kube.set_pull_failure(IMAGE, PullFailure(PULL_ERRORS["server error"], times=2))
    fake_kube.set(image_pull_backoff=0.2)

    async def scenario() -> None:
        async with started(make_executor(image_pull_timeout=30)) as executor:
            seen = statuses_of(executor)
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 19), 19))
            assert outcome.graded, outcome.reason
            assert seen[0] is not None and "503 Service Unavailable" in seen[0]
            assert seen[-1] is None  # the container started: nothing to wait for any more

    run(scenario())


def test_unschedulable_fails_within_start_timeout(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    async def scenario() -> None:
        executor = make_executor(start_timeout=1, node_selector={"kubernetes.io/arch": "arm64"})
        async with started(executor):
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 18), 18))
            assert not outcome.graded and outcome.retryable
            assert outcome.reason == (
                "The grading pod could not be scheduled within 1 s (Unschedulable: 0/1 nodes are available: "
                "1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: "
                "1 Preemption is not helpful for scheduling.)"
            )
            assert fake_kube.list_pods() == []

    run(scenario())


# ------------------------------------------------------------------------------------------------
# idempotence: 409 on create
# ------------------------------------------------------------------------------------------------
def test_lost_create_answer_is_adopted(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    fake_kube.inject_fault("reset-after", method="POST")  # created, but the answer never arrives

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 19), 19))
            assert outcome.graded and outcome.gradebook is not None and outcome.gradebook["score"] == 3.0

    run(scenario())
    posts = [(r.code, r.fault) for r in fake_kube.requests if r.method == "POST"]
    assert posts == [(201, "reset-after"), (409, None)]
    assert len(job_requests(fake_kube)) <= 5


def test_leftover_pod_of_an_earlier_attempt_is_replaced(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path, kube_api: client.CoreV1Api
) -> None:
    async def scenario() -> None:
        async with started(make_executor()) as executor:
            task = make_task(executor, stage_job(kube_pvc_dir, 20), 20)
            old = make_executor(extra_pod_config={"terminationGracePeriodSeconds": 1})
            use_command(old, ["python", "-c", "import time; time.sleep(60)"])
            stale = create_pod(kube_api, old.make_pod(task, attempt="earlier"))
            await wait_pod(fake_kube, stale["metadata"]["name"], phase_is("Running"))
            outcome = await executor.run(task)
            assert outcome.graded, outcome

    run(scenario())
    deletes = [r.code for r in fake_kube.requests if r.method == "DELETE"]
    assert deletes == [200, 200]  # the leftover, then the job's own pod


def test_a_strangers_pod_with_the_jobs_name_is_left_alone(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path, kube_api: client.CoreV1Api
) -> None:
    async def scenario() -> None:
        async with started(make_executor()) as executor:
            task = make_task(executor, stage_job(kube_pvc_dir, 21), 21)
            name = executor.runner_name(task)
            kube_api.create_namespaced_pod(
                NS,
                {
                    "metadata": {"name": name, "labels": {"app": "someone-else"}},
                    "spec": {"containers": [{"name": "c", "image": "x", "command": ["sleep", "30"]}]},
                },
            )
            outcome = await executor.run(task)
            assert not outcome.graded and not outcome.retryable
            assert outcome.reason is not None
            assert outcome.reason.startswith(
                f"A pod named {name} already exists in namespace {NS} and is not"
            )
            assert fake_kube.get_pod(NS, name) is not None

    run(scenario())


# ------------------------------------------------------------------------------------------------
# restarts
# ------------------------------------------------------------------------------------------------
def test_reconcile_after_a_restart(
    fake_kube: FakeKubeAPIServer,
    make_executor: MakeExecutor,
    kube_pvc_dir: Path,
    kube_api: client.CoreV1Api,
    tmp_path: Path,
) -> None:
    """A previous service process created pods and died; a new executor finds and finishes them."""
    before = make_executor()  # only builds pods, as the dead process did
    finished = make_task(before, stage_job(kube_pvc_dir, 31), 31)
    running = make_task(before, stage_job(kube_pvc_dir, 32, submission=slow_submission(tmp_path)), 32)
    missing = make_task(before, stage_job(kube_pvc_dir, 33), 33)
    other_job = make_task(before, stage_job(kube_pvc_dir, 34), 34)
    for task in (finished, running):
        create_pod(kube_api, before.make_pod(task, attempt="before-restart"))

    async def scenario() -> None:
        await wait_pod(fake_kube, before.runner_name(finished), phase_is("Succeeded"))
        await wait_pod(fake_kube, before.runner_name(running), phase_is("Running"))
        async with started(make_executor()) as after:
            outcomes = await asyncio.gather(
                after.reconcile(finished, before.runner_name(finished)),
                after.reconcile(running, before.runner_name(running)),
                after.reconcile(missing, before.runner_name(missing)),
                # a runner name that is another job's pod is not adopted
                after.reconcile(other_job, before.runner_name(finished)),
            )
            done, awaited, absent, not_ours = outcomes
            assert done is not None and done.graded and done.gradebook["score"] == 3.0
            assert awaited is not None and awaited.graded and awaited.gradebook["score"] == 3.0
            assert absent is None and not_ours is None
            assert fake_kube.list_pods() == []

    run(scenario())
    # only the two pods of the process before the restart: nothing was graded twice
    assert len([r for r in fake_kube.requests if r.method == "POST"]) == 2


def test_cleanup_orphans(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path, kube_api: client.CoreV1Api
) -> None:
    builder = make_executor()
    use_command(builder, ["python", "-c", "import time; time.sleep(60)"])
    live, orphan = (make_task(builder, stage_job(kube_pvc_dir, i), i) for i in (41, 42))
    for task in (live, orphan):
        create_pod(kube_api, builder.make_pod(task))
    kube_api.create_namespaced_pod(
        NS, {"metadata": {"name": "unrelated"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    )

    async def scenario() -> None:
        async with started(make_executor(orphan_min_age=3600)) as executor:
            assert await executor.cleanup_orphans({41}) == []  # too young to be sure
        async with started(make_executor()) as executor:
            assert await executor.cleanup_orphans({41}) == [builder.runner_name(orphan)]
        await wait_pod(fake_kube, builder.runner_name(orphan), lambda pod: pod is None)

    run(scenario())
    assert sorted(p["metadata"]["name"] for p in fake_kube.list_pods()) == sorted(
        [builder.runner_name(live), "unrelated"]
    )


def test_stop_deletes_the_pods_of_interrupted_jobs(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    async def scenario() -> None:
        executor = make_executor(extra_pod_config={"terminationGracePeriodSeconds": 1})
        async with started(executor):
            use_command(executor, ["python", "-c", "import time; time.sleep(60)"])
            task = make_task(executor, stage_job(kube_pvc_dir, 43), 43)
            job = asyncio.create_task(executor.run(task))
            await wait_pod(fake_kube, executor.runner_name(task), phase_is("Running"))
            job.cancel()  # what Scheduler.stop() does to its workers
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await wait_pod(fake_kube, executor.runner_name(task), lambda pod: pod is None)

    run(scenario())


# ------------------------------------------------------------------------------------------------
# the watch and a flaky apiserver
# ------------------------------------------------------------------------------------------------
def test_watch_gone_410_lists_again_and_sees_what_it_missed(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    async def scenario() -> None:
        async with started(make_executor()) as executor:
            assert executor.reflector is not None
            lists = executor.reflector.lists
            fake_kube.inject_fault("status", status=503, watch=True, count=None)  # no watch for now
            fake_kube.drop_watches(abrupt=False)
            task = make_task(executor, stage_job(kube_pvc_dir, 51), 51)
            job = asyncio.create_task(executor.run(task))
            # the pod runs to its end while nobody watches, then the history is compacted
            await wait_pod(fake_kube, executor.runner_name(task), phase_is("Succeeded"))
            fake_kube.compact()
            fake_kube.clear_faults()
            outcome = await asyncio.wait_for(job, 30)
            assert outcome.graded, outcome
            assert executor.reflector.lists == lists + 1  # 410 Gone -> one new list

    run(scenario())
    watch_codes = [r.code for r in fake_kube.requests if r.watch]
    assert 503 in watch_codes


def test_apiserver_restart_mid_job(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with started(make_executor()) as executor:
            assert executor.reflector is not None
            task = make_task(
                executor, stage_job(kube_pvc_dir, 52, submission=slow_submission(tmp_path, 1.0)), 52
            )
            job = asyncio.create_task(executor.run(task))
            await wait_pod(fake_kube, executor.runner_name(task), phase_is("Running"))
            watches = executor.reflector.watches
            # connections cut, and for 2 s every new one is reset: a restarting apiserver
            fake_kube.inject_fault("reset", count=None, seconds=2.0)
            fake_kube.drop_watches(abrupt=True)
            outcome = await asyncio.wait_for(job, 60)
            assert outcome.graded, outcome
            assert executor.reflector.watches > watches

    run(scenario())
    assert [r for r in fake_kube.requests if r.fault == "reset"]


def test_transient_api_errors_are_retried(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    fake_kube.inject_fault("status", status=503, method="POST", count=2)
    fake_kube.inject_fault("status", status=500, path="/log", count=1)
    fake_kube.inject_fault("status", status=429, method="DELETE", count=1)

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 53), 53))
            assert outcome.graded and '"status":"graded"' in outcome.logs

    run(scenario())
    codes = [(r.method, r.code) for r in job_requests(fake_kube)]
    assert codes == [
        ("POST", 503),
        ("POST", 503),
        ("POST", 201),
        ("GET", 500),
        ("GET", 200),
        ("DELETE", 429),
        ("DELETE", 200),
    ]


def test_api_outage_longer_than_the_retries_fails_the_job_retryably(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    async def scenario() -> None:
        async with started(make_executor(api_retry_seconds=1)) as executor:
            fake_kube.inject_fault("status", status=503, method="POST", count=None)
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 54), 54))
            assert not outcome.graded and outcome.retryable
            assert outcome.reason is not None
            assert outcome.reason.startswith(
                "The grading pod could not be created: the Kubernetes API refused"
            )
            assert "503" in outcome.reason

    run(scenario())
