"""The pure builders of ``grader_service.autograding.kube.objects``.

Every generated manifest is checked against the Kubernetes JSON schemas of several releases with
``kubernetes-validate --strict`` (unknown fields are errors there), and the generated pod is run
once through the fake apiserver to show that what the builder promises (subPath job directory,
non-root, read-only root with writable /tmp, deadline) is what a pod gets.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from grader_service.autograding.kube.objects import (
    component_selector,
    label_value,
    make_grading_pod,
    make_labels,
    merge_config,
    pod_name_for_job,
    unknown_fields,
)

from .conftest import KUBE_NAMESPACE, KUBE_PVC_CLAIM
from .fake_apiserver import FakeKubeAPIServer
from .fake_kubelet import Node

K8S_VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33"]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SERIALIZER = client.ApiClient()


def serialize(pod: client.V1Pod) -> dict[str, Any]:
    return SERIALIZER.sanitize_for_serialization(pod)


def base_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": pod_name_for_job("0123456789abcdef0123", 42),
        "namespace": KUBE_NAMESPACE,
        "image": "ghcr.io/example/grader-image:2024.1",
        "command": ["python", "-m", "grader_service.convert", "autograde", "--job", "/job"],
        "labels": make_labels("intro-2024", "homework-1", 7, 42),
        "annotations": {"grader-service/commit": "0123456789abcdef0123"},
        "env": {"GRADER_JOB_ID": "42"},
        "job_subpath": "jobs/42",
        "pvc_name": KUBE_PVC_CLAIM,
        "mount_path": "/job",
    }
    args.update(overrides)
    return args


CONFIGS: dict[str, dict[str, Any]] = {
    "minimal": {},
    "limits-and-deadline": {
        "cpu_request": "500m",
        "cpu_limit": "2",
        "memory_request": "512Mi",
        "memory_limit": "2Gi",
        "active_deadline_seconds": 1800,
    },
    "disk-limit": {"disk_limit": "1Gi", "memory_limit": "2Gi", "cpu_request": "250m"},
    "arm-node-with-tolerations": {
        "node_selector": {"kubernetes.io/arch": "arm64"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "grading", "effect": "NoSchedule"},
            {"key": "kubernetes.io/arch", "operator": "Exists", "effect": "NoSchedule"},
        ],
    },
    "affinity": {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "node-role/grading", "operator": "Exists"}]}
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "preference": {
                            "matchExpressions": [
                                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}
                            ]
                        },
                    }
                ],
            }
        },
    },
    "private-registry-and-service-account": {
        "image_pull_policy": "Always",
        "image_pull_secrets": ["registry-credentials"],
        "service_account_name": "grading-runner",
    },
    "extra-volumes": {
        "extra_volumes": [
            {"name": "datasets", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
        ],
        "extra_volume_mounts": [
            {"name": "datasets", "mountPath": "/data", "readOnly": True},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    },
    "extra-pod-config": {
        "run_as_user": 2000,
        "run_as_group": 3000,
        "fs_group": 3000,
        "extra_pod_config": {
            "priorityClassName": "grading-low",
            "securityContext": {"fsGroupChangePolicy": "OnRootMismatch"},
            "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["10.0.0.10"], "options": [{"name": "ndots", "value": "1"}]},
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["pypi.internal"]}],
        },
    },
}


def test_validator_ships_the_versions_and_is_strict() -> None:
    shipped = set(kubernetes_validate.utils.all_versions())
    assert {f"{v}.0" for v in K8S_VERSIONS} <= shipped
    # negative control: the strict schemas do reject an unknown field
    bad = serialize(make_grading_pod(**base_args()))
    bad["spec"]["containers"][0]["bogus"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.33", strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_every_manifest_validates_strictly(config_name: str, version: str) -> None:
    manifest = serialize(make_grading_pod(**base_args(**CONFIGS[config_name])))
    kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_security_fields_hold_in_every_configuration(config_name: str) -> None:
    args = base_args(**CONFIGS[config_name])
    manifest = serialize(make_grading_pod(**args))
    spec = manifest["spec"]
    container = spec["containers"][0]
    uid, gid = args.get("run_as_user", 1000), args.get("run_as_group", 1000)

    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (uid, gid)
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid)
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}

    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["job"] == {"name": "job", "persistentVolumeClaim": {"claimName": KUBE_PVC_CLAIM}}
    disk = {"sizeLimit": args["disk_limit"]} if "disk_limit" in args else {}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": disk}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["job"] == {"name": "job", "mountPath": "/job", "subPath": "jobs/42"}
    assert mounts["tmp"] == {"name": "tmp", "mountPath": "/tmp"}
    assert container["workingDir"] == "/job"
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    assert {"name": "GRADER_JOB_ID", "value": "42"} in container["env"]
    assert manifest["metadata"]["labels"] == make_labels("intro-2024", "homework-1", 7, 42)


def test_optional_fields_appear_only_when_given() -> None:
    spec = serialize(make_grading_pod(**base_args()))["spec"]
    for absent in (
        "activeDeadlineSeconds",
        "nodeSelector",
        "tolerations",
        "affinity",
        "imagePullSecrets",
        "serviceAccountName",
    ):
        assert absent not in spec
    assert "imagePullPolicy" not in spec["containers"][0]
    assert spec["containers"][0]["resources"] == {}

    full = serialize(
        make_grading_pod(
            **base_args(**CONFIGS["limits-and-deadline"], **CONFIGS["private-registry-and-service-account"])
        )
    )["spec"]
    assert full["activeDeadlineSeconds"] == 1800
    assert full["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    assert full["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert full["serviceAccountName"] == "grading-runner"
    assert full["containers"][0]["imagePullPolicy"] == "Always"
    assert full["terminationGracePeriodSeconds"] == 5


def test_disk_limit_is_the_ephemeral_storage_limit_and_the_tmp_size_limit() -> None:
    """What the pod writes (its /tmp emptyDir, where the kernels work, its container layer and logs)
    is capped: the kubelet evicts a pod past either limit."""
    spec = serialize(make_grading_pod(**base_args(**CONFIGS["disk-limit"])))["spec"]
    (container,) = spec["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "ephemeral-storage": "1Gi"},
        "limits": {"memory": "2Gi", "ephemeral-storage": "1Gi"},
    }
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "emptyDir": {}} in serialize(make_grading_pod(**base_args()))["spec"]["volumes"]


def test_extra_pod_config_merges_recursively_and_last() -> None:
    spec = serialize(make_grading_pod(**base_args(**CONFIGS["extra-pod-config"])))["spec"]
    # merged into the builder's securityContext, not replacing it
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 3000,
        "fsGroup": 3000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["priorityClassName"] == "grading-low" and spec["dnsPolicy"] == "None"
    # applied last: it may override what the builder set, and None removes a field
    spec = serialize(
        make_grading_pod(
            **base_args(
                active_deadline_seconds=60,
                extra_pod_config={
                    "activeDeadlineSeconds": 120,
                    "terminationGracePeriodSeconds": None,
                    "volumes": [
                        {"name": "job", "persistentVolumeClaim": {"claimName": "other"}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory"}},
                    ],
                },
            )
        )
    )["spec"]
    assert spec["activeDeadlineSeconds"] == 120
    assert "terminationGracePeriodSeconds" not in spec
    assert spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "other"  # lists replace


def test_unknown_fields_in_config_are_errors_not_silently_dropped() -> None:
    with pytest.raises(ValueError, match=r"unknown pod field\(s\): spec.priorityClass\b"):
        make_grading_pod(**base_args(extra_pod_config={"priorityClass": "low"}))
    with pytest.raises(ValueError, match=r"spec.tolerations\[0\].operater"):
        make_grading_pod(**base_args(tolerations=[{"key": "a", "operater": "Exists"}]))
    with pytest.raises(ValueError, match=r"spec.volumes\[2\].emptyDir.size"):
        make_grading_pod(**base_args(extra_volumes=[{"name": "x", "emptyDir": {"size": "1Gi"}}]))
    assert unknown_fields({"spec": {"containers": [{"name": "c", "image": "i"}]}}, "V1Pod") == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"command": []}, "command must not be empty"),
        ({"job_subpath": "/abs"}, "job_subpath must be a relative path"),
        ({"job_subpath": "jobs/../other"}, "job_subpath must be a relative path"),
        ({"name": "Not_A_Name"}, "is not a DNS-1123 label"),
    ],
)
def test_rejects_unusable_arguments(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_grading_pod(**base_args(**overrides))


def test_builder_is_pure() -> None:
    tolerations = [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    extra = {"securityContext": {"fsGroup": 5}, "priorityClassName": "p"}
    args = base_args(tolerations=tolerations, extra_pod_config=extra)
    snapshot = copy.deepcopy(args)
    first = make_grading_pod(**args)
    second = make_grading_pod(**args)
    assert serialize(first) == serialize(second)
    first.spec.tolerations[0].key = "changed"
    first.metadata.labels["x"] = "y"
    assert args == snapshot  # inputs never mutated or shared with the result
    assert serialize(second)["spec"]["tolerations"][0]["key"] == "dedicated"


def test_merge_config() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert merge_config(base, {"a": {"c": [3], "e": 2}, "d": None}) == {"a": {"b": 1, "c": [3], "e": 2}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


# ------------------------------------------------------------------------------------------------
# names and labels
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("commit", "job_id", "expected"),
    [
        ("0123456789abcdef0123456789abcdef01234567", 17, "autograde-0123456789ab-17"),
        ("ABCDEF0123456789", 1, "autograde-abcdef012345-1"),
        ("ab_cd-ef.12", 0, "autograde-abcdef12-0"),
        ("", 5, "autograde-nohash-5"),
        ("---", 5, "autograde-nohash-5"),
        ("ünïcödé", 3, "autograde-ncd-3"),
        ("f" * 64, 10**30, "autograde-ffffffffffff-" + "1" + "0" * 30),
    ],
)
def test_pod_name_for_job(commit: str, job_id: int, expected: str) -> None:
    name = pod_name_for_job(commit, job_id)
    assert name == expected
    assert DNS_LABEL.match(name) and len(name) <= 63


def test_pod_name_differs_per_job_of_the_same_commit() -> None:
    commit = "deadbeef" * 5
    assert pod_name_for_job(commit, 1) != pod_name_for_job(commit, 2)


@pytest.mark.parametrize("job_id", [-1, True, "3", 1.0, 10**60])
def test_pod_name_rejects_bad_job_ids(job_id: Any) -> None:
    with pytest.raises(ValueError):
        pod_name_for_job("abc", job_id)


@pytest.mark.parametrize(
    "value",
    [
        "intro-2024",
        "Intro to CS (2024/25)",
        "  spaced  ",
        "-._edge._-",
        "x" * 200,
        "ä" * 10,
        "",
        12345,
        "a" * 62 + "-b",
    ],
)
def test_label_values_are_always_valid(value: Any) -> None:
    result = label_value(value)
    assert len(result) <= 63 and LABEL_VALUE.match(result), result


def test_label_values_keep_long_inputs_distinct() -> None:
    a, b = "lecture-" + "x" * 100 + "-a", "lecture-" + "x" * 100 + "-b"
    assert label_value(a) != label_value(b)
    assert label_value("hw-1") == "hw-1"  # valid values pass through unchanged


def test_make_labels_and_selector() -> None:
    labels = make_labels("Intro to CS", "hw/1", 7, 42)
    assert labels == {
        "app.kubernetes.io/name": "grader-service",
        "app.kubernetes.io/component": "autograde",
        "grader-service/lecture": "Intro-to-CS",
        "grader-service/assignment": "hw-1",
        "grader-service/submission-id": "7",
        "grader-service/job-id": "42",
    }
    selected = dict(part.split("=") for part in component_selector().split(","))
    assert selected.items() <= labels.items()


# ------------------------------------------------------------------------------------------------
# the generated pod on the fake cluster
# ------------------------------------------------------------------------------------------------
GRADE_SCRIPT = """
import json, os, pathlib
out = pathlib.Path('output'); out.mkdir(exist_ok=True)
(out / 'gradebook.json').write_text(json.dumps({'score': 7, 'uid': os.getuid(), 'cwd': os.getcwd(),
    'home_writable': os.access(os.environ['HOME'], os.W_OK), 'job': sorted(os.listdir('/job'))}))
print('graded')
"""


def _run_generated_pod(api: client.CoreV1Api, pod: client.V1Pod, timeout: float = 30) -> client.V1Pod:
    api.create_namespaced_pod(KUBE_NAMESPACE, pod)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = api.read_namespaced_pod(pod.metadata.name, KUBE_NAMESPACE)
        if current.status.phase in ("Succeeded", "Failed"):
            return current
        time.sleep(0.05)
    raise AssertionError(f"pod never finished: {current.status}")


def test_generated_pod_runs_and_writes_into_its_job_directory(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, kube_pvc_dir: Path
) -> None:
    (kube_pvc_dir / "jobs" / "42").mkdir(parents=True)
    (kube_pvc_dir / "jobs" / "42" / "submission.ipynb").write_text("{}")
    (kube_pvc_dir / "jobs" / "41").mkdir()
    pod = make_grading_pod(
        **base_args(
            command=[sys.executable, "-c", GRADE_SCRIPT], memory_limit="1Gi", active_deadline_seconds=60
        )
    )
    done = _run_generated_pod(kube_api, pod)
    log = kube_api.read_namespaced_pod_log(pod.metadata.name, KUBE_NAMESPACE)
    assert done.status.phase == "Succeeded", log
    assert log == "graded\n"
    result = json.loads((kube_pvc_dir / "jobs" / "42" / "output" / "gradebook.json").read_text())
    assert result == {
        "score": 7,
        "uid": 1000,
        "cwd": "/job",
        "home_writable": True,
        "job": ["output", "submission.ipynb"],
    }
    assert not (kube_pvc_dir / "jobs" / "41" / "output").exists()
    # what the server stored: no token volume, our labels, selectable by the component selector
    assert [v.name for v in done.spec.volumes] == ["job", "tmp"]
    listed = kube_api.list_namespaced_pod(KUBE_NAMESPACE, label_selector=component_selector())
    assert [p.metadata.name for p in listed.items] == [pod.metadata.name]


def test_generated_pod_deadline_is_enforced_by_the_cluster(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, kube_pvc_dir: Path
) -> None:
    pod = make_grading_pod(
        **base_args(
            command=[sys.executable, "-c", "import time; time.sleep(60)"],
            active_deadline_seconds=1,
            termination_grace_period_seconds=1,
        )
    )
    started = time.monotonic()
    done = _run_generated_pod(kube_api, pod)
    assert done.status.phase == "Failed" and done.status.reason == "DeadlineExceeded"
    assert time.monotonic() - started < 10


def test_generated_arm_pod_waits_for_an_arm_node(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, kube_pvc_dir: Path
) -> None:
    pod = make_grading_pod(
        **base_args(command=[sys.executable, "-c", "pass"], **CONFIGS["arm-node-with-tolerations"])
    )
    kube_api.create_namespaced_pod(KUBE_NAMESPACE, pod)
    deadline = time.monotonic() + 30
    while not (pending := kube_api.read_namespaced_pod(pod.metadata.name, KUBE_NAMESPACE)).status.conditions:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert pending.status.phase == "Pending" and pending.status.conditions[0].reason == "Unschedulable"
    arm = Node.default("arm-1", arch="arm64")
    arm.taints = [{"key": "dedicated", "value": "grading", "effect": "NoSchedule"}]
    fake_kube.set_nodes([Node.default(), arm])
    deadline = time.monotonic() + 30
    while kube_api.read_namespaced_pod(pod.metadata.name, KUBE_NAMESPACE).status.phase != "Succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert kube_api.read_namespaced_pod(pod.metadata.name, KUBE_NAMESPACE).spec.node_name == "arm-1"
