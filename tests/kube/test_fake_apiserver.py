"""The fake apiserver, driven only through the real ``kubernetes`` client and real ``kubectl``.

Whatever later executor tests assume about "the cluster" is pinned down here first: status codes
and messages, resourceVersion and watch semantics (including 410 Gone), RBAC, and how pods move
through their phases with real processes, mounts and exit codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from .conftest import KUBE_NAMESPACE, KUBE_PVC_CLAIM
from .fake_apiserver import FakeKubeAPIServer
from .fake_kubelet import PULL_ERRORS, Node, PullFailure, SandboxMode

NS = KUBE_NAMESPACE
PY = sys.executable
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def pod_body(
    name: str,
    command: list[str] | None = None,
    *,
    labels: dict[str, str] | None = None,
    image: str = "python:3.11-slim",
    container: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A minimal pod as a user would send it (no defaults filled in)."""
    c: dict[str, Any] = {"name": "main", "image": image, "command": command or [PY, "-c", "pass"]}
    c.update(container or {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"restartPolicy": "Never", "containers": [c], **spec},
    }


def wait_pod(
    api: client.CoreV1Api, name: str, predicate: Callable[[client.V1Pod], bool], timeout: float = 30
) -> client.V1Pod:
    """Poll through the API until ``predicate(pod)``; the last pod is in the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        pod = api.read_namespaced_pod(name, NS)
        if predicate(pod):
            return pod
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name} did not get there: {pod.status}")
        time.sleep(0.05)


def phase_in(*phases: str) -> Callable[[client.V1Pod], bool]:
    return lambda pod: pod.status.phase in phases


def waiting_reason(pod: client.V1Pod) -> str | None:
    statuses = pod.status.container_statuses or []
    return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else None


def terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated:
    return pod.status.container_statuses[0].state.terminated


def api_error(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as info:
        call()
    return info.value.status, json.loads(info.value.body)


def wait_gone(api: client.CoreV1Api, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            api.read_namespaced_pod(name, NS)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.05)
    raise AssertionError(f"pod {name} still exists")


# ------------------------------------------------------------------------------------------------
# connection, TLS, discovery
# ------------------------------------------------------------------------------------------------
def test_load_kube_config_over_https_with_ca(fake_kube: FakeKubeAPIServer, kubeconfig: Path) -> None:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    assert configuration.host.startswith("https://127.0.0.1:")
    assert configuration.ssl_ca_cert  # TLS verified against the generated CA
    with client.ApiClient(configuration) as api_client:
        version = client.VersionApi(api_client).get_code()
        assert version.git_version == "v1.36.0"
        pods = client.CoreV1Api(api_client).list_namespaced_pod(NS)
        assert pods.items == []
        assert int(pods.metadata.resource_version) > 0


def test_plain_http_server_and_clean_stop(tmp_path: Path) -> None:
    with FakeKubeAPIServer(tls=False, sandbox=SandboxMode.BWRAP, state_dir=tmp_path / "state") as server:
        assert server.url.startswith("http://")
        api_client = config.new_client_from_config(config_file=str(server.kubeconfig))
        api = client.CoreV1Api(api_client)
        api.create_namespaced_pod("default", pod_body("sleeper", [PY, "-c", "import time; time.sleep(60)"]))
        server.wait_for_pod("default", "sleeper", lambda p: p["status"]["phase"] == "Running")
        assert server.running_processes() == 1
        pid = _container_pids(server)[0]
        api_client.close()
    # stop() killed the container although the pod was still running
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def _container_pids(server: FakeKubeAPIServer) -> list[int]:
    assert server.kubelet is not None
    return server.call(
        lambda: [
            c.signal_pid
            for rt in server.kubelet.pods.values()
            for c in rt.containers.values()
            if c.signal_pid
        ]
    )


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def raw_request(
    api: client.CoreV1Api,
    method: str,
    path: str,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """A request through the real client's transport and auth, for bodies its models would refuse."""
    method_, url, headers, body_, _ = api.api_client.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params={"Content-Type": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.api_client.call_api(method_, url, header_params=headers, body=body_)
    data = response.read()
    return response.status, dict(response.getheaders()), json.loads(data) if data else None


# ------------------------------------------------------------------------------------------------
# CRUD and resourceVersion bookkeeping
# ------------------------------------------------------------------------------------------------
def test_create_applies_server_defaults_and_metadata(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    body = pod_body("defaults", labels={"a": "b"})
    del body["spec"]["restartPolicy"]
    created = kube_api.create_namespaced_pod(NS, body)
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert created.metadata.namespace == NS
    spec = created.spec
    assert spec.restart_policy == "Always"
    assert spec.termination_grace_period_seconds == 30
    assert spec.service_account_name == "default"
    assert spec.containers[0].image_pull_policy == "IfNotPresent"
    assert {t.key for t in spec.tolerations} == {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    }
    # the ServiceAccount admission plugin mounts a token unless the pod opts out
    assert spec.volumes[0].name.startswith("kube-api-access-")
    assert spec.containers[0].volume_mounts[0].mount_path == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert created.status.phase == "Pending" and created.status.qos_class == "BestEffort"

    got = kube_api.read_namespaced_pod("defaults", NS)
    assert got.metadata.uid == created.metadata.uid


def test_generate_name_and_global_resource_version(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    fake_kube.add_namespace("other")
    body = pod_body("", [PY, "-c", "pass"])
    body["metadata"] = {"generateName": "job-"}
    first = kube_api.create_namespaced_pod(NS, body)
    second = kube_api.create_namespaced_pod("other", body)
    assert first.metadata.name.startswith("job-") and len(first.metadata.name) == len("job-") + 5
    # one counter for all objects, like etcd's revision
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    listed = kube_api.list_pod_for_all_namespaces()
    assert int(listed.metadata.resource_version) >= int(second.metadata.resource_version)
    assert {p.metadata.namespace for p in listed.items} == {NS, "other"}


def test_patch_merge_and_strategic_labels(fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api) -> None:
    kube_api.create_namespaced_pod(NS, pod_body("patched", labels={"keep": "1", "drop": "1"}))
    before = kube_api.read_namespaced_pod("patched", NS)
    # a dict body is sent as a strategic merge patch by the client
    after = kube_api.patch_namespaced_pod(
        "patched", NS, {"metadata": {"labels": {"drop": None, "new": "2"}, "annotations": {"note": "x"}}}
    )
    assert after.metadata.labels == {"keep": "1", "new": "2"}
    assert after.metadata.annotations == {"note": "x"}
    assert int(after.metadata.resource_version) > int(before.metadata.resource_version)
    merged = kube_api.patch_namespaced_pod(
        "patched",
        NS,
        {"metadata": {"labels": {"merge": "yes"}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.labels == {"keep": "1", "new": "2", "merge": "yes"}
    jsonpatched = kube_api.patch_namespaced_pod(
        "patched", NS, [{"op": "remove", "path": "/metadata/labels/keep"}]
    )
    assert "keep" not in jsonpatched.metadata.labels


def test_patch_rejects_immutable_spec_and_stale_resource_version(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    created = kube_api.create_namespaced_pod(NS, pod_body("immutable"))
    code, status = api_error(
        lambda: kube_api.patch_namespaced_pod("immutable", NS, {"spec": {"restartPolicy": "Always"}})
    )
    assert code == 422 and status["reason"] == "Invalid"
    assert "pod updates may not change fields other than" in status["message"]
    kube_api.patch_namespaced_pod("immutable", NS, {"metadata": {"labels": {"x": "1"}}})
    code, status = api_error(
        lambda: kube_api.patch_namespaced_pod(
            "immutable",
            NS,
            {"metadata": {"resourceVersion": created.metadata.resource_version, "labels": {"y": "1"}}},
        )
    )
    assert code == 409 and status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on pods "immutable": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    # activeDeadlineSeconds may be set on a running pod (and only lowered afterwards)
    kube_api.patch_namespaced_pod("immutable", NS, {"spec": {"activeDeadlineSeconds": 100}})
    code, status = api_error(
        lambda: kube_api.patch_namespaced_pod("immutable", NS, {"spec": {"activeDeadlineSeconds": 200}})
    )
    assert code == 422 and "must be less than or equal to previous value" in status["message"]


def test_list_pagination_with_limit_and_continue(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    for i in range(5):
        kube_api.create_namespaced_pod(NS, pod_body(f"page-{i}"))
    first = kube_api.list_namespaced_pod(NS, limit=2)
    assert [p.metadata.name for p in first.items] == ["page-0", "page-1"]
    assert first.metadata.remaining_item_count == 3
    second = kube_api.list_namespaced_pod(NS, limit=2, _continue=first.metadata._continue)
    assert [p.metadata.name for p in second.items] == ["page-2", "page-3"]
    third = kube_api.list_namespaced_pod(NS, limit=2, _continue=second.metadata._continue)
    assert [p.metadata.name for p in third.items] == ["page-4"] and not third.metadata._continue
    kube_api.patch_namespaced_pod("page-0", NS, {"metadata": {"labels": {"changed": "after-list"}}})
    fake_kube.compact()  # the first page's resourceVersion is now older than the compaction
    code, status = api_error(
        lambda: kube_api.list_namespaced_pod(NS, limit=2, _continue=first.metadata._continue)
    )
    assert code == 410 and status["reason"] == "Expired"


# ------------------------------------------------------------------------------------------------
# selectors
# ------------------------------------------------------------------------------------------------
def test_label_selectors(fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api) -> None:
    kube_api.create_namespaced_pod(NS, pod_body("l-a", labels={"app": "grader", "tier": "a"}))
    kube_api.create_namespaced_pod(NS, pod_body("l-b", labels={"app": "grader", "tier": "b"}))
    kube_api.create_namespaced_pod(NS, pod_body("l-c", labels={"app": "other"}))

    def names(selector: str) -> list[str]:
        return sorted(
            p.metadata.name for p in kube_api.list_namespaced_pod(NS, label_selector=selector).items
        )

    assert names("app=grader") == ["l-a", "l-b"]
    assert names("app==grader,tier=b") == ["l-b"]
    assert names("tier!=a") == ["l-b", "l-c"]  # != also matches pods without the key
    assert names("tier in (a, b)") == ["l-a", "l-b"]
    assert names("tier notin (a)") == ["l-b", "l-c"]
    assert names("tier") == ["l-a", "l-b"]
    assert names("!tier") == ["l-c"]
    assert names("app=none") == []
    code, status = api_error(lambda: kube_api.list_namespaced_pod(NS, label_selector="tier in (a"))
    assert code == 400 and status["reason"] == "BadRequest"


def test_field_selectors(fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api) -> None:
    kube_api.create_namespaced_pod(NS, pod_body("f-ok", [PY, "-c", "pass"]))
    kube_api.create_namespaced_pod(NS, pod_body("f-bad", [PY, "-c", "raise SystemExit(1)"]))
    wait_pod(kube_api, "f-ok", phase_in("Succeeded"))
    wait_pod(kube_api, "f-bad", phase_in("Failed"))

    def names(selector: str) -> list[str]:
        return sorted(
            p.metadata.name for p in kube_api.list_namespaced_pod(NS, field_selector=selector).items
        )

    assert names("metadata.name=f-ok") == ["f-ok"]
    assert names("status.phase=Failed") == ["f-bad"]
    assert names("status.phase!=Failed,metadata.namespace=grader") == ["f-ok"]
    assert names("spec.nodeName=fake-node") == ["f-bad", "f-ok"]
    code, status = api_error(lambda: kube_api.list_namespaced_pod(NS, field_selector="spec.image=x"))
    assert code == 400 and status["message"] == "field label not supported: spec.image"


# ------------------------------------------------------------------------------------------------
# watch
# ------------------------------------------------------------------------------------------------
def test_watch_follows_a_pod_from_added_to_deleted(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    start = kube_api.list_namespaced_pod(NS).metadata.resource_version
    kube_api.create_namespaced_pod(NS, pod_body("watched", [PY, "-c", "print('hi')"], labels={"w": "1"}))
    wait_pod(kube_api, "watched", phase_in("Succeeded"))
    kube_api.delete_namespaced_pod("watched", NS)
    seen: list[tuple[str, str | None, int]] = []
    w = watch.Watch()
    for event in w.stream(
        kube_api.list_namespaced_pod, NS, label_selector="w=1", resource_version=start, timeout_seconds=10
    ):
        pod = event["object"]
        seen.append((event["type"], pod.status.phase, int(pod.metadata.resource_version)))
        if event["type"] == "DELETED":
            w.stop()
    types = [t for t, _, _ in seen]
    assert types[0] == "ADDED" and types[-1] == "DELETED" and set(types[1:-1]) == {"MODIFIED"}
    phases = [p for _, p, _ in seen]
    assert phases.index("Running") < phases.index("Succeeded")
    versions = [rv for _, _, rv in seen]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_watch_resumes_from_resource_version_and_gets_410_after_compaction(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    old = kube_api.list_namespaced_pod(NS).metadata.resource_version
    kube_api.create_namespaced_pod(NS, pod_body("resume-1"))
    middle = kube_api.read_namespaced_pod("resume-1", NS).metadata.resource_version
    kube_api.create_namespaced_pod(NS, pod_body("resume-2"))
    # resuming from `middle` replays only what happened after it
    events = list(
        watch.Watch().stream(kube_api.list_namespaced_pod, NS, resource_version=middle, timeout_seconds=1)
    )
    names = {e["object"].metadata.name for e in events}
    assert "resume-2" in names
    assert all(int(e["object"].metadata.resource_version) > int(middle) for e in events)

    fake_kube.compact()
    with pytest.raises(ApiException) as info:  # timeout_seconds: the client does not retry
        list(watch.Watch().stream(kube_api.list_namespaced_pod, NS, resource_version=old, timeout_seconds=5))
    assert info.value.status == 410
    assert "too old resource version" in info.value.reason

    # the reflector's way out: list again and watch from the new resourceVersion
    fresh = kube_api.list_namespaced_pod(NS)
    kube_api.patch_namespaced_pod("resume-1", NS, {"metadata": {"labels": {"after": "relist"}}})
    events = list(
        watch.Watch().stream(
            kube_api.list_namespaced_pod,
            NS,
            resource_version=fresh.metadata.resource_version,
            field_selector="metadata.name=resume-1",
            timeout_seconds=1,
        )
    )
    assert any(
        e["type"] == "MODIFIED" and e["object"].metadata.labels.get("after") == "relist" for e in events
    )


def test_watch_window_and_raw_410_event(fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api) -> None:
    fake_kube.set(history_window=3)
    old = kube_api.list_namespaced_pod(NS).metadata.resource_version
    for i in range(4):
        kube_api.create_namespaced_pod(NS, pod_body(f"window-{i}", [PY, "-c", "pass"]))
    response = kube_api.list_namespaced_pod(
        NS, watch=True, resource_version=old, timeout_seconds=2, _preload_content=False
    )
    lines = [json.loads(line) for line in response.read().decode().splitlines() if line]
    assert response.status == 200  # the error travels inside the stream, as on a real server
    assert lines == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": lines[0]["object"]["message"],
                "reason": "Expired",
                "code": 410,
            },
        }
    ]
    assert lines[0]["object"]["message"].startswith(f"too old resource version: {old} (")


def test_watch_bookmarks_and_selector_exit_as_deleted(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    fake_kube.set(bookmark_interval=0.2)
    kube_api.create_namespaced_pod(NS, pod_body("sel", labels={"grading": "yes"}))
    start = kube_api.list_namespaced_pod(NS).metadata.resource_version
    kube_api.patch_namespaced_pod("sel", NS, {"metadata": {"labels": {"grading": "no"}}})
    response = kube_api.list_namespaced_pod(
        NS,
        watch=True,
        resource_version=start,
        label_selector="grading=yes",
        allow_watch_bookmarks=True,
        timeout_seconds=1,
        _preload_content=False,
    )
    events = [json.loads(line) for line in response.read().decode().splitlines() if line]
    # the pod left the selector: this watcher sees it DELETED, not MODIFIED
    assert events[0]["type"] == "DELETED" and events[0]["object"]["metadata"]["name"] == "sel"
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= int(start)


def test_watch_without_resource_version_starts_with_current_pods(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    kube_api.create_namespaced_pod(NS, pod_body("existing"))
    events = list(watch.Watch().stream(kube_api.list_namespaced_pod, NS, timeout_seconds=1))
    assert events[0]["type"] == "ADDED" and events[0]["object"].metadata.name == "existing"


# ------------------------------------------------------------------------------------------------
# errors and RBAC
# ------------------------------------------------------------------------------------------------
def test_error_statuses(fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, tmp_path: Path) -> None:
    code, status = api_error(lambda: kube_api.read_namespaced_pod("missing", NS))
    assert (code, status["reason"], status["message"]) == (404, "NotFound", 'pods "missing" not found')
    assert status["details"] == {"name": "missing", "kind": "pods"}

    kube_api.create_namespaced_pod(NS, pod_body("twice"))
    code, status = api_error(lambda: kube_api.create_namespaced_pod(NS, pod_body("twice")))
    assert (code, status["reason"], status["message"]) == (
        409,
        "AlreadyExists",
        'pods "twice" already exists',
    )

    code, status = api_error(lambda: kube_api.create_namespaced_pod("nowhere", pod_body("x")))
    assert (code, status["message"]) == (404, 'namespaces "nowhere" not found')

    for token in (None, "wrong-token"):
        path = fake_kube.write_kubeconfig(tmp_path / f"kc-{token}", token=token or "", namespace=NS)
        with config.new_client_from_config(config_file=str(path)) as api_client:
            code, status = api_error(lambda c=api_client: client.CoreV1Api(c).list_namespaced_pod(NS))
        assert (code, status["reason"], status["message"]) == (401, "Unauthorized", "Unauthorized")


def test_invalid_pods_are_422_with_field_causes(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    body = pod_body("Bad_Name", labels={"ok": "not ok!"}, container={"image": ""})
    body["spec"]["restartPolicy"] = "Sometimes"
    body["spec"]["activeDeadlineSeconds"] = 0
    body["spec"]["containers"][0]["volumeMounts"] = [{"name": "nope", "mountPath": "/x", "subPath": "../up"}]
    code, status = api_error(lambda: kube_api.create_namespaced_pod(NS, body))
    assert code == 422 and status["reason"] == "Invalid" and status["details"]["kind"] == "Pod"
    causes = {(c["field"], c["reason"]) for c in status["details"]["causes"]}
    assert causes == {
        ("metadata.name", "FieldValueInvalid"),
        ("metadata.labels", "FieldValueInvalid"),
        ("spec.containers[0].image", "FieldValueRequired"),
        ("spec.containers[0].volumeMounts[0].name", "FieldValueNotFound"),
        ("spec.containers[0].volumeMounts[0].subPath", "FieldValueInvalid"),
        ("spec.restartPolicy", "FieldValueNotSupported"),
        ("spec.activeDeadlineSeconds", "FieldValueInvalid"),
    }
    assert status["message"].startswith(
        'Pod "Bad_Name" is invalid: [metadata.name: Invalid value: "Bad_Name": '
        "a lowercase RFC 1123 subdomain must consist of"
    )
    assert (
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'
        in (status["message"])
    )

    empty = {"metadata": {"name": "empty"}, "spec": {"containers": []}}
    code, status = api_error(lambda: kube_api.create_namespaced_pod(NS, empty))
    assert code == 422 and status["message"] == 'Pod "empty" is invalid: spec.containers: Required value'

    # undecodable bodies (the client's models would refuse them, so they go raw) are 400s
    wrong_type = pod_body("typed")
    wrong_type["spec"]["activeDeadlineSeconds"] = "ten"
    code, _, status = raw_request(kube_api, "POST", f"/api/v1/namespaces/{NS}/pods", wrong_type)
    assert code == 400 and status["reason"] == "BadRequest"
    assert "cannot unmarshal string into Go struct field Pod.spec.activeDeadlineSeconds" in status["message"]

    quantity = pod_body("quantity", container={"resources": {"limits": {"memory": "lots"}}})
    code, status = api_error(lambda: kube_api.create_namespaced_pod(NS, quantity))
    assert code == 400 and "quantities must match the regular expression" in status["message"]


def test_unknown_fields_are_dropped_with_a_warning_or_rejected_when_strict(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    # The client's models refuse unknown fields, so send raw JSON (still through its transport).
    body = pod_body("typo")
    body["spec"]["activeDeadlineSecond"] = 5  # typo: a real server drops it, with a Warning header
    path = f"/api/v1/namespaces/{NS}/pods"
    code, headers, created = raw_request(kube_api, "POST", path, body)
    assert code == 201 and "activeDeadlineSeconds" not in created["spec"]
    assert headers["Warning"] == '299 - "unknown field \\"spec.activeDeadlineSecond\\""'
    body["metadata"]["name"] = "typo-strict"
    code, _, status = raw_request(kube_api, "POST", path, body, [("fieldValidation", "Strict")])
    assert (
        code == 400
        and status["message"] == 'strict decoding error: unknown field "spec.activeDeadlineSecond"'
    )


CHART_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: grader-service, namespace: grader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: grader-service, namespace: grader}
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["create", "get", "list", "watch", "delete"]
  - apiGroups: [""]
    resources: ["pods/log"]
    verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: grader-service, namespace: grader}
subjects:
  - kind: ServiceAccount
    name: grader-service
    namespace: grader
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: grader-service}
"""


def _sa_api(fake_kube: FakeKubeAPIServer, tmp_path: Path, rbac: str) -> client.CoreV1Api:
    fake_kube.load_rbac(rbac)
    token = fake_kube.add_service_account_token(NS, "grader-service")
    path = fake_kube.write_kubeconfig(tmp_path / "sa-kubeconfig", token=token, namespace=NS)
    return client.CoreV1Api(config.new_client_from_config(config_file=str(path)))


def test_rbac_role_of_the_chart_allows_the_executor_calls(
    fake_kube: FakeKubeAPIServer, tmp_path: Path
) -> None:
    api = _sa_api(fake_kube, tmp_path, CHART_RBAC)
    api.create_namespaced_pod(NS, pod_body("rbac", [PY, "-c", "print('logged')"]))
    wait_pod(api, "rbac", phase_in("Succeeded"))
    assert api.list_namespaced_pod(NS, label_selector="x!=y").items
    assert list(watch.Watch().stream(api.list_namespaced_pod, NS, timeout_seconds=1))
    assert api.read_namespaced_pod_log("rbac", NS) == "logged\n"
    # not in the chart's role: patch, other namespaces, the cluster scope
    code, status = api_error(
        lambda: api.patch_namespaced_pod("rbac", NS, {"metadata": {"labels": {"a": "b"}}})
    )
    assert (code, status["reason"]) == (403, "Forbidden")
    assert status["message"] == (
        'pods "rbac" is forbidden: User "system:serviceaccount:grader:grader-service" '
        'cannot patch resource "pods" in API group "" in the namespace "grader"'
    )
    code, status = api_error(lambda: api.list_namespaced_pod("default"))
    assert status["message"] == (
        'pods is forbidden: User "system:serviceaccount:grader:grader-service" cannot '
        'list resource "pods" in API group "" in the namespace "default"'
    )
    code, status = api_error(lambda: api.list_pod_for_all_namespaces())
    assert status["message"].endswith('cannot list resource "pods" in API group "" at the cluster scope')
    api.delete_namespaced_pod("rbac", NS)
    api.api_client.close()


@pytest.mark.parametrize(
    ("removed", "call", "verb", "resource"),
    [
        ("create", lambda api: api.create_namespaced_pod(NS, pod_body("denied")), "create", "pods"),
        ("delete", lambda api: api.delete_namespaced_pod("victim", NS), "delete", "pods"),
        (
            "watch",
            lambda api: list(watch.Watch().stream(api.list_namespaced_pod, NS, timeout_seconds=1)),
            "watch",
            "pods",
        ),
        ("pods/log", lambda api: api.read_namespaced_pod_log("victim", NS), "get", "pods/log"),
    ],
)
def test_rbac_missing_permission_is_named_in_the_403(
    fake_kube: FakeKubeAPIServer,
    kube_api: client.CoreV1Api,
    tmp_path: Path,
    removed: str,
    call: Callable[[client.CoreV1Api], Any],
    verb: str,
    resource: str,
) -> None:
    kube_api.create_namespaced_pod(NS, pod_body("victim"))
    wait_pod(kube_api, "victim", phase_in("Succeeded"))
    if removed == "pods/log":
        rbac = CHART_RBAC.replace('resources: ["pods/log"]', 'resources: ["pods/exec"]')
    else:
        rbac = CHART_RBAC.replace(f'"{removed}", ', "").replace(f', "{removed}"', "")
    api = _sa_api(fake_kube, tmp_path, rbac)
    code, status = api_error(lambda: call(api))
    assert (code, status["reason"]) == (403, "Forbidden")
    assert (
        f'cannot {verb} resource "{resource}" in API group "" in the namespace "grader"' in status["message"]
    )
    api.api_client.close()


# ------------------------------------------------------------------------------------------------
# the kubelet: phases, exit codes, logs
# ------------------------------------------------------------------------------------------------
def pod_history(api: client.CoreV1Api, name: str, since: str, timeout: float = 30) -> list[client.V1Pod]:
    """Every state of pod ``name`` from resourceVersion ``since`` until it is Succeeded/Failed."""
    seen = []
    w = watch.Watch()
    for event in w.stream(
        api.list_namespaced_pod,
        NS,
        field_selector=f"metadata.name={name}",
        resource_version=since,
        timeout_seconds=timeout,
    ):
        seen.append(event["object"])
        if event["object"].status.phase in ("Succeeded", "Failed"):
            w.stop()
    return seen


def test_pod_runs_to_succeeded_with_real_statuses(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    fake_kube.set(start_delay=0.3)
    since = kube_api.list_namespaced_pod(NS).metadata.resource_version
    kube_api.create_namespaced_pod(
        NS, pod_body("ok", [PY, "-c", "import time; time.sleep(0.5); print('done')"])
    )
    history = pod_history(kube_api, "ok", since)
    creating = next(p for p in history if waiting_reason(p) == "ContainerCreating")
    assert creating.status.phase == "Pending" and creating.spec.node_name == "fake-node"
    assert creating.status.start_time is not None
    running = next(p for p in history if p.status.phase == "Running")
    state = running.status.container_statuses[0]
    assert state.state.running.started_at is not None and state.ready and state.started
    conditions = {c.type: c.status for c in running.status.conditions}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    phases = [p.status.phase for p in history]
    assert phases == sorted(phases, key=["Pending", "Running", "Succeeded"].index)  # never goes back
    done = history[-1]
    assert done.status.phase == "Succeeded"
    term = terminated(done)
    assert (term.exit_code, term.reason) == (0, "Completed")
    assert term.finished_at >= term.started_at
    assert {c.type: c.reason for c in done.status.conditions}["Ready"] == "PodCompleted"


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ([PY, "-c", "raise SystemExit(3)"], 3),
        # killed by a signal: sh passes on 128+9 (a container's PID 1 could not SIGKILL itself)
        (["sh", "-c", f"{PY} -c 'import os; os.kill(os.getpid(), 9)'"], 137),
    ],
)
def test_failed_container_exit_codes(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, command: list[str], code: int
) -> None:
    kube_api.create_namespaced_pod(NS, pod_body("fails", command))
    done = wait_pod(kube_api, "fails", phase_in("Succeeded", "Failed"))
    assert done.status.phase == "Failed"
    assert (terminated(done).exit_code, terminated(done).reason) == (code, "Error")


def test_logs_tail_limit_stream_and_errors(fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api) -> None:
    script = "import sys\nfor i in range(5): print(f'line {i}')\nprint('oops', file=sys.stderr)"
    kube_api.create_namespaced_pod(NS, pod_body("logs", [PY, "-c", script]))
    wait_pod(kube_api, "logs", phase_in("Succeeded"))
    full = kube_api.read_namespaced_pod_log("logs", NS)
    assert sorted(full.splitlines()) == sorted([f"line {i}" for i in range(5)] + ["oops"])
    assert kube_api.read_namespaced_pod_log("logs", NS, tail_lines=2).count("\n") == 2
    assert kube_api.read_namespaced_pod_log("logs", NS, limit_bytes=4) == full[:4]
    assert kube_api.read_namespaced_pod_log("logs", NS, container="main", stream="Stderr") == "oops\n"
    stamped = kube_api.read_namespaced_pod_log("logs", NS, timestamps=True, tail_lines=1)
    assert stamped[:4].isdigit() and stamped.rstrip().endswith(full.splitlines()[-1])
    code, status = api_error(lambda: kube_api.read_namespaced_pod_log("logs", NS, container="nope"))
    assert (code, status["message"]) == (400, "container nope is not valid for pod logs")
    code, status = api_error(lambda: kube_api.read_namespaced_pod_log("logs", NS, previous=True))
    assert status["message"] == 'previous terminated container "main" in pod "logs" not found'
    code, status = api_error(lambda: kube_api.read_namespaced_pod_log("gone", NS))
    assert (code, status["message"]) == (404, 'pods "gone" not found')


def test_logs_follow_streams_until_the_container_ends(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    script = "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.3)"
    kube_api.create_namespaced_pod(NS, pod_body("follow", [PY, "-c", script]))
    wait_pod(kube_api, "follow", phase_in("Running"))
    lines = list(watch.Watch().stream(kube_api.read_namespaced_pod_log, "follow", NS))
    assert lines == ["0", "1", "2"]


def test_multi_container_log_needs_a_container_name(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    body = pod_body("two")
    body["spec"]["containers"].append({"name": "side", "image": "busybox:1.36", "command": ["true"]})
    kube_api.create_namespaced_pod(NS, body)
    wait_pod(kube_api, "two", phase_in("Succeeded"))
    code, status = api_error(lambda: kube_api.read_namespaced_pod_log("two", NS))
    assert status["message"] == "a container name must be specified for pod two, choose one of: [main side]"


def test_restart_on_failure_counts_restarts_and_keeps_previous_log(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, kube_pvc_dir: Path
) -> None:
    fake_kube.set(restart_backoff=0.1)
    script = (
        "import os\np='/data/count'\nn=int(open(p).read()) if os.path.exists(p) else 0\n"
        "open(p,'w').write(str(n+1))\nprint('attempt', n)\nraise SystemExit(0 if n >= 2 else 1)"
    )
    body = pod_body(
        "retry",
        [PY, "-c", script],
        restartPolicy="OnFailure",
        container={"volumeMounts": [{"name": "d", "mountPath": "/data", "subPath": "retry"}]},
        volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": KUBE_PVC_CLAIM}}],
    )
    kube_api.create_namespaced_pod(NS, body)
    done = wait_pod(kube_api, "retry", phase_in("Succeeded", "Failed"))
    status = done.status.container_statuses[0]
    assert done.status.phase == "Succeeded" and status.restart_count == 2
    assert status.last_state.terminated.exit_code == 1
    assert kube_api.read_namespaced_pod_log("retry", NS) == "attempt 2\n"
    assert kube_api.read_namespaced_pod_log("retry", NS, previous=True) == "attempt 1\n"


def test_environment_expansion_and_downward_api(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    script = "import os; print(os.environ['GREETING'], os.environ['POD'], os.environ['HOSTNAME'], os.environ['NODE'])"
    env = [
        {"name": "WHO", "value": "world"},
        {"name": "GREETING", "value": "hello-$(WHO)-$$(WHO)"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    kube_api.create_namespaced_pod(NS, pod_body("env", [PY, "-c", script], container={"env": env}))
    wait_pod(kube_api, "env", phase_in("Succeeded"))
    assert kube_api.read_namespaced_pod_log("env", NS) == "hello-world-$(WHO) env env fake-node\n"


def test_secret_env_and_missing_executable_fail_like_a_node(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    secret_env = [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]
    kube_api.create_namespaced_pod(NS, pod_body("secret", container={"env": secret_env}))
    pod = wait_pod(kube_api, "secret", lambda p: waiting_reason(p) == "CreateContainerConfigError")
    assert pod.status.container_statuses[0].state.waiting.message == 'secret "db" not found'

    kube_api.create_namespaced_pod(NS, pod_body("noexec", ["no-such-program"]))
    done = wait_pod(kube_api, "noexec", phase_in("Failed"))
    assert (terminated(done).exit_code, terminated(done).reason) == (128, "StartError")
    assert 'exec: "no-such-program": executable file not found in $PATH' in terminated(done).message


# ------------------------------------------------------------------------------------------------
# sandbox: volumes, subPath, users, read-only root
# ------------------------------------------------------------------------------------------------
ISOLATION_SCRIPT = r"""
import json, os
report = {
    "uid": os.getuid(),
    "job": sorted(os.listdir("/job")),
    "job_parent": sorted(os.listdir("/")),
    "sibling_via_dots": os.path.exists("/job/../job-b"),
    "host_pvc_visible": os.path.exists(os.environ["HOST_PVC"]),
    "cwd": os.getcwd(),
}
for path in ("/root-write-test", "/tmp/ok", "/job/output/result.txt"):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("written")
        report[path] = "ok"
    except OSError as exc:
        report[path] = exc.strerror
print(json.dumps(report))
"""


def test_sub_path_isolation_and_read_only_root(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, kube_pvc_dir: Path
) -> None:
    (kube_pvc_dir / "job-a").mkdir()
    (kube_pvc_dir / "job-a" / "submission.ipynb").write_text("{}")
    (kube_pvc_dir / "job-b").mkdir()
    (kube_pvc_dir / "job-b" / "secret.txt").write_text("another student's work")
    body = pod_body(
        "isolated",
        [PY, "-c", ISOLATION_SCRIPT],
        container={
            "workingDir": "/job",
            "env": [{"name": "HOST_PVC", "value": str(kube_pvc_dir)}],
            "securityContext": {
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "runAsNonRoot": True,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [
                {"name": "jobs", "mountPath": "/job", "subPath": "job-a"},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        },
        volumes=[
            {"name": "jobs", "persistentVolumeClaim": {"claimName": KUBE_PVC_CLAIM}},
            {"name": "tmp", "emptyDir": {}},
        ],
        automountServiceAccountToken=False,
    )
    kube_api.create_namespaced_pod(NS, body)
    done = wait_pod(kube_api, "isolated", phase_in("Succeeded", "Failed"))
    log = kube_api.read_namespaced_pod_log("isolated", NS)
    assert done.status.phase == "Succeeded", log
    report = json.loads(log)
    assert report["uid"] == 1000
    assert report["job"] == ["submission.ipynb"]  # only the subPath, not job-b
    assert not report["sibling_via_dots"] and not report["host_pvc_visible"]
    assert "job-b" not in report["job_parent"]
    assert report["cwd"] == "/job"
    assert report["/root-write-test"] == "Read-only file system"
    assert report["/tmp/ok"] == "ok"
    assert report["/job/output/result.txt"] == "ok"
    assert (kube_pvc_dir / "job-a" / "output" / "result.txt").read_text() == "written"
    assert sorted(p.name for p in (kube_pvc_dir / "job-b").iterdir()) == ["secret.txt"]


def test_service_account_token_is_mounted_unless_disabled(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    script = "import os; print(os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token'))"
    kube_api.create_namespaced_pod(NS, pod_body("token", [PY, "-c", script]))
    kube_api.create_namespaced_pod(
        NS, pod_body("notoken", [PY, "-c", script], automountServiceAccountToken=False)
    )
    wait_pod(kube_api, "token", phase_in("Succeeded"))
    wait_pod(kube_api, "notoken", phase_in("Succeeded"))
    assert kube_api.read_namespaced_pod_log("token", NS) == "True\n"
    assert kube_api.read_namespaced_pod_log("notoken", NS) == "False\n"


def test_run_as_non_root_without_user_is_a_config_error(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    kube_api.create_namespaced_pod(NS, pod_body("rootish", securityContext={"runAsNonRoot": True}))
    pod = wait_pod(kube_api, "rootish", lambda p: waiting_reason(p) == "CreateContainerConfigError")
    assert pod.status.phase == "Pending"
    assert (
        "container has runAsNonRoot and image will run as root"
        in pod.status.container_statuses[0].state.waiting.message
    )


def test_missing_pvc_keeps_the_pod_unschedulable(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    body = pod_body(
        "nopvc",
        container={"volumeMounts": [{"name": "j", "mountPath": "/job"}]},
        volumes=[{"name": "j", "persistentVolumeClaim": {"claimName": "absent"}}],
    )
    kube_api.create_namespaced_pod(NS, body)
    pod = wait_pod(kube_api, "nopvc", lambda p: bool(p.status.conditions))
    cond = pod.status.conditions[0]
    assert (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable")
    assert 'persistentvolumeclaim "absent" not found' in cond.message


# ------------------------------------------------------------------------------------------------
# deadlines, images, scheduling, memory
# ------------------------------------------------------------------------------------------------
def test_active_deadline_kills_the_pod(fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api) -> None:
    body = pod_body(
        "slow",
        [PY, "-c", "import time; time.sleep(60)"],
        activeDeadlineSeconds=1,
        terminationGracePeriodSeconds=1,
    )
    started = time.monotonic()
    kube_api.create_namespaced_pod(NS, body)
    done = wait_pod(kube_api, "slow", phase_in("Succeeded", "Failed"))
    elapsed = time.monotonic() - started
    assert done.status.phase == "Failed"
    assert done.status.reason == "DeadlineExceeded"
    assert done.status.message == "Pod was active on the node longer than the specified deadline"
    # PID 1 without a SIGTERM handler ignores SIGTERM, so the grace period ran out: SIGKILL
    assert terminated(done).exit_code == 137
    assert 1.5 < elapsed < 10


def test_sigterm_handler_gets_the_grace_period_on_delete(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, kube_pvc_dir: Path
) -> None:
    script = (
        "import signal, sys, time\n"
        "def bye(*_):\n    open('/out/terminated', 'w').write('graceful'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(60)"
    )
    body = pod_body(
        "graceful",
        [PY, "-c", script],
        container={"volumeMounts": [{"name": "o", "mountPath": "/out", "subPath": "g"}]},
        volumes=[{"name": "o", "persistentVolumeClaim": {"claimName": KUBE_PVC_CLAIM}}],
    )
    kube_api.create_namespaced_pod(NS, body)
    wait_pod(
        kube_api,
        "graceful",
        lambda p: (
            "ready" in kube_api.read_namespaced_pod_log("graceful", NS)
            if p.status.phase == "Running"
            else False
        ),
    )
    returned = kube_api.delete_namespaced_pod(
        "graceful", NS, grace_period_seconds=20, propagation_policy="Background"
    )
    assert returned.metadata.deletion_timestamp is not None
    assert returned.metadata.deletion_grace_period_seconds == 20
    wait_gone(kube_api, "graceful", timeout=10)  # well before the 20 s: the handler exited at once
    assert (kube_pvc_dir / "g" / "terminated").read_text() == "graceful"


def test_delete_waits_for_grace_then_kills_and_keeps_terminating_pod_visible(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    kube_api.create_namespaced_pod(NS, pod_body("stubborn", [PY, "-c", "import time; time.sleep(60)"]))
    wait_pod(kube_api, "stubborn", phase_in("Running"))
    start = time.monotonic()
    kube_api.delete_namespaced_pod("stubborn", NS, body=client.V1DeleteOptions(grace_period_seconds=1))
    terminating = kube_api.read_namespaced_pod("stubborn", NS)
    assert terminating.metadata.deletion_timestamp is not None
    w = watch.Watch()
    final = None
    for event in w.stream(
        kube_api.list_namespaced_pod,
        NS,
        field_selector="metadata.name=stubborn",
        resource_version=terminating.metadata.resource_version,
        timeout_seconds=10,
    ):
        if event["type"] == "DELETED":
            final = event["object"]
            w.stop()
    assert final is not None and 0.9 < time.monotonic() - start < 8
    assert terminated(final).exit_code == 137 and final.status.phase == "Failed"
    assert fake_kube.running_processes() == 0


def test_delete_preconditions_propagation_and_immediate_cases(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    kube_api.create_namespaced_pod(NS, pod_body("pre", [PY, "-c", "import time; time.sleep(60)"]))
    wait_pod(kube_api, "pre", phase_in("Running"))
    wrong = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="not-the-uid"))
    code, status = api_error(lambda: kube_api.delete_namespaced_pod("pre", NS, body=wrong))
    assert code == 409 and status["message"].startswith(
        'Operation cannot be fulfilled on pods "pre": Precondition failed: UID in precondition: not-the-uid'
    )
    code, status = api_error(
        lambda: kube_api.delete_namespaced_pod("pre", NS, propagation_policy="Sometimes")
    )
    assert code == 422
    kube_api.delete_namespaced_pod("pre", NS, grace_period_seconds=0)  # force: gone at once
    code, _ = api_error(lambda: kube_api.read_namespaced_pod("pre", NS))
    assert code == 404
    # finished pods are removed at once too (no grace period for terminal pods)
    kube_api.create_namespaced_pod(NS, pod_body("finished"))
    wait_pod(kube_api, "finished", phase_in("Succeeded"))
    kube_api.delete_namespaced_pod("finished", NS)
    code, _ = api_error(lambda: kube_api.read_namespaced_pod("finished", NS))
    assert code == 404


def test_delete_collection_by_label(fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api) -> None:
    for name, labels in (("c1", {"batch": "x"}), ("c2", {"batch": "x"}), ("c3", {"batch": "y"})):
        kube_api.create_namespaced_pod(NS, pod_body(name, labels=labels))
    for name in ("c1", "c2", "c3"):
        wait_pod(kube_api, name, phase_in("Succeeded"))
    kube_api.delete_collection_namespaced_pod(NS, label_selector="batch=x")
    assert [p.metadata.name for p in kube_api.list_namespaced_pod(NS).items] == ["c3"]


def test_bad_image_backs_off_forever(fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api) -> None:
    fake_kube.set_bad_images({"registry.example/missing:1"})
    fake_kube.set(image_pull_backoff=0.2)
    since = kube_api.list_namespaced_pod(NS).metadata.resource_version
    kube_api.create_namespaced_pod(NS, pod_body("pull", image="registry.example/missing:1"))
    events = list(
        watch.Watch().stream(
            kube_api.list_namespaced_pod,
            NS,
            resource_version=since,
            field_selector="metadata.name=pull",
            timeout_seconds=2,
        )
    )
    reasons = [waiting_reason(e["object"]) for e in events]
    assert "ErrImagePull" in reasons and "ImagePullBackOff" in reasons
    assert reasons.index("ErrImagePull") < reasons.index("ImagePullBackOff")
    assert reasons.count("ErrImagePull") >= 2  # pulled again after each back-off
    assert {e["object"].status.phase for e in events} == {"Pending"}
    pod = kube_api.read_namespaced_pod("pull", NS)  # still failing after 2 s
    assert waiting_reason(pod) in ("ErrImagePull", "ImagePullBackOff")
    code, status = api_error(lambda: kube_api.read_namespaced_pod_log("pull", NS))
    assert (
        status["message"]
        == 'container "main" in pod "pull" is waiting to start: trying and failing to pull image'
    )

    kube_api.create_namespaced_pod(NS, pod_body("badname", image="Not A Valid/Image"))
    wait_pod(kube_api, "badname", lambda p: waiting_reason(p) == "InvalidImageName")


def waiting_state(pod: client.V1Pod) -> tuple[str, str] | None:
    statuses = pod.status.container_statuses or []
    waiting = statuses[0].state.waiting if statuses and statuses[0].state else None
    return (waiting.reason, waiting.message) if waiting else None


@pytest.mark.parametrize("with_error", [True, False])
def test_pull_failures_are_reported_as_the_kubelet_does(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, with_error: bool
) -> None:
    image = "registry.example/flaky:1"
    error = PULL_ERRORS["server error"].format(image=image)
    fake_kube.set_pull_failure(image, PullFailure(PULL_ERRORS["server error"], times=2))
    fake_kube.set(image_pull_backoff=0.2, backoff_message_has_error=with_error)
    since = kube_api.list_namespaced_pod(NS).metadata.resource_version
    kube_api.create_namespaced_pod(NS, pod_body("flaky", image=image))
    wait_pod(kube_api, "flaky", phase_in("Succeeded"), timeout=30)
    states = []
    for event in watch.Watch().stream(
        kube_api.list_namespaced_pod,
        NS,
        resource_version=since,
        field_selector="metadata.name=flaky",
        timeout_seconds=1,
    ):
        state = waiting_state(event["object"])
        if state and (not states or states[-1] != state):
            states.append(state)
    back_off = f'Back-off pulling image "{image}"' + (f": ErrImagePull: {error}" if with_error else "")
    pulls = [s for s in states if s[0] in ("ErrImagePull", "ImagePullBackOff")]
    assert pulls == [("ErrImagePull", error), ("ImagePullBackOff", back_off)] * 2, states
    failed = [e["message"] for e in fake_kube.events if e["pod"] == "flaky" and e["reason"] == "Failed"]
    assert failed == [f'Failed to pull image "{image}": {error}'] * 2


def test_node_selector_without_match_is_unschedulable_until_a_node_fits(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    kube_api.create_namespaced_pod(NS, pod_body("arm", nodeSelector={"kubernetes.io/arch": "arm64"}))
    pod = wait_pod(kube_api, "arm", lambda p: bool(p.status.conditions))
    cond = pod.status.conditions[0]
    assert (pod.status.phase, cond.type, cond.status, cond.reason) == (
        "Pending",
        "PodScheduled",
        "False",
        "Unschedulable",
    )
    assert cond.message == (
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    )
    assert pod.spec.node_name is None
    arm = Node.default("arm-node", arch="arm64")
    arm.taints = [{"key": "dedicated", "value": "grading", "effect": "NoSchedule"}]
    fake_kube.set_nodes([Node.default(), arm])
    pod = wait_pod(kube_api, "arm", lambda p: "taint" in p.status.conditions[0].message)
    assert (
        pod.spec.node_name is None
        and "untolerated taint {dedicated: grading}" in pod.status.conditions[0].message
    )
    tolerating = pod_body(
        "arm-tolerating",
        nodeSelector={"kubernetes.io/arch": "arm64"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "grading", "effect": "NoSchedule"}],
    )
    kube_api.create_namespaced_pod(NS, tolerating)
    done = wait_pod(kube_api, "arm-tolerating", phase_in("Succeeded"))
    assert done.spec.node_name == "arm-node"


def test_memory_limit_is_enforced_as_oom_kill(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    script = "import time\nblob = b'x' * (300 * 1024 * 1024)\ntime.sleep(30)"
    kube_api.create_namespaced_pod(
        NS, pod_body("hungry", [PY, "-c", script], container={"resources": {"limits": {"memory": "64Mi"}}})
    )
    done = wait_pod(kube_api, "hungry", phase_in("Succeeded", "Failed"))
    assert done.status.phase == "Failed"
    assert (terminated(done).exit_code, terminated(done).reason) == (137, "OOMKilled")
    assert done.status.qos_class == "Burstable"


# ------------------------------------------------------------------------------------------------
# kubectl cross-checks: the fake is not only our own reading of the API
# ------------------------------------------------------------------------------------------------
def test_kubectl_get_logs_label_delete(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, kubectl: Kubectl, tmp_path: Path
) -> None:
    kube_api.create_namespaced_pod(
        NS, pod_body("kc-1", [PY, "-c", "print('from kc-1')"], labels={"app": "kc"})
    )
    kube_api.create_namespaced_pod(
        NS, pod_body("kc-2", [PY, "-c", "raise SystemExit(2)"], labels={"app": "kc"})
    )
    kube_api.create_namespaced_pod(NS, pod_body("other", labels={"app": "no"}))
    for name in ("kc-1", "kc-2", "other"):
        wait_pod(kube_api, name, phase_in("Succeeded", "Failed"))

    result = kubectl("get", "pods", "-l", "app=kc")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0][:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert {r[0]: r[2] for r in rows[1:]} == {"kc-1": "Completed", "kc-2": "Error"}

    result = kubectl("get", "pods", "-l", "app in (kc),app!=no", "-o", "jsonpath={.items[*].metadata.name}")
    assert result.stdout.split() == ["kc-1", "kc-2"]
    result = kubectl("get", "pods", "--field-selector", "status.phase=Failed", "-o", "name")
    assert result.stdout.split() == ["pod/kc-2"]

    result = kubectl("logs", "kc-1")
    assert (result.returncode, result.stdout) == (0, "from kc-1\n"), result.stderr

    result = kubectl("label", "pod", "kc-1", "graded=yes")
    assert result.returncode == 0, result.stderr
    assert kube_api.read_namespaced_pod("kc-1", NS).metadata.labels["graded"] == "yes"

    result = kubectl("delete", "pod", "kc-1", "kc-2")
    assert result.returncode == 0, result.stderr
    assert [p.metadata.name for p in kube_api.list_namespaced_pod(NS).items] == ["other"]

    result = kubectl("get", "pod", "kc-1")
    assert result.returncode == 1
    assert result.stderr.strip() == 'Error from server (NotFound): pods "kc-1" not found'


def test_kubectl_create_and_delete_waits_for_graceful_termination(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api, kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = pod_body("kc-run", [PY, "-c", "import time; print('up', flush=True); time.sleep(60)"])
    manifest["spec"]["containers"][0]["bogusField"] = 1
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(manifest))
    # kubectl's client-side validation needs the OpenAPI document, which the fake does not serve
    result = kubectl("create", "-f", str(path), "--validate=false")
    assert result.returncode == 0, result.stderr
    assert 'unknown field "spec.containers[0].bogusField"' in result.stderr  # the server's Warning header
    wait_pod(kube_api, "kc-run", phase_in("Running"))
    result = kubectl("get", "pod", "kc-run", "-o", "wide")
    assert "Running" in result.stdout and "fake-node" in result.stdout
    start = time.monotonic()
    result = kubectl("delete", "pod", "kc-run", "--grace-period=1")
    assert result.returncode == 0, result.stderr
    assert 'pod "kc-run" deleted' in result.stdout
    assert time.monotonic() - start >= 0.9  # kubectl waited for the DELETED event
    code, _ = api_error(lambda: kube_api.read_namespaced_pod("kc-run", NS))
    assert code == 404


def test_kubectl_sees_rbac_denials(fake_kube: FakeKubeAPIServer, kubectl: Kubectl, tmp_path: Path) -> None:
    fake_kube.load_rbac(CHART_RBAC)
    token = fake_kube.add_service_account_token(NS, "grader-service")
    path = fake_kube.write_kubeconfig(tmp_path / "sa", token=token, namespace=NS)
    result = kubectl("--kubeconfig", str(path), "get", "pods", "-n", "default")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:grader:grader-service" '
        'cannot list resource "pods" in API group "" in the namespace "default"'
    )
    result = kubectl("--kubeconfig", str(path), "get", "pods")
    assert result.returncode == 0 and "No resources found in grader namespace." in result.stderr


# ------------------------------------------------------------------------------------------------
# fallback without bubblewrap
# ------------------------------------------------------------------------------------------------
def test_process_sandbox_fallback_translates_mount_paths(tmp_path: Path) -> None:
    pvc = tmp_path / "pvc"
    pvc.mkdir()
    script = "import os, sys; open(sys.argv[1] + '/out.txt', 'w').write(os.getcwd())"
    body = pod_body(
        "fallback",
        [PY, "-c", script, "/job"],
        container={
            "workingDir": "/job",
            "volumeMounts": [{"name": "j", "mountPath": "/job", "subPath": "one"}],
        },
        volumes=[{"name": "j", "persistentVolumeClaim": {"claimName": "jobs"}}],
    )
    server = FakeKubeAPIServer(sandbox=SandboxMode.PROCESS, pvc_dirs={"jobs": pvc}, state_dir=tmp_path / "s")
    with server, config.new_client_from_config(config_file=str(server.kubeconfig)) as api_client:
        client.CoreV1Api(api_client).create_namespaced_pod("default", body)
        server.wait_for_pod("default", "fallback", lambda p: p["status"]["phase"] in ("Succeeded", "Failed"))
        assert server.get_pod("default", "fallback")["status"]["phase"] == "Succeeded"
    assert (pvc / "one" / "out.txt").read_text() == str(pvc / "one")


def test_container_processes_die_with_their_pod(
    fake_kube: FakeKubeAPIServer, kube_api: client.CoreV1Api
) -> None:
    seconds = f"12{time.time_ns() % 10000}"  # a sleep duration no other process uses
    script = f"import subprocess, time; subprocess.Popen(['sleep', '{seconds}']); time.sleep(120)"
    kube_api.create_namespaced_pod(NS, pod_body("tree", [PY, "-c", script]))
    wait_pod(kube_api, "tree", phase_in("Running"))
    deadline = time.monotonic() + 5
    while not _pids_with_cmdline(f"sleep\0{seconds}") and time.monotonic() < deadline:
        time.sleep(0.05)
    children = _pids_with_cmdline(f"sleep\0{seconds}")
    assert children, "the grandchild never started"
    pid = _container_pids(fake_kube)[0]
    kube_api.delete_namespaced_pod("tree", NS, grace_period_seconds=0)
    deadline = time.monotonic() + 5
    while (_alive(pid) or any(_alive(c) for c in children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid) and not any(_alive(c) for c in children)


def _pids_with_cmdline(cmdline: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline") as f:
                    if f.read().rstrip("\0") == cmdline:
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


KILLED_PARENT = """
import sys, time
sys.path.insert(0, sys.argv[1])
from kubernetes import client, config
from tests.kube.fake_apiserver import FakeKubeAPIServer, SandboxMode
server = FakeKubeAPIServer(tls=False, sandbox=SandboxMode.BWRAP, state_dir=sys.argv[2]).start()
api = client.CoreV1Api(config.new_client_from_config(config_file=str(server.kubeconfig)))
body = {"metadata": {"name": "orphan"}, "spec": {"restartPolicy": "Never", "containers": [
    {"name": "c", "image": "busybox:1.36", "command": ["sleep", "300"]}]}}
api.create_namespaced_pod("default", body)
server.wait_for_pod("default", "orphan", lambda p: p["status"]["phase"] == "Running")
print(server.call(lambda: [c.signal_pid for rt in server.kubelet.pods.values() for c in rt.containers.values()])[0],
      flush=True)
time.sleep(300)
"""


def test_container_processes_die_when_the_test_process_is_killed(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [PY, "-c", KILLED_PARENT, str(repo), str(tmp_path / "state")], stdout=subprocess.PIPE, text=True
    )
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        pid = int(line)
        assert _alive(pid)
    finally:
        parent.kill()  # SIGKILL: no cleanup code of the fake runs
        parent.wait()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)  # bwrap --die-with-parent took the container down
