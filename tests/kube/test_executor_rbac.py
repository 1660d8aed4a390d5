"""The executor as the Helm chart sets it up: its config file, its RBAC, and RBAC minus one rule.

The Role, RoleBinding and ServiceAccount come from the real chart (``helm template`` through
``tests/helm/chart.py``, rendered into the fake's namespace) and are loaded into the fake's RBAC;
the executor then talks to the fake with the ServiceAccount's token. With the full Role a job is
graded; without one rule the failure names the verb and resource that is missing.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client
from traitlets.config import Config

from grader_service.autograding.kube.client import PermissionDenied
from grader_service.autograding.kube.executor import KubeAutogradeExecutor

from ..helm import chart
from .conftest import KUBE_NAMESPACE, KUBE_PVC_CLAIM
from .fake_apiserver import FakeKubeAPIServer
from .jobs import make_task, stage_job

NS = KUBE_NAMESPACE
RBAC_TEMPLATES = ["templates/role.yaml", "templates/rolebinding.yaml", "templates/serviceaccount.yaml"]


@pytest.fixture(scope="session")
def chart_rbac() -> list[dict[str, Any]]:
    """The chart's Role, RoleBinding and ServiceAccount for the kube executor, in the fake's namespace."""
    try:
        return chart.render({"config": {"executor": "kube"}}, namespace=NS, show_only=RBAC_TEMPLATES)
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"could not render the chart's RBAC with helm: {exc}", pytrace=False)


def without(docs: list[dict[str, Any]], resource: str, verb: str) -> list[dict[str, Any]]:
    docs = copy.deepcopy(docs)
    role = chart.one(docs, "Role")
    for rule in role["rules"]:
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    role["rules"] = [r for r in role["rules"] if r["verbs"]]
    return docs


def executor_as_service_account(
    fake: FakeKubeAPIServer, docs: list[dict[str, Any]], tmp_path: Path, pvc_dir: Path
) -> KubeAutogradeExecutor:
    fake.load_rbac(yaml.safe_dump_all(docs))
    account = chart.one(docs, "ServiceAccount")["metadata"]["name"]
    token = fake.add_service_account_token(NS, account)
    kubeconfig = fake.write_kubeconfig(tmp_path / "sa-kubeconfig", token=token, namespace=NS)
    return KubeAutogradeExecutor(
        kubeconfig=str(kubeconfig),
        namespace=NS,
        pvc_name=KUBE_PVC_CLAIM,
        data_mount_path=str(pvc_dir),
        image="ghcr.io/grader-service/grading:test",
        api_retry_seconds=5,
        log=logging.getLogger("test.kube.rbac"),
    )


@pytest.mark.parametrize(
    "grading",
    [
        {},
        {
            "resources": {
                "requests": {"cpu": "500m", "memory": "300Mi"},
                "limits": {"cpu": 2, "memory": "2Gi"},
            },
            "nodeSelector": {"kubernetes.io/arch": "arm64"},
            "tolerations": [{"key": "arm", "operator": "Exists", "effect": "NoSchedule"}],
            "imagePullSecrets": ["regcred"],
            "serviceAccountName": "grading",
            "extraPodConfig": {"runtimeClassName": "gvisor"},
        },
    ],
)
def test_the_charts_config_file_configures_a_valid_pod(grading: dict[str, Any]) -> None:
    docs = chart.render({"grading": grading}, show_only=["templates/configmap.yaml"])
    source = chart.one(docs, "ConfigMap")["data"]["grader_service_config.py"]
    config = Config()
    exec(source, {"get_config": lambda: config})  # as the service loads it
    executor = KubeAutogradeExecutor(config=config)
    assert executor.namespace == chart.NAMESPACE and executor.job_mount_path == "/job"
    task = make_task(executor, Path(executor.data_mount_path) / "jobs" / "5", 5)
    pod = client.ApiClient().sanitize_for_serialization(executor.make_pod(task))
    kubernetes_validate.validate(pod, "1.31", strict=True)
    container = pod["spec"]["containers"][0]
    assert container["image"] == executor.image and container["imagePullPolicy"] == "IfNotPresent"
    assert {"name": "job", "mountPath": "/job", "subPath": "jobs/5"} in container["volumeMounts"]
    if grading:
        assert container["resources"] == {
            "requests": {"cpu": "500m", "memory": "300Mi", "ephemeral-storage": "1Gi"},
            "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "1Gi"},
        }
        assert pod["spec"]["runtimeClassName"] == "gvisor" and pod["spec"]["serviceAccountName"] == "grading"
        assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    else:
        assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"}
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["spec"]["volumes"]
        assert "serviceAccountName" not in pod["spec"]


def test_the_charts_role_is_enough(
    fake_kube: FakeKubeAPIServer, chart_rbac: list[dict[str, Any]], tmp_path: Path, kube_pvc_dir: Path
) -> None:
    executor = executor_as_service_account(fake_kube, chart_rbac, tmp_path, kube_pvc_dir)

    async def scenario() -> None:
        await executor.start()
        try:
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 61), 61))
            assert outcome.graded, outcome
            assert '"status":"graded"' in outcome.logs
            assert await executor.cleanup_orphans(set()) == []
        finally:
            await executor.stop()

    asyncio.run(scenario())
    users = {r.user for r in fake_kube.requests}
    assert users == {
        f"system:serviceaccount:{NS}:{chart.one(chart_rbac, 'ServiceAccount')['metadata']['name']}"
    }
    assert all(r.code < 400 for r in fake_kube.requests)


@pytest.mark.parametrize(("resource", "verb"), [("pods", "list"), ("pods", "watch")])
def test_without_list_or_watch_the_executor_does_not_start(
    fake_kube: FakeKubeAPIServer,
    chart_rbac: list[dict[str, Any]],
    tmp_path: Path,
    kube_pvc_dir: Path,
    resource: str,
    verb: str,
) -> None:
    executor = executor_as_service_account(
        fake_kube, without(chart_rbac, resource, verb), tmp_path, kube_pvc_dir
    )
    with pytest.raises(PermissionDenied) as info:
        asyncio.run(executor.start())
    message = info.value.message
    assert message.startswith(f'the service account lacks permission to {verb} pods in namespace "{NS}"')
    assert f'verb "{verb}" on resource "pods"' in message


def test_without_create_the_job_fails_naming_it(
    fake_kube: FakeKubeAPIServer, chart_rbac: list[dict[str, Any]], tmp_path: Path, kube_pvc_dir: Path
) -> None:
    executor = executor_as_service_account(
        fake_kube, without(chart_rbac, "pods", "create"), tmp_path, kube_pvc_dir
    )

    async def scenario() -> None:
        await executor.start()
        try:
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 62), 62))
        finally:
            await executor.stop()
        assert not outcome.graded and outcome.reason is not None
        assert outcome.reason.startswith(
            f"The grading pod could not be created: the service account lacks permission to create pods in "
            f'namespace "{NS}" (RBAC: verb "create" on resource "pods" in API group "" is missing'
        ), outcome.reason

    asyncio.run(scenario())


def test_without_pods_log_the_job_is_graded_and_the_log_says_why_it_is_missing(
    fake_kube: FakeKubeAPIServer, chart_rbac: list[dict[str, Any]], tmp_path: Path, kube_pvc_dir: Path
) -> None:
    executor = executor_as_service_account(
        fake_kube, without(chart_rbac, "pods/log", "get"), tmp_path, kube_pvc_dir
    )

    async def scenario() -> None:
        await executor.start()
        try:
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 63), 63))
        finally:
            await executor.stop()
        assert outcome.graded  # the gradebook is on the PVC; only the log is missing
        assert outcome.logs.startswith("[the grading pod's log could not be read: the service account lacks ")
        assert 'verb "get" on resource "pods/log"' in outcome.logs

    asyncio.run(scenario())


def test_without_delete_the_job_is_graded_and_the_error_is_logged(
    fake_kube: FakeKubeAPIServer,
    chart_rbac: list[dict[str, Any]],
    tmp_path: Path,
    kube_pvc_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    executor = executor_as_service_account(
        fake_kube, without(chart_rbac, "pods", "delete"), tmp_path, kube_pvc_dir
    )

    async def scenario() -> None:
        await executor.start()
        try:
            outcome = await executor.run(make_task(executor, stage_job(kube_pvc_dir, 64), 64))
        finally:
            await executor.stop()
        assert outcome.graded

    with caplog.at_level(logging.ERROR, logger="test.kube.rbac"):
        asyncio.run(scenario())
    errors = [r.getMessage() for r in caplog.records if r.name == "test.kube.rbac"]
    assert any(
        f'lacks permission to delete pods in namespace "{NS}" (RBAC: verb "delete" on resource "pods"' in e
        for e in errors
    ), errors
    assert len(fake_kube.list_pods()) == 1  # left behind, as the message warns


def test_in_cluster_the_service_account_and_its_namespace_are_used(
    fake_kube: FakeKubeAPIServer,
    chart_rbac: list[dict[str, Any]],
    tmp_path: Path,
    kube_pvc_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As in the service's pod: KUBERNETES_SERVICE_HOST set, the token and CA mounted, no kubeconfig."""
    from kubernetes.config import incluster_config

    from grader_service.autograding.kube import client as kube_client

    fake_kube.load_rbac(yaml.safe_dump_all(chart_rbac))
    account = chart.one(chart_rbac, "ServiceAccount")["metadata"]["name"]
    mounted = tmp_path / "serviceaccount"
    mounted.mkdir()
    (mounted / "token").write_text(fake_kube.add_service_account_token(NS, account))
    (mounted / "ca.crt").write_text(fake_kube.ca_pem())
    (mounted / "namespace").write_text(NS)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(mounted / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(mounted / "ca.crt"))
    monkeypatch.setattr(kube_client, "SERVICE_ACCOUNT_NAMESPACE", mounted / "namespace")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(fake_kube.port))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    executor = KubeAutogradeExecutor(pvc_name=KUBE_PVC_CLAIM, data_mount_path=str(kube_pvc_dir))
    assert executor.namespace == NS and executor.kubeconfig == ""

    async def scenario() -> None:
        await executor.start()
        await executor.stop()

    asyncio.run(scenario())
    assert {r.user for r in fake_kube.requests} == {f"system:serviceaccount:{NS}:{account}"}


def test_the_charts_disk_limit_is_the_pods_ephemeral_storage() -> None:
    grading = {"resources": {"limits": {"ephemeral-storage": "3Gi"}}}
    docs = chart.render({"grading": grading}, show_only=["templates/configmap.yaml"])
    source = chart.one(docs, "ConfigMap")["data"]["grader_service_config.py"]
    config = Config()
    exec(source, {"get_config": lambda: config})
    executor = KubeAutogradeExecutor(config=config)
    assert executor.disk_limit == "3Gi"
    task = make_task(executor, Path(executor.data_mount_path) / "jobs" / "6", 6)
    pod = client.ApiClient().sanitize_for_serialization(executor.make_pod(task))
    kubernetes_validate.validate(pod, "1.31", strict=True)
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"]["ephemeral-storage"] == resources["requests"]["ephemeral-storage"] == "3Gi"
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "3Gi"}} in pod["spec"]["volumes"]
