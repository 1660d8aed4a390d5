"""The real service with ``executor_class = "kube"`` against the fake cluster, over HTTP.

The service's data directory is the fake's PVC (as in the chart, where the PVC is mounted at the
data directory), so grading pods see the job directories the scheduler stages. One service per
module; the fake apiserver is the session's.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from grader_service.orm import GradingJob, Submission

from ..conftest import DATA, World, zip_dir
from ..grading_utils import submission, submit_files, wait_graded
from ..service import ServiceProcess
from ..test_command_assignments import GRADER_YAML, A, source, upload
from .conftest import KUBE_NAMESPACE, KUBE_PVC_CLAIM
from .fake_apiserver import FakeKubeAPIServer
from .fake_kubelet import PULL_ERRORS, PullFailure
from .jobs import make_task

CONFIG = """
c.GraderService.executor_class = "kube"
c.Scheduler.concurrency = 2
c.Scheduler.lease_seconds = 4
c.KubeAutogradeExecutor.kubeconfig = {kubeconfig!r}
c.KubeAutogradeExecutor.namespace = {namespace!r}
c.KubeAutogradeExecutor.pvc_name = {claim!r}
c.KubeAutogradeExecutor.data_mount_path = {data_dir!r}
c.KubeAutogradeExecutor.image = "ghcr.io/grader-service/grading:test"
c.KubeAutogradeExecutor.start_timeout = 60
c.KubeAutogradeExecutor.image_pull_timeout = 30
c.KubeAutogradeExecutor.orphan_min_age = 0
"""


@pytest.fixture(scope="module")
def kube_service(
    fake_kube_session: FakeKubeAPIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("kube-service")
    data_dir = root / "data"
    data_dir.mkdir()
    kubeconfig = fake_kube_session.write_kubeconfig(root / "kubeconfig", namespace=KUBE_NAMESPACE)
    fake_kube_session.set_pvc_dir(KUBE_PVC_CLAIM, data_dir)
    config = CONFIG.format(
        kubeconfig=str(kubeconfig),
        namespace=KUBE_NAMESPACE,
        claim=KUBE_PVC_CLAIM,
        data_dir=str(data_dir.resolve()),
    )
    service = ServiceProcess(data_dir, f"sqlite:///{root / 'grader.sqlite'}", config=config)
    service.start("--upgrade-db")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def kube_world(kube_service: ServiceProcess) -> World:
    return World(kube_service)


@pytest.fixture
def cluster(fake_kube: FakeKubeAPIServer, kube_service: ServiceProcess) -> FakeKubeAPIServer:
    """The fake, its PVC backed by the service's data directory again (each test's reset drops it)."""
    fake_kube.set_pvc_dir(KUBE_PVC_CLAIM, kube_service.data_dir)
    return fake_kube


def slow_notebook(tmp_path: Path, seconds: float) -> Path:
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = f"import time\ntime.sleep({seconds})\ndef double(x):\n    return x + x"
    path = tmp_path / "slow.ipynb"
    path.write_text(json.dumps(nb))
    return path


def test_a_submission_is_graded_in_a_pod(cluster: FakeKubeAPIServer, kube_world: World) -> None:
    sub = kube_world.submit("student").json()
    events = wait_graded(kube_world.client("tutor"), sub["id"], timeout=120)
    assert events[-1]["auto_status"] == "graded" and events[-1]["score"] == 3.0, events
    got = submission(kube_world.client("tutor"), "ml", "tiny", sub["id"])
    assert got["auto_status"] == "graded" and got["score"] == 3.0
    # the graded notebook came back through the PVC: feedback renders from it
    feedback = kube_world.client("tutor").get(
        f"lectures/ml/assignments/tiny/submissions/{sub['id']}/feedback"
    )
    assert feedback.status_code == 200, feedback.text
    with kube_world.service.engine.connect() as conn:
        runner, executor = conn.execute(
            select(GradingJob.runner_name, GradingJob.executor).where(GradingJob.submission_id == sub["id"])
        ).one()
    assert executor == "kube" and runner.startswith(f"autograde-{sub['commit_hash'][:12]}-")
    per_job = [
        r for r in cluster.requests if not (r.method == "GET" and r.path.rstrip("/").endswith("/pods"))
    ]
    assert [r.method for r in per_job] == ["POST", "GET", "DELETE"]
    assert all(runner in r.path for r in per_job[1:])
    assert cluster.list_pods() == []
    health = kube_world.client(None).get("health").json()
    assert health["executor"] == "kube"


def test_service_killed_mid_grading_adopts_the_pod_after_restart(
    cluster: FakeKubeAPIServer, kube_world: World, tmp_path: Path
) -> None:
    service = kube_world.service
    sub = kube_world.submit("other_student", notebook=slow_notebook(tmp_path, 3.0)).json()
    deadline = time.monotonic() + 60
    while not [p for p in cluster.list_pods() if p["status"].get("phase") == "Running"]:
        assert time.monotonic() < deadline, "no grading pod started"
        time.sleep(0.05)
    service.stop(signal.SIGKILL)
    with service.engine.connect() as conn:
        state = conn.execute(
            select(GradingJob.state).where(GradingJob.submission_id == sub["id"])
        ).scalar_one()
    assert state == "running"  # the crash really interrupted grading

    service.start()
    events = wait_graded(kube_world.client("tutor"), sub["id"], timeout=120)
    assert events[-1]["auto_status"] == "graded" and events[-1]["score"] == 3.0, events
    with service.engine.connect() as conn:
        jobs = conn.execute(
            select(GradingJob.state, GradingJob.attempts).where(GradingJob.submission_id == sub["id"])
        ).all()
        status = conn.execute(select(Submission.auto_status).where(Submission.id == sub["id"])).scalar_one()
    assert [tuple(j) for j in jobs] == [("succeeded", 1)], jobs  # graded exactly once, by adoption
    assert status == "graded"
    assert len([r for r in cluster.requests if r.method == "POST"]) == 1  # one pod, ever
    assert cluster.list_pods() == []


def test_orphaned_pods_are_deleted_when_the_service_starts(
    cluster: FakeKubeAPIServer, kube_world: World, kube_api: Any
) -> None:
    from grader_service.autograding.kube.executor import KubeAutogradeExecutor

    service = kube_world.service
    builder = KubeAutogradeExecutor(
        namespace=KUBE_NAMESPACE,
        pvc_name=KUBE_PVC_CLAIM,
        data_mount_path=str(service.data_dir.resolve()),
        extra_pod_config={"terminationGracePeriodSeconds": 1},
    )
    builder.grading_command = lambda task: ["python", "-c", "import time; time.sleep(60)"]  # type: ignore[method-assign]
    orphan = builder.make_pod(make_task(builder, service.data_dir.resolve() / "jobs" / "9999", 9999))
    kube_api.create_namespaced_pod(KUBE_NAMESPACE, orphan)
    service.stop()
    service.start()
    cluster.wait_for_pod(KUBE_NAMESPACE, orphan.metadata.name, lambda pod: pod is None, timeout=30)


def assignment_with_image(world: World, name: str, image: str) -> str:
    ins = world.client("instructor")
    base = f"lectures/ml/assignments/{name}"
    assert (
        ins.post("lectures/ml/assignments", json={"name": name, "settings": {"image": image}}).status_code
        == 201
    )
    r = ins.put(f"{base}/files", data=zip_dir(DATA / "tiny"), headers={"Content-Type": "application/zip"})
    assert r.status_code == 200, r.text
    assert ins.patch(base, json={"status": "released"}).status_code == 200
    return base


def test_an_image_pull_in_trouble_is_shown_to_staff_and_graded_once_it_recovers(
    cluster: FakeKubeAPIServer, kube_world: World
) -> None:
    image = "registry.example/grading:flaky"
    cluster.set_pull_failure(image, PullFailure(PULL_ERRORS["timeout"]))
    base = assignment_with_image(kube_world, "flaky", image)
    sub = kube_world.submit("student", assignment="flaky").json()
    tutor, student = kube_world.client("tutor"), kube_world.client("student")
    deadline = time.monotonic() + 30
    while True:
        seen = tutor.get(f"{base}/submissions/{sub['id']}").json()
        if seen["auto_status"] == "running" and seen["status_detail"]:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    assert seen["status_detail"].startswith(f"Waiting for the grading image {image!r} (")
    assert "i/o timeout" in seen["status_detail"], seen
    own = student.get(f"{base}/submissions/{sub['id']}").json()
    assert own["auto_status"] == "running" and "status_detail" not in own  # staff only
    cluster.set_pull_failure(image, None)  # the registry is back: the kubelet's next pull works
    events = wait_graded(tutor, sub["id"], timeout=120)
    assert events[-1]["auto_status"] == "graded" and events[-1]["score"] == 3.0, events
    done = tutor.get(f"{base}/submissions/{sub['id']}").json()
    assert done["status_detail"] is None
    with kube_world.service.engine.connect() as conn:
        attempts = conn.execute(
            select(GradingJob.attempts).where(GradingJob.submission_id == sub["id"])
        ).all()
    assert [a for (a,) in attempts] == [1]


def test_a_missing_image_fails_the_grading_at_once_without_retries(
    cluster: FakeKubeAPIServer, kube_world: World
) -> None:
    image = "registry.example/grading:missing"
    cluster.set_pull_failure(image, PullFailure(PULL_ERRORS["not found"]))
    base = assignment_with_image(kube_world, "missing", image)
    begin = time.monotonic()
    sub = kube_world.submit("student", assignment="missing").json()
    events = wait_graded(kube_world.client("tutor"), sub["id"], timeout=60)
    assert time.monotonic() - begin < 20  # not 3 attempts x 60 s start_timeout
    assert events[-1]["auto_status"] == "failed"
    assert f"The grading image {image!r} cannot be pulled (ErrImagePull: " in events[-1]["reason"]
    seen = kube_world.client("instructor").get(f"{base}/submissions/{sub['id']}").json()
    assert seen["auto_status"] == "failed" and "Not retried" in seen["status_detail"]
    assert "not found" in seen["status_detail"]
    with kube_world.service.engine.connect() as conn:
        jobs = conn.execute(
            select(GradingJob.state, GradingJob.attempts).where(GradingJob.submission_id == sub["id"])
        ).all()
    assert [tuple(j) for j in jobs] == [("failed", 1)]
    assert cluster.list_pods() == []


def test_a_command_assignment_is_graded_in_a_pod_with_its_stages(
    cluster: FakeKubeAPIServer, kube_world: World, tmp_path: Path
) -> None:
    """Through the service: the scheduler stages the job, the stages run as the pod's containers
    (a build stage, then the harness), and students see what the tests' visibility allows."""
    two_stages = GRADER_YAML.replace(
        "stages:\n",
        "stages:\n  - name: build\n    command: [sh, -c, 'python3 -m py_compile solution.py && echo compiled']\n",
    )
    ins = kube_world.client("instructor")
    r = ins.post(A, json={"name": "kube-squares", "kind": "command", "due_date": "2099-01-01T00:00:00Z"})
    assert r.status_code == 201, r.text
    assert upload(kube_world, "kube-squares", source(tmp_path, two_stages)).status_code == 200
    assert ins.patch(f"{A}/kube-squares", json={"status": "released"}).status_code == 200
    files = {"solution.py": b"def square(x): return x * x if x != 3 else 0\n"}
    r = submit_files(kube_world.client("student"), "ml", "kube-squares", files)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    events = wait_graded(kube_world.client("tutor"), sid, timeout=120)
    assert events[-1]["auto_status"] == "graded", events
    got = submission(kube_world.client("tutor"), "ml", "kube-squares", sid)
    assert (got["score"], got["max_score"]) == (3.0, 4.0)
    base = f"{A}/kube-squares/submissions/{sid}"
    staff = kube_world.client("tutor").get(f"{base}/gradebook").json()
    assert [s["name"] for s in staff["stages"]] == ["build", "test"]
    logs = kube_world.client("tutor").get(f"{base}/logs")
    assert logs.status_code == 200 and "compiled" in logs.text, logs.text
    assert ins.post(f"{A}/kube-squares/feedback-release").status_code == 200
    book = kube_world.client("student").get(f"{base}/gradebook").json()
    assert "SECRET" not in json.dumps(book) and "stages" not in book
    per_job = [
        r for r in cluster.requests if not (r.method == "GET" and r.path.rstrip("/").endswith("/pods"))
    ]
    assert [r.method for r in per_job] == ["POST", "GET", "GET", "DELETE"]  # a log per stage
    assert cluster.list_pods() == []
