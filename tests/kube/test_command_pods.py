"""Command assignments on Kubernetes: grader.yaml's stages as one pod's containers.

The pod spec of a two-stage pipeline is checked against the Kubernetes schemas (strict, as the
notebook pod in test_objects.py); the pipelines then run against the fake apiserver, whose kubelet
runs init containers as a node does (in order, each to completion, a failing one failing the
pod), each stage's command as a real process with the job's directories mounted: a two-stage
build-and-test graded end to end, a failing build stage, a stage timeout, continue_on_failure,
and a stage trying to write the instructor's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from grader_service.autograding.executor import GradingTask
from grader_service.autograding.kube.executor import KubeAutogradeExecutor
from grader_service.autograding.kube.objects import NETWORK_LABEL, make_egress_policy
from grader_service.autograding.kube.stages import recorded_run, stage_overrun
from grader_service.autograding.pipeline import StageFailed
from grader_service.command.spec import Stage

from .conftest import KUBE_NAMESPACE, KUBE_PVC_CLAIM
from .fake_apiserver import FakeKubeAPIServer
from .fake_kubelet import PULL_ERRORS, PullFailure
from .jobs import make_task, stage_job
from .test_objects import K8S_VERSIONS

NS = KUBE_NAMESPACE
SERIALIZER = client.ApiClient()
MakeExecutor = Callable[..., KubeAutogradeExecutor]

# The harness: runs the program the build stage left in the submission, Gradescope results out.
HARNESS = textwrap.dedent(
    """\
    import json, subprocess, sys
    tests = []
    for a, b in [(1, 2), (2, 2), (-1, 1)]:
        out = subprocess.run([sys.executable, "built_add.py", str(a), str(b)], capture_output=True, text=True)
        ok = out.stdout.strip() == str(a + b)
        tests.append({"name": f"add {a} {b}", "score": 1 if ok else 0, "max_score": 1, "output": out.stdout})
    with open("/job/results/results.json", "w") as f:
        json.dump({"tests": tests}, f)
    print("harness done")
    """
)
BUILD = (
    "cp add.py built_add.py && echo built; "
    "if touch /job/grader/pwned 2>/dev/null; then echo WROTE-GRADER; fi; "
    "if touch /job/results/../../output/pwned 2>/dev/null; then echo WROTE-OUTPUT; fi"
)
STUDENT_ADD = "import sys\nprint(int(sys.argv[1]) + int(sys.argv[2]))\n"


def grader_yaml(*stages: dict[str, Any]) -> str:
    return yaml.safe_dump({"submission": {"files": ["*.py"]}, "stages": list(stages)})


BUILD_STAGE = {"name": "build", "image": "gcc:14", "command": ["sh", "-c", BUILD], "memory": "300Mi"}
TEST_STAGE = {
    "name": "test",
    "image": "python:3.12-slim",
    "command": ["python", "/job/grader/harness.py"],
    "results": "/job/results/results.json",
    "cpu": "500m",
    "timeout": 30,
}


def stage_command_job(data_dir: Path, job_id: int, spec: str, add: str = STUDENT_ADD) -> Path:
    job_dir = stage_job(data_dir, job_id, submission=None, source=None)
    files = {"source/grader.yaml": spec, "source/harness.py": HARNESS, "submission/add.py": add}
    for relative, text in files.items():
        (job_dir / relative).write_text(text)
        (job_dir / relative).chmod(0o666)
    return job_dir


def command_task(executor: KubeAutogradeExecutor, job_dir: Path, job_id: int, **settings: Any) -> GradingTask:
    return dataclasses.replace(make_task(executor, job_dir, job_id, **settings), kind="command")


@pytest.fixture
def make_executor(fake_kube: FakeKubeAPIServer, kube_pvc_dir: Path, kubeconfig: Path) -> MakeExecutor:
    def make(**traits: Any) -> KubeAutogradeExecutor:
        settings: dict[str, Any] = dict(
            kubeconfig=str(kubeconfig),
            namespace=NS,
            pvc_name=KUBE_PVC_CLAIM,
            data_mount_path=str(kube_pvc_dir),
            image="ghcr.io/grader-service/grading:test",
            start_timeout=30,
            log=logging.getLogger("test.kube.command"),
        )
        settings.update(traits)
        return KubeAutogradeExecutor(**settings)

    return make


@contextlib.asynccontextmanager
async def started(executor: KubeAutogradeExecutor) -> AsyncIterator[KubeAutogradeExecutor]:
    await executor.start()
    try:
        yield executor
    finally:
        await executor.stop()


# ------------------------------------------------------------------------------------------------
# the pod spec and the network policy (no cluster)
# ------------------------------------------------------------------------------------------------
def two_stage_pod(tmp_path: Path, **traits: Any) -> tuple[dict[str, Any], KubeAutogradeExecutor, GradingTask]:
    executor = KubeAutogradeExecutor(
        namespace=NS, pvc_name=KUBE_PVC_CLAIM, data_mount_path=str(tmp_path), image="grading:1", **traits
    )
    job_dir = stage_command_job(tmp_path, 7, grader_yaml(BUILD_STAGE, TEST_STAGE))
    task = command_task(executor, job_dir, 7, timeout=100, memory="1Gi", cpu=1, disk="2Gi")
    return SERIALIZER.sanitize_for_serialization(executor.make_pod(task, "attempt-1")), executor, task


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_two_stage_pod_spec_validates_strictly(tmp_path: Path, version: str) -> None:
    manifest, _, _ = two_stage_pod(tmp_path)
    kubernetes_validate.validate(manifest, version, strict=True)


def test_stages_are_init_containers_then_the_main_one_each_with_the_local_layout(tmp_path: Path) -> None:
    manifest, _, _ = two_stage_pod(tmp_path, cpu_request=0.25, deadline_grace=30)
    spec = manifest["spec"]
    (build,) = spec["initContainers"]
    (test,) = spec["containers"]
    assert (build["name"], build["image"], build["command"]) == ("stage-0", "gcc:14", ["sh", "-c", BUILD])
    assert (test["name"], test["image"]) == ("stage-1", "python:3.12-slim")
    # Per-stage limits, the job's where the stage has none; requests never above the limits.
    assert build["resources"]["limits"] == {"cpu": "1", "memory": "300Mi", "ephemeral-storage": "2Gi"}
    assert test["resources"]["limits"] == {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "2Gi"}
    assert test["resources"]["requests"]["cpu"] == "250m"
    # Sum of the stage timeouts (build: the job's 100 s; test: its own 30 s) plus the grace.
    assert spec["activeDeadlineSeconds"] == 100 + 30 + 30
    for index, container in enumerate([build, test]):
        assert container["workingDir"] == "/job/submission"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/job/submission"]["subPath"] == "jobs/7/submission"
        assert not mounts["/job/submission"].get("readOnly")
        assert mounts["/job/grader"] == {
            "name": "job", "mountPath": "/job/grader", "subPath": "jobs/7/source", "readOnly": True
        }  # fmt: skip
        assert mounts["/job/results"]["subPath"] == f"jobs/7/stages/{index}"
        assert mounts["/tmp"]["name"] == f"tmp-{index}"  # a fresh /tmp per stage, as locally
        assert set(mounts) == {
            "/job/submission",
            "/job/grader",
            "/job/results",
            "/tmp",
        }  # nothing else of the job
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] and security["runAsNonRoot"]
        assert not security["allowPrivilegeEscalation"] and security["capabilities"] == {"drop": ["ALL"]}
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    tmps = {v["name"]: v for v in spec["volumes"] if v["name"].startswith("tmp")}
    assert tmps == {f"tmp-{i}": {"name": f"tmp-{i}", "emptyDir": {"sizeLimit": "2Gi"}} for i in (0, 1)}
    assert manifest["metadata"]["labels"][NETWORK_LABEL] == "denied"


def test_continue_on_failure_wraps_only_init_stages_in_a_shell(tmp_path: Path) -> None:
    lint = {"name": "lint", "command": ["flake8", "."], "continue_on_failure": True}
    last = {**TEST_STAGE, "continue_on_failure": True}
    executor = KubeAutogradeExecutor(namespace=NS, pvc_name=KUBE_PVC_CLAIM, data_mount_path=str(tmp_path))
    task = command_task(executor, stage_command_job(tmp_path, 8, grader_yaml(lint, last)), 8)
    spec = SERIALIZER.sanitize_for_serialization(executor.make_pod(task))["spec"]
    wrapped = spec["initContainers"][0]["command"]
    assert wrapped[:2] == ["/bin/sh", "-c"] and wrapped[3:] == ["sh", "flake8", "."]
    assert spec["containers"][0]["command"] == ["python", "/job/grader/harness.py"]  # the last: its own code


@pytest.mark.parametrize(
    ("allowed", "asks", "label"),
    [
        (False, (True, True), "denied"),  # the admin decides first
        (True, (True, False), "denied"),  # one network namespace per pod: not for a stage that did not ask
        (True, (True, True), "allowed"),
    ],
)
def test_network_is_per_pod_only_when_allowed_and_every_stage_asks(
    tmp_path: Path, allowed: bool, asks: tuple[bool, bool], label: str
) -> None:
    stages = [{**BUILD_STAGE, "network": asks[0]}, {**TEST_STAGE, "network": asks[1]}]
    executor = KubeAutogradeExecutor(
        namespace=NS, pvc_name=KUBE_PVC_CLAIM, data_mount_path=str(tmp_path), allow_network=allowed
    )
    task = command_task(executor, stage_command_job(tmp_path, 9, grader_yaml(*stages)), 9)
    assert executor.make_pod(task).metadata.labels[NETWORK_LABEL] == label


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_egress_policy_validates_and_selects_only_allowed_grading_pods(tmp_path: Path, version: str) -> None:
    policy = make_egress_policy(NS)
    kubernetes_validate.validate(policy, version, strict=True)
    assert policy["spec"]["policyTypes"] == ["Egress"] and policy["spec"]["egress"] == [{}]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    manifest, _, _ = two_stage_pod(tmp_path)
    labels = manifest["metadata"]["labels"]
    assert {k: labels[k] for k in selector if k in labels} != selector  # a denied pod is not selected
    assert {**labels, NETWORK_LABEL: "allowed"} | selector == {**labels, NETWORK_LABEL: "allowed"}


def pod_with(*states: dict[str, Any]) -> dict[str, Any]:
    """A pod whose stages' containers are in `states` (the last one is the main container)."""
    statuses = [{"name": f"stage-{i}", "state": state} for i, state in enumerate(states)]
    return {"status": {"initContainerStatuses": statuses[:-1], "containerStatuses": statuses[-1:]}}


def test_stage_overrun_counts_from_each_running_containers_start() -> None:
    running = {"running": {"startedAt": "2026-01-01T00:00:10Z"}}
    done = {
        "terminated": {
            "exitCode": 0,
            "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:00:09Z",
        }
    }
    start = 1767225610.0  # 2026-01-01T00:00:10Z
    assert stage_overrun(pod_with(done, running), [5, 30], start + 10) == (None, 20.0)
    assert stage_overrun(pod_with(done, running), [5, 30], start + 30) == (1, 0.0)
    # Nothing running (waiting for an image, or between stages): nothing to time, no wake-up of its own.
    assert stage_overrun(pod_with(done, {"waiting": {"reason": "PodInitializing"}}), [5, 30], start) == (
        None,
        float("inf"),
    )


def test_a_wrapped_stage_exit_code_comes_from_its_termination_message_only() -> None:
    stage = Stage(name="lint", command=("flake8",), continue_on_failure=True)
    times = {"startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:02Z"}

    def run_with(message: str | None, code: int = 0) -> Any:
        terminated = {"exitCode": code, **times, **({"message": message} if message else {})}
        return recorded_run(pod_with({"terminated": terminated}, {}), stage, 0, 10, "out", None, True)

    assert (run_with("grader-stage-exit 3\n").code, run_with("grader-stage-exit 3\n").seconds) == (3, 2.0)
    assert run_with("grader-stage-exit 0").code == 0
    assert run_with(None).code is None  # no record: not taken for a success
    assert run_with("grader-stage-exit 3; rm -rf").code is None
    assert run_with(None, code=137).code == 137  # the wrapper itself was killed
    with pytest.raises(StageFailed, match=r"Stage 'lint' did not run \(PodInitializing\)"):
        recorded_run(pod_with({"waiting": {"reason": "PodInitializing"}}, {}), stage, 0, 10, "", None, True)


def test_the_egress_policy_in_the_docs_is_the_builders() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml")[1:]]
    (block,) = [b for b in blocks if "grading-egress" in b]
    documented = yaml.safe_load(textwrap.dedent(block))
    assert documented == make_egress_policy(documented["metadata"]["namespace"])


# ------------------------------------------------------------------------------------------------
# pipelines in the fake cluster
# ------------------------------------------------------------------------------------------------
def test_two_stage_pipeline_is_graded_end_to_end(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    job_dir = stage_command_job(kube_pvc_dir, 21, grader_yaml(BUILD_STAGE, TEST_STAGE))

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            outcome = await executor.run(command_task(executor, job_dir, 21))
            assert outcome.graded, outcome
            book = outcome.gradebook
            assert book is not None and (book["score"], book["max_score"]) == (3.0, 3.0)
            assert [s["name"] for s in book["stages"]] == ["build", "test"]
            assert [s["exit_code"] for s in book["stages"]] == [0, 0]
            assert "== stage build" in outcome.logs and "built" in outcome.logs
            assert "harness done" in outcome.logs
            assert "WROTE" not in outcome.logs  # neither the grader's files nor another directory
            assert json.loads((job_dir / "output" / "gradebook.json").read_text())["score"] == 3.0
            assert fake_kube.list_pods() == []

    run(scenario())
    assert not (job_dir / "source" / "pwned").exists() and not (job_dir / "output" / "pwned").exists()
    assert (job_dir / "submission" / "built_add.py").exists()  # the build stage's product, kept for the next


def test_wrong_answers_score_what_they_score(make_executor: MakeExecutor, kube_pvc_dir: Path) -> None:
    wrong = "import sys\nprint(int(sys.argv[1]) * int(sys.argv[2]))\n"  # right only for 2 2
    job_dir = stage_command_job(kube_pvc_dir, 22, grader_yaml(BUILD_STAGE, TEST_STAGE), add=wrong)

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            outcome = await executor.run(command_task(executor, job_dir, 22))
            assert outcome.graded and outcome.gradebook is not None
            assert outcome.gradebook["score"] == 1.0

    run(scenario())


def test_a_failing_build_stage_fails_the_grading_naming_it(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    build = {**BUILD_STAGE, "command": ["sh", "-c", "echo 'add.c:1: error: expected ;' >&2; exit 2"]}
    job_dir = stage_command_job(kube_pvc_dir, 23, grader_yaml(build, TEST_STAGE))

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            outcome = await executor.run(command_task(executor, job_dir, 23))
            assert not outcome.graded and not outcome.retryable
            assert outcome.reason == "Stage 'build' failed (exit code 2)"
            assert "expected ;" in outcome.logs
            assert "harness done" not in outcome.logs  # the pod stopped at the failing init container
            assert fake_kube.list_pods() == []

    run(scenario())
    assert not (job_dir / "stages" / "1" / "results.json").exists()


def test_a_stage_timeout_fails_the_grading_naming_the_stage(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    # The stage's image needs no `timeout` binary: the executor stops the pod from the watch.
    slow = {**TEST_STAGE, "command": ["python", "-c", "import time; print('spinning', flush=True); time.sleep(60)"],
            "timeout": 1.5}  # fmt: skip
    job_dir = stage_command_job(kube_pvc_dir, 24, grader_yaml(BUILD_STAGE, slow))

    async def scenario() -> None:
        executor = make_executor(extra_pod_config={"terminationGracePeriodSeconds": 1})
        async with started(executor):
            begin = time.monotonic()
            outcome = await executor.run(command_task(executor, job_dir, 24))
            assert time.monotonic() - begin < 20
            assert not outcome.graded and not outcome.retryable
            assert outcome.reason is not None and "timed out" in outcome.reason and "'test'" in outcome.reason
            assert "spinning" in outcome.logs  # read before the pod was deleted
            assert fake_kube.list_pods() == []  # gone before the results were looked at
            assert fake_kube.running_processes() == 0

    run(scenario())


def test_continue_on_failure_runs_the_next_stage_and_records_the_exit_code(
    make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    lint = {
        "name": "lint",
        "command": ["sh", "-c", "echo 'E501 line too long'; exit 3"],
        "continue_on_failure": True,
    }
    job_dir = stage_command_job(kube_pvc_dir, 25, grader_yaml(lint, BUILD_STAGE, TEST_STAGE))

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            outcome = await executor.run(command_task(executor, job_dir, 25))
            assert outcome.graded, outcome
            assert outcome.gradebook is not None and outcome.gradebook["score"] == 3.0
            assert [s["exit_code"] for s in outcome.gradebook["stages"]] == [3, 0, 0]
            assert "Stage 'lint' failed (exit code 3)" in outcome.logs

    run(scenario())


def test_a_stage_image_that_cannot_be_pulled_is_named(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    image = "registry.example/gcc:no-such-tag"
    fake_kube.set_pull_failure(image, PullFailure(PULL_ERRORS["not found"]))
    fake_kube.set(image_pull_backoff=0.2)
    job_dir = stage_command_job(kube_pvc_dir, 26, grader_yaml({**BUILD_STAGE, "image": image}, TEST_STAGE))

    async def scenario() -> None:
        async with started(make_executor(start_timeout=60, image_pull_timeout=60)) as executor:
            begin = time.monotonic()
            outcome = await executor.run(command_task(executor, job_dir, 26))
            assert time.monotonic() - begin < 10
            assert not outcome.graded and not outcome.retryable
            assert outcome.reason is not None
            assert outcome.reason.startswith(f"The grading image {image!r} cannot be pulled (ErrImagePull")
            assert fake_kube.list_pods() == []

    run(scenario())


def test_a_later_stage_image_that_cannot_be_pulled_fails_at_once(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path
) -> None:
    image = "registry.example/python:typo"
    fake_kube.set_pull_failure(image, PullFailure(PULL_ERRORS["manifest unknown"]))
    fake_kube.set(image_pull_backoff=0.2)
    job_dir = stage_command_job(kube_pvc_dir, 28, grader_yaml(BUILD_STAGE, {**TEST_STAGE, "image": image}))

    async def scenario() -> None:
        # A deadline of 100 + 30 + 30 s: the failure must come from the pull, not from the deadline.
        executor = make_executor(start_timeout=60, image_pull_timeout=60, deadline_grace=30)
        async with started(executor):
            begin = time.monotonic()
            outcome = await executor.run(command_task(executor, job_dir, 28, timeout=100))
            assert time.monotonic() - begin < 10
            assert not outcome.graded and not outcome.retryable
            assert outcome.reason is not None
            assert outcome.reason.startswith(f"The grading image {image!r} cannot be pulled (ErrImagePull")
            assert fake_kube.list_pods() == []

    run(scenario())
    assert (job_dir / "submission" / "built_add.py").exists()  # the build stage had run


def test_a_stage_over_its_own_memory_limit_is_named(make_executor: MakeExecutor, kube_pvc_dir: Path) -> None:
    hungry = {**BUILD_STAGE, "command": ["python", "-c", "x = b'x' * (400 * 2**20); import time; time.sleep(30)"],
              "memory": "200Mi"}  # fmt: skip
    job_dir = stage_command_job(kube_pvc_dir, 27, grader_yaml(hungry, TEST_STAGE))

    async def scenario() -> None:
        async with started(make_executor()) as executor:
            outcome = await executor.run(command_task(executor, job_dir, 27, memory="1Gi"))
            assert not outcome.graded and not outcome.retryable
            assert outcome.reason == "Stage 'build' ran out of memory (OOMKilled, limit 200Mi)"

    run(scenario())


def test_a_command_pod_is_adopted_after_a_restart_and_its_timeouts_still_count(
    fake_kube: FakeKubeAPIServer, make_executor: MakeExecutor, kube_pvc_dir: Path, kube_api: client.CoreV1Api
) -> None:
    """A previous service process created the pods and died; a new executor follows them, timing the
    stages from their containers' startedAt (a stage overdue meanwhile fails at once)."""
    before = make_executor(extra_pod_config={"terminationGracePeriodSeconds": 1})
    slow_build = {**BUILD_STAGE, "command": ["sh", "-c", "sleep 1; " + BUILD]}
    stuck = {**TEST_STAGE, "command": ["sleep", "60"], "timeout": 1}
    jobs = {
        31: stage_command_job(kube_pvc_dir, 31, grader_yaml(slow_build, TEST_STAGE)),
        32: stage_command_job(kube_pvc_dir, 32, grader_yaml(BUILD_STAGE, stuck)),
    }
    tasks = {job_id: command_task(before, job_dir, job_id) for job_id, job_dir in jobs.items()}
    for task in tasks.values():
        before.prepare_stages(task, 2)
        kube_api.create_namespaced_pod(NS, before.make_pod(task, attempt="before-restart"))

    def stage_running(index: int) -> Callable[[dict[str, Any] | None], bool]:
        def check(pod: dict[str, Any] | None) -> bool:
            status = pod.get("status", {}) if pod else {}
            states = status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
            return any(s["name"] == f"stage-{index}" and "running" in s["state"] for s in states)

        return check

    async def scenario() -> None:
        await asyncio.to_thread(
            fake_kube.wait_for_pod, NS, before.runner_name(tasks[31]), stage_running(0), 30
        )
        await asyncio.to_thread(
            fake_kube.wait_for_pod, NS, before.runner_name(tasks[32]), stage_running(1), 30
        )
        await asyncio.sleep(1.2)  # the stuck stage is overdue by now
        async with started(make_executor()) as after:
            graded, timed_out = await asyncio.gather(
                *(after.reconcile(task, before.runner_name(task)) for task in tasks.values())
            )
            assert graded is not None and graded.graded and graded.gradebook is not None
            assert graded.gradebook["score"] == 3.0
            assert timed_out is not None and not timed_out.graded
            assert timed_out.reason == "Stage 'test' timed out after 1 s; all its processes were killed"
            assert fake_kube.list_pods() == []

    run(scenario())
    assert len([r for r in fake_kube.requests if r.method == "POST"]) == 2  # nothing created twice


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)
