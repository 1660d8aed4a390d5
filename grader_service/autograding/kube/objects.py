"""Pure builders for the Kubernetes objects of the kube executor (as kubespawner's ``objects.py``).

Nothing here talks to a cluster or touches the filesystem: every function maps its arguments to
names, labels or a ``V1Pod``, so the executor's decisions can be tested without an API server and
the manifests can be checked against the Kubernetes schemas.

A grading pod runs untrusted student code, so its defaults are the restrictive ones: no service
account token, no service links, non-root with no capabilities and no privilege escalation, a
read-only root filesystem with a writable ``/tmp`` (an emptyDir, where the kernels work on a copy
of the submission), the job directory mounted from the shared PVC through ``subPath`` so the pod
sees only its own job, ``restartPolicy: Never`` and an ``activeDeadlineSeconds`` so the cluster
itself enforces the time limit. With a disk limit, the emptyDir gets it as ``sizeLimit`` and the
container as its ``ephemeral-storage`` limit: the kubelet evicts a pod that writes more.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import V1Pod
from kubernetes.client import models as k8s_models

from ...command.spec import RESULTS_DIR

APP_NAME = "grader-service"
COMPONENT = "autograde"
CONTAINER_NAME = "autograde"
LABEL_PREFIX = "grader-service/"
# A command pod's egress: "allowed" only when the admin allows it and every stage asks for it.
NETWORK_LABEL = f"{LABEL_PREFIX}network"
# What a `continue_on_failure` stage's wrapper writes to its termination message: "<mark> <code>".
EXIT_MARK = "grader-stage-exit"
# Where a command stage sees the job's parts: as in the local sandbox (namespaces.stage_binds).
SUBMISSION_DIR, GRADER_DIR = "/job/submission", "/job/grader"

_LABEL_VALUE_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_LABEL = 63


def pod_name_for_job(commit_hash: str, job_id: int) -> str:
    """``autograde-<first 12 of the commit hash>-<job id>``: a valid, unique pod name per job.

    The hash makes the pod recognisable next to the submission; the job id makes every grading
    attempt distinct, so a regrade of the same commit never collides with a pod of an earlier
    attempt that is still terminating. The result is a DNS-1123 label (≤ 63 characters) so it is
    also usable as a hostname and a label value. Characters outside ``[a-z0-9]`` are dropped from
    the hash (upper case is lowered); an empty hash becomes ``nohash``.
    """
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 0:
        raise ValueError(f"job_id must be a non-negative integer, not {job_id!r}")
    short = re.sub(r"[^a-z0-9]", "", str(commit_hash).lower())[:12] or "nohash"
    name = f"{COMPONENT}-{short}-{job_id}"
    if len(name) > _MAX_LABEL:
        raise ValueError(f"job_id {job_id} is too large for a pod name")
    return name


def label_value(value: object) -> str:
    """Make ``value`` a valid label value: ``[A-Za-z0-9._-]``, ≤ 63, alphanumeric at both ends.

    Runs of other characters become ``-``. A value that has to be shortened keeps its first
    characters and gets a short hash of the full value appended, so distinct long values stay
    distinct. Labels are for selecting and reading; the exact original belongs in an annotation.
    """
    text = _LABEL_VALUE_BAD_CHARS.sub("-", str(value))
    text = _strip_to_alnum(text)
    if len(text) > _MAX_LABEL:
        digest = hashlib.sha256(str(value).encode()).hexdigest()[:8]
        text = _strip_to_alnum(text[: _MAX_LABEL - len(digest) - 1]) + "-" + digest
    return text


def _strip_to_alnum(text: str) -> str:
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", text)


def make_labels(lecture: str, assignment: str, submission_id: int, job_id: int) -> dict[str, str]:
    """The labels of a grading pod; :func:`component_selector` selects all of them."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/component": COMPONENT,
        f"{LABEL_PREFIX}lecture": label_value(lecture),
        f"{LABEL_PREFIX}assignment": label_value(assignment),
        f"{LABEL_PREFIX}submission-id": label_value(submission_id),
        f"{LABEL_PREFIX}job-id": label_value(job_id),
    }


def component_selector() -> str:
    """Label selector for every grading pod of this service (for the shared watch and cleanup)."""
    return f"app.kubernetes.io/name={APP_NAME},app.kubernetes.io/component={COMPONENT}"


def make_grading_pod(
    *,
    name: str,
    namespace: str,
    image: str,
    command: Sequence[str],
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    job_subpath: str,
    pvc_name: str,
    mount_path: str = "/job",
    cpu_request: str | None = None,
    cpu_limit: str | None = None,
    memory_request: str | None = None,
    memory_limit: str | None = None,
    disk_limit: str | None = None,
    active_deadline_seconds: int | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    affinity: Mapping[str, Any] | None = None,
    image_pull_policy: str | None = None,
    image_pull_secrets: Sequence[str] | None = None,
    extra_volumes: Sequence[Mapping[str, Any]] | None = None,
    extra_volume_mounts: Sequence[Mapping[str, Any]] | None = None,
    service_account_name: str | None = None,
    run_as_user: int = 1000,
    run_as_group: int = 1000,
    fs_group: int | None = None,
    termination_grace_period_seconds: int = 5,
    extra_pod_config: Mapping[str, Any] | None = None,
) -> V1Pod:
    """Build the pod that grades one job.

    ``name`` must be a DNS-1123 label (≤ 63 characters, see :func:`pod_name_for_job`): the API
    would accept longer names, but the pod's hostname and our labels would not. ``command`` runs in ``mount_path`` (the job directory: ``<pvc>/<job_subpath>``). ``env`` is
    added after ``HOME=/tmp`` (the root filesystem is read-only, and Jupyter kernels need a writable
    home). Tolerations, affinity, extra volumes and mounts are given in API form (camelCase dicts),
    as they are written in Helm values. ``termination_grace_period_seconds`` is short by default:
    the grading command runs as PID 1, which ignores SIGTERM unless it installs a handler, so a
    cancelled or timed-out pod would otherwise hold its node for the default 30 s.

    ``extra_pod_config`` is merged last into the pod ``spec`` (camelCase keys, as kubespawner's
    ``extra_pod_config``): mappings merge recursively, any other value (lists included) replaces
    what is there, and ``None`` removes a key. Unknown fields raise ``ValueError`` instead of being
    silently dropped by the API server.

    ``disk_limit`` (a quantity) caps what the pod may write: the ``/tmp`` emptyDir's ``sizeLimit``
    and the container's ``ephemeral-storage`` limit (which also counts its logs). It is requested
    as well, so the pod is only scheduled where that much local storage is free.
    """
    _check_pod_arguments(name, command, job_subpath)
    resources = _resources(cpu_request, cpu_limit, memory_request, memory_limit, disk_limit)
    env = {"HOME": "/tmp", **(env or {})}
    container = _grading_container(
        image, command, env, mount_path, job_subpath, resources, run_as_user, run_as_group,
        extra_volume_mounts, image_pull_policy,
    )  # fmt: skip
    spec = _pod_spec(
        container, pvc_name, disk_limit, extra_volumes, run_as_user, run_as_group, fs_group,
        termination_grace_period_seconds,
    )  # fmt: skip
    spec.update(_scheduling(
        active_deadline_seconds, node_selector, tolerations, affinity, image_pull_secrets, service_account_name
    ))  # fmt: skip
    if extra_pod_config:
        spec = merge_config(spec, extra_pod_config)
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels),
        "annotations": dict(annotations or {}),
    }
    return _checked_pod({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})


def _checked_pod(manifest: dict[str, Any]) -> V1Pod:
    """The manifest as a pod, once every field in it is known to the Kubernetes schema."""
    unknown = unknown_fields(manifest, "V1Pod")
    if unknown:
        raise ValueError("unknown pod field(s): " + ", ".join(unknown))
    return _to_model(manifest)


def _pod_spec(
    container: dict[str, Any],
    pvc_name: str,
    disk_limit: str | None,
    extra_volumes: Sequence[Mapping[str, Any]] | None,
    run_as_user: int,
    run_as_group: int,
    fs_group: int | None,
    termination_grace_period_seconds: int,
) -> dict[str, Any]:
    """The pod's spec around its one container: never restarted, no service account token, the job
    volume and a size-limited /tmp."""
    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if fs_group is not None:
        pod_security["fsGroup"] = fs_group
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace_period_seconds,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [
            {"name": "job", "persistentVolumeClaim": {"claimName": pvc_name}},
            {"name": "tmp", "emptyDir": {"sizeLimit": str(disk_limit)} if disk_limit is not None else {}},
            *[dict(v) for v in extra_volumes or ()],
        ],
    }


def _check_pod_arguments(name: str, command: Sequence[str], job_subpath: str) -> None:
    """Refuse what the API would accept but the pod could not use (see `make_grading_pod`)."""
    if not command:
        raise ValueError("command must not be empty")
    if job_subpath.startswith("/") or ".." in job_subpath.split("/"):
        raise ValueError(f"job_subpath must be a relative path inside the volume, not {job_subpath!r}")
    if not _DNS_LABEL.match(name) or len(name) > _MAX_LABEL:
        raise ValueError(f"pod name {name!r} is not a DNS-1123 label of at most 63 characters")


def _resources(
    cpu_request: str | None,
    cpu_limit: str | None,
    memory_request: str | None,
    memory_limit: str | None,
    disk_limit: str | None,
) -> dict[str, dict[str, str]]:
    """The container's requests and limits; the disk limit is requested too (see `make_grading_pod`)."""
    resources: dict[str, dict[str, str]] = {}
    for kind, cpu, memory in (("requests", cpu_request, memory_request), ("limits", cpu_limit, memory_limit)):
        values = {k: str(v) for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
        if disk_limit is not None:
            values["ephemeral-storage"] = str(disk_limit)
        if values:
            resources[kind] = values
    return resources


def _grading_container(
    image: str,
    command: Sequence[str],
    env: Mapping[str, str],
    mount_path: str,
    job_subpath: str,
    resources: dict[str, dict[str, str]],
    run_as_user: int,
    run_as_group: int,
    extra_volume_mounts: Sequence[Mapping[str, Any]] | None,
    image_pull_policy: str | None,
) -> dict[str, Any]:
    """The one container: the grading command, unprivileged, on a read-only root with the job mounted."""
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": list(command),
        "workingDir": mount_path,
        "env": [{"name": k, "value": str(v)} for k, v in env.items()],
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": run_as_user,
            "runAsGroup": run_as_group,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "job", "mountPath": mount_path, "subPath": job_subpath},
            {"name": "tmp", "mountPath": "/tmp"},
            *[dict(m) for m in extra_volume_mounts or ()],
        ],
    }
    if image_pull_policy:
        container["imagePullPolicy"] = image_pull_policy
    return container


def _scheduling(
    active_deadline_seconds: int | None,
    node_selector: Mapping[str, str] | None,
    tolerations: Sequence[Mapping[str, Any]] | None,
    affinity: Mapping[str, Any] | None,
    image_pull_secrets: Sequence[str] | None,
    service_account_name: str | None,
) -> dict[str, Any]:
    """The optional part of the pod's spec: where and how long it may run, what it pulls as whom."""
    spec: dict[str, Any] = {}
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = int(active_deadline_seconds)
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if affinity:
        spec["affinity"] = copy.deepcopy(dict(affinity))
    if image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in image_pull_secrets]
    if service_account_name:
        spec["serviceAccountName"] = service_account_name
    return spec


# --- command assignments -------------------------------------------------------------------------


@dataclass(frozen=True)
class StageContainer:
    """One stage of a command assignment as a container of the job's pod (see `make_command_pod`).

    ``resources`` are the keyword arguments of the notebook pod's limits (cpu_request, cpu_limit,
    memory_request, memory_limit, disk_limit: quantities or None). ``keep_going``: the stage has
    ``continue_on_failure`` and is not the last, so its command is wrapped (`keep_going_command`).
    """

    image: str
    command: tuple[str, ...]
    resources: Mapping[str, Any]
    keep_going: bool = False


def stage_container_name(index: int) -> str:
    """``stage-<index>``: stage names may hold ``_``, ``.`` and capitals, which container names may not."""
    return f"stage-{index}"


def keep_going_command(command: Sequence[str]) -> list[str]:
    """The command of a `continue_on_failure` stage that is an init container.

    A failing init container fails the whole pod (no later stage would run), so the stage runs
    under ``/bin/sh``, which records its exit code in the container's termination message
    (``grader-stage-exit <code>``, read back from the pod's status) and exits 0. Only such stages
    need a shell in their image; a stage's command itself never runs through one (its arguments
    are passed as ``"$@"``). The stage can forge the message, but a stage can always choose its
    own exit code, so that gives it nothing.
    """
    script = f'"$@"; echo "{EXIT_MARK} $?" > /dev/termination-log; exit 0'
    return ["/bin/sh", "-c", script, "sh", *command]


def make_command_pod(
    *,
    name: str,
    namespace: str,
    stages: Sequence[StageContainer],
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    job_subpath: str,
    pvc_name: str,
    disk_limit: str | None = None,
    active_deadline_seconds: int | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    affinity: Mapping[str, Any] | None = None,
    image_pull_policy: str | None = None,
    image_pull_secrets: Sequence[str] | None = None,
    service_account_name: str | None = None,
    run_as_user: int = 1000,
    run_as_group: int = 1000,
    fs_group: int | None = None,
    termination_grace_period_seconds: int = 5,
    extra_pod_config: Mapping[str, Any] | None = None,
) -> V1Pod:
    """The pod of a command assignment's grading: its stages as init containers, the last as the main one.

    Init containers run one after the other, each to completion, and a failing one ends the pod:
    exactly grader.yaml's order and "a failing stage stops the pipeline", with each stage in its
    own image and with its own limits, kept by the kubelet. One container running a stage runner
    would need one image holding every stage's tools.

    Every stage sees the layout of the local sandbox, from the job's directory on the shared volume
    by ``subPath``: ``/job/submission`` (writable: a build stage leaves its binaries there for the
    next), ``/job/grader`` (the source, read-only), ``/job/results`` (``<job>/stages/<index>``, its own
    and empty: the service creates it before the pod, since the kubelet would create it owned by
    root) and ``/tmp`` (an emptyDir of its own). The security context is the notebook pod's.
    """
    if not stages:
        raise ValueError("a command pod needs at least one stage")
    containers = []
    for index, stage in enumerate(stages):
        _check_pod_arguments(name, stage.command, job_subpath)
        command = keep_going_command(stage.command) if stage.keep_going else list(stage.command)
        container = _grading_container(
            stage.image, command, {"HOME": "/tmp", **(env or {})}, SUBMISSION_DIR, job_subpath,
            _resources(**stage.resources), run_as_user, run_as_group, None, image_pull_policy,
        )  # fmt: skip
        container["name"] = stage_container_name(index)
        container["volumeMounts"] = [
            {"name": "job", "mountPath": SUBMISSION_DIR, "subPath": f"{job_subpath}/submission"},
            {"name": "job", "mountPath": GRADER_DIR, "subPath": f"{job_subpath}/source", "readOnly": True},
            {"name": "job", "mountPath": RESULTS_DIR, "subPath": f"{job_subpath}/stages/{index}"},
            {"name": f"tmp-{index}", "mountPath": "/tmp"},
        ]
        containers.append(container)
    spec = _pod_spec(
        containers[-1], pvc_name, None, None, run_as_user, run_as_group, fs_group,
        termination_grace_period_seconds,
    )  # fmt: skip
    if len(containers) > 1:
        spec["initContainers"] = containers[:-1]
    size = {"sizeLimit": str(disk_limit)} if disk_limit is not None else {}
    spec["volumes"] = [
        spec["volumes"][0],
        *({"name": f"tmp-{i}", "emptyDir": dict(size)} for i in range(len(stages))),
    ]
    spec.update(_scheduling(
        active_deadline_seconds, node_selector, tolerations, affinity, image_pull_secrets, service_account_name
    ))  # fmt: skip
    if extra_pod_config:
        spec = merge_config(spec, extra_pod_config)
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels),
        "annotations": dict(annotations or {}),
    }
    return _checked_pod({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})


def make_egress_policy(namespace: str, name: str = f"{APP_NAME}-grading-egress") -> dict[str, Any]:
    """The NetworkPolicy that lets a command pod labelled ``grader-service/network=allowed`` reach out.

    Grading pods are denied all traffic by the chart's ``grading-deny-all`` policy; policies only
    ever add what is allowed, so this one opens egress (anywhere, DNS included) for the pods the
    executor labelled allowed, and for no other. The containers of a pod share one network
    namespace, so this is per pod, not per stage: see ``KubeAutogradeExecutor.pod_network``.
    """
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": APP_NAME}},
        "spec": {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": APP_NAME,
                    "app.kubernetes.io/component": COMPONENT,
                    NETWORK_LABEL: "allowed",
                }
            },
            "policyTypes": ["Egress"],
            "egress": [{}],
        },
    }


def merge_config(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge of ``extra`` into a copy of ``base`` (mappings merge, ``None`` deletes)."""
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _model_fields(model: str) -> dict[str, str]:
    cls = getattr(k8s_models, model)
    return {cls.attribute_map[attr]: type_ for attr, type_ in cls.openapi_types.items()}


_LIST_TYPE = re.compile(r"^[Ll]ist\[(.+)\]$")
_DICT_TYPE = re.compile(r"^(?:Dict\[str, (.+)\]|dict\(str, (.+)\))$")


def unknown_fields(data: Any, model: str, path: str = "") -> list[str]:
    """Paths in ``data`` (camelCase) that the Kubernetes schema of ``model`` does not have."""
    if not isinstance(data, Mapping) or not hasattr(k8s_models, model):
        return []
    fields = _model_fields(model)
    unknown = []
    for key, value in data.items():
        sub = f"{path}.{key}" if path else key
        if key not in fields:
            unknown.append(sub)
            continue
        type_ = fields[key]
        if match := _LIST_TYPE.match(type_):
            for i, item in enumerate(value if isinstance(value, list) else []):
                unknown += unknown_fields(item, match.group(1), f"{sub}[{i}]")
        elif match := _DICT_TYPE.match(type_):
            item_type = match.group(1) or match.group(2)
            for k, item in value.items() if isinstance(value, Mapping) else ():
                unknown += unknown_fields(item, item_type, f"{sub}[{k}]")
        else:
            unknown += unknown_fields(value, type_, sub)
    return unknown


def _to_model(manifest: dict[str, Any]) -> V1Pod:
    """The manifest (API JSON form) as the client's ``V1Pod``."""
    pod = V1Pod.from_dict(manifest)
    if pod is None:  # (only for no manifest at all)
        raise ValueError("empty pod manifest")
    return pod
