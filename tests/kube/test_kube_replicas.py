"""Two replicas grading in pods on one PostgreSQL, against the fake cluster.

Replica B starts while replica A's pods run: B's start-up cleanup removes the orphaned pod (once)
and none of A's. Then both grade submissions taken by either: one pod per job, each pod deleted
once (by the replica that holds its job), every submission graded exactly once.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from grader_service.orm import GradingJob

from ..conftest import World
from ..postgres import create_database
from ..service import ServiceProcess
from ..test_replicas import Stream, all_final, enrol, graded_once, notebook, post
from .conftest import KUBE_NAMESPACE, KUBE_PVC_CLAIM
from .fake_apiserver import FakeKubeAPIServer
from .jobs import make_task
from .test_kube_service import CONFIG


def orphan_pod(data_dir: Path) -> Any:
    """A grading pod of a job no replica runs (its job id does not exist)."""
    from grader_service.autograding.kube.executor import KubeAutogradeExecutor

    builder = KubeAutogradeExecutor(
        namespace=KUBE_NAMESPACE,
        pvc_name=KUBE_PVC_CLAIM,
        data_mount_path=str(data_dir.resolve()),
        extra_pod_config={"terminationGracePeriodSeconds": 1},
    )
    builder.grading_command = lambda task: ["python", "-c", "import time; time.sleep(60)"]  # type: ignore[method-assign]
    return builder.make_pod(make_task(builder, data_dir.resolve() / "jobs" / "9999", 9999))


def deleted_pods(cluster: FakeKubeAPIServer) -> Counter[str]:
    """How often each pod was deleted (successful DELETE requests), by name."""
    return Counter(
        r.path.rstrip("/").rsplit("/", 1)[-1]
        for r in cluster.requests
        if r.method == "DELETE" and "/pods/" in r.path and 200 <= r.code < 300
    )


def created_pods(cluster: FakeKubeAPIServer) -> int:
    return sum(
        1 for r in cluster.requests if r.method == "POST" and r.path.endswith("/pods") and r.code == 201
    )


def test_two_replicas_share_the_cluster_without_touching_each_others_pods(
    fake_kube: FakeKubeAPIServer, kube_api: Any, postgres_admin_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    fake_kube.set_pvc_dir(KUBE_PVC_CLAIM, data_dir)
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=KUBE_NAMESPACE)
    config = CONFIG.format(
        kubeconfig=str(kubeconfig),
        namespace=KUBE_NAMESPACE,
        claim=KUBE_PVC_CLAIM,
        data_dir=str(data_dir.resolve()),
    )
    url = create_database(postgres_admin_url, f"kube_replicas_{os.getpid()}")
    a, b = (ServiceProcess(data_dir, url, config=config, name=f"kube{i}") for i in range(2))
    try:
        a.start("--upgrade-db")
        world = World(a)
        tokens = [enrol(world, f"pod{i}") for i in range(4)]
        tutor = world.tokens["tutor"]
        ids = [
            post(a.client(t), notebook(f"a{i}", sleep=10.0)).json()["id"] for i, t in enumerate(tokens[:2])
        ]
        deadline = time.monotonic() + 60
        while len([p for p in fake_kube.list_pods() if p["status"].get("phase") == "Running"]) < 2:
            assert time.monotonic() < deadline, "replica A's pods did not start"
            time.sleep(0.05)
        a_pods = {p["metadata"]["name"] for p in fake_kube.list_pods()}
        orphan = orphan_pod(data_dir)
        kube_api.create_namespaced_pod(KUBE_NAMESPACE, orphan)

        b.start()  # its start-up cleanup runs now, while A's pods run
        fake_kube.wait_for_pod(KUBE_NAMESPACE, orphan.metadata.name, lambda pod: pod is None, timeout=30)
        assert a_pods <= {p["metadata"]["name"] for p in fake_kube.list_pods()}  # A's pods untouched
        streams = [Stream(s.client(tutor), {"lecture": "ml", "assignment": "tiny"}) for s in (a, b)]
        ids += [
            post(s.client(t), notebook(f"b{i}", sleep=1.0)).json()["id"]
            for i, (s, t) in enumerate(zip((a, b), tokens[2:], strict=True))
        ]
        for stream in streams:
            stream.wait(all_final(ids))
        graded_once(a.engine, ids)
        with a.engine.connect() as conn:
            jobs = conn.execute(
                select(GradingJob.runner_name, GradingJob.worker, GradingJob.attempts).where(
                    GradingJob.submission_id.in_(ids)
                )
            ).all()
        assert [attempts for _, _, attempts in jobs] == [1] * len(ids)  # no pod was lost under a job
        graders = {worker.split(":")[1] for _, worker, _ in jobs}
        assert graders == {str(a.proc.pid), str(b.proc.pid)}  # both replicas graded
        assert created_pods(fake_kube) == len(ids) + 1  # one pod per job (and the orphan)
        deleted = deleted_pods(fake_kube)
        runners = sorted(runner for runner, _, _ in jobs)
        # Each job's pod deleted exactly once (by the replica holding the job), the orphan once.
        assert {name: deleted[name] for name in runners} == {name: 1 for name in runners}, deleted
        assert deleted[orphan.metadata.name] == 1
        assert fake_kube.list_pods() == []
    finally:
        for service in (b, a):
            service.stop()
            service.engine.dispose()
