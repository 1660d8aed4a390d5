"""What the apiserver does to a pod body before storing it: decode, default, validate, patch.

* Decoding walks the body against the Kubernetes OpenAPI schema as shipped in the official client's
  models (``openapi_types``/``attribute_map``), so an unknown field is dropped with a ``Warning``
  header (or a 400 under ``fieldValidation=Strict``) and a wrong type is the 400 decoding error,
  exactly where a real server would say so. A typo in ``extra_pod_config`` must not pass silently
  here when it would be silently ignored on a cluster.
* Defaulting adds what the real server adds (``restartPolicy: Always``, grace period, default
  tolerations, ``imagePullPolicy`` from the tag, requests from limits, the service-account token
  volume unless ``automountServiceAccountToken: false``), so tests see real objects.
* Validation is a subset of ``ValidatePodCreate``/``ValidatePodUpdate`` with the real messages.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.client import models as k8s_models

from .fake_status import FieldError, StatusError, bad_request

# --------------------------------------------------------------------------------------------
# Names, labels, quantities
# --------------------------------------------------------------------------------------------
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex "
    "used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
ENV_NAME_MSG = (
    "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', "
    "and must not start with a digit"
)

_QUANTITY = re.compile(
    r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$"
)
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
QUANTITY_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def parse_quantity(value: str | int | float) -> Decimal:
    """A resource quantity (``500m``, ``1.5Gi``, ``2e3``) as a Decimal; ValueError if malformed."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(QUANTITY_ERROR)
    number, exponent, suffix = match.groups()
    try:
        result = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex already excludes this
        raise ValueError(QUANTITY_ERROR) from exc
    if exponent:
        return result * (Decimal(10) ** int(exponent[1:]))
    return result * _SUFFIXES[suffix or ""]


def _qualified_name_errors(path: str, key: str) -> list[FieldError]:
    prefix, slash, name = key.rpartition("/")
    errors = []
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        errors.append(FieldError("FieldValueInvalid", path, key, "prefix part " + DNS1123_SUBDOMAIN_MSG))
    if not name:
        errors.append(FieldError("FieldValueInvalid", path, key, "name part must be non-empty"))
    elif len(name) > 63:
        errors.append(
            FieldError("FieldValueInvalid", path, key, "name part must be no more than 63 characters")
        )
    elif not QUALIFIED_NAME.match(name):
        errors.append(FieldError("FieldValueInvalid", path, key, QUALIFIED_NAME_MSG))
    return errors


def label_errors(path: str, labels: dict[str, str] | None) -> list[FieldError]:
    errors = []
    for key, value in (labels or {}).items():
        errors += _qualified_name_errors(path, key)
        if len(value) > 63:
            errors.append(
                FieldError("FieldValueInvalid", f"{path}", value, "must be no more than 63 characters")
            )
        elif not LABEL_VALUE.match(value):
            errors.append(FieldError("FieldValueInvalid", f"{path}", value, LABEL_VALUE_MSG))
    return errors


# --------------------------------------------------------------------------------------------
# Decoding against the client's models (the OpenAPI schema)
# --------------------------------------------------------------------------------------------
_QUANTITY_FIELDS = frozenset({"limits", "requests", "overhead", "sizeLimit", "storage"})
_GO_TYPES = {"str": "string", "int": "int64", "bool": "bool", "float": "float64", "datetime": "Time"}


@functools.cache
def _fields(model: str) -> dict[str, str]:
    cls = getattr(k8s_models, model)
    return {cls.attribute_map[attr]: type_ for attr, type_ in cls.openapi_types.items()}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Decoder:
    def __init__(self, root_model: str) -> None:
        self.root = root_model.removeprefix("V1")
        self.unknown: list[str] = []

    def fail(self, value: Any, path: str, type_: str) -> StatusError:
        go_type = _GO_TYPES.get(type_, type_.removeprefix("V1"))
        return bad_request(
            f'{self.root} in version "v1" cannot be handled as a {self.root}: json: cannot unmarshal '
            f"{_json_type(value)} into Go struct field {self.root}.{path} of type {go_type}"
        )

    def value(self, value: Any, type_: str, path: str, quantity: bool = False) -> Any:
        if type_.startswith("List["):
            if not isinstance(value, list):
                raise self.fail(value, path, "[]" + type_[5:-1].removeprefix("V1"))
            return [
                self.value(v, type_[5:-1], f"{path}[{i}]", quantity)
                for i, v in enumerate(value)
                if v is not None
            ]
        if type_.startswith("Dict[str, "):
            if not isinstance(value, dict):
                raise self.fail(value, path, "map[string]" + _GO_TYPES.get(type_[10:-1], type_[10:-1]))
            return {
                k: self.value(v, type_[10:-1], f"{path}", quantity) for k, v in value.items() if v is not None
            }
        if type_ in ("object", "bytes"):
            return value
        if type_ in ("str", "datetime"):
            if quantity:
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    raise self.fail(value, path, "Quantity")
                try:
                    parse_quantity(value)
                except ValueError as exc:
                    raise bad_request(
                        f'{self.root} in version "v1" cannot be handled as a {self.root}: {exc}'
                    ) from None
                return str(value)
            if not isinstance(value, str):
                raise self.fail(value, path, type_)
            return value
        if type_ == "int":
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(value, path, type_)
            return value
        if type_ == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(value, path, type_)
            return value
        if type_ == "bool":
            if not isinstance(value, bool):
                raise self.fail(value, path, type_)
            return value
        # A nested model.
        if not isinstance(value, dict):
            raise self.fail(value, path, type_)
        fields = _fields(type_)
        out = {}
        for key, item in value.items():
            if item is None:
                continue
            sub = f"{path}.{key}" if path else key
            if key not in fields:
                self.unknown.append(sub)
                continue
            out[key] = self.value(item, fields[key], sub, key in _QUANTITY_FIELDS)
        return out


def decode(body: Any, model: str = "V1Pod", strict: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Return ``(object without unknown fields, warnings)``; StatusError 400 when undecodable."""
    if not isinstance(body, dict):
        raise bad_request(f"Object 'Kind' is missing in '{str(body)[:80]}'")
    decoder = _Decoder(model)
    obj = decoder.value(body, model, "")
    if decoder.unknown and strict:
        raise bad_request(
            "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in decoder.unknown)
        )
    return obj, [f'unknown field "{u}"' for u in decoder.unknown]


# --------------------------------------------------------------------------------------------
# Defaults (pkg/apis/core/v1/defaults.go plus admission plugins a cluster runs)
# --------------------------------------------------------------------------------------------
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def default_pull_policy(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if "@" in image:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def _default_container(container: dict[str, Any]) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    if container.get("image"):
        container.setdefault("imagePullPolicy", default_pull_policy(container["image"]))
    resources = container.setdefault("resources", {})
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for name, value in limits.items():
            requests.setdefault(name, value)
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")


def qos_class(spec: dict[str, Any]) -> str:
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        if limits or requests:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in limits or parse_quantity(requests.get(name, limits[name])) != parse_quantity(
                limits[name]
            ):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def apply_pod_defaults(pod: dict[str, Any], random_suffix: Callable[[int], str]) -> None:
    """Mutate ``pod`` the way defaulting and the standard admission chain do on create."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec["serviceAccount"] = spec["serviceAccountName"]
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        _default_container(c)
    for volume in spec.get("volumes") or []:
        if "emptyDir" in volume and volume["emptyDir"] is None:
            volume["emptyDir"] = {}
    # DefaultTolerationSeconds admission.
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )
    # ServiceAccount admission: project the API token unless the pod opts out.
    if spec.get("automountServiceAccountToken", True):
        volume_name = "kube-api-access-" + random_suffix(5)
        spec.setdefault("volumes", []).append(
            {
                "name": volume_name,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                    }
                                ]
                            }
                        },
                    ],
                },
            }
        )
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            mounts = c.setdefault("volumeMounts", [])
            if not any(m.get("mountPath") == TOKEN_MOUNT_PATH for m in mounts):
                mounts.append({"name": volume_name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH})
    pod["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}


# --------------------------------------------------------------------------------------------
# Validation (a faithful subset of pkg/apis/core/validation)
# --------------------------------------------------------------------------------------------
_RESTART_POLICIES = ["Always", "OnFailure", "Never"]
_PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
_DNS_POLICIES = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
_TOLERATION_OPS = ["Equal", "Exists"]
_TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]
_SECCOMP_TYPES = ["Localhost", "RuntimeDefault", "Unconfined"]
_VOLUME_SOURCES = (
    "emptyDir",
    "persistentVolumeClaim",
    "hostPath",
    "configMap",
    "secret",
    "projected",
    "downwardAPI",
    "nfs",
    "csi",
    "ephemeral",
    "image",
)
MAX_INT32 = 2147483647


def _validate_meta(meta: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    name = meta.get("name", "")
    if not name:
        errors.append(
            FieldError("FieldValueRequired", "metadata.name", detail="name or generateName is required")
        )
    elif len(name) > 253:
        errors.append(
            FieldError("FieldValueInvalid", "metadata.name", name, "must be no more than 253 characters")
        )
    elif not DNS1123_SUBDOMAIN.match(name):
        errors.append(FieldError("FieldValueInvalid", "metadata.name", name, DNS1123_SUBDOMAIN_MSG))
    errors += label_errors("metadata.labels", meta.get("labels"))
    annotations = meta.get("annotations") or {}
    for key in annotations:
        errors += _qualified_name_errors("metadata.annotations", key.lower())
    if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
        errors.append(
            FieldError(
                "FieldValueTooLong", "metadata.annotations", detail="may not be more than 262144 bytes"
            )
        )
    return errors


def _validate_resources(path: str, resources: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for kind, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            if parse_quantity(value) < 0:
                errors.append(
                    FieldError(
                        "FieldValueInvalid",
                        f"{path}.{kind}[{name}]",
                        str(value),
                        "must be greater than or equal to 0",
                    )
                )
    for name, value in requests.items():
        if name in limits and parse_quantity(value) > parse_quantity(limits[name]):
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    f"{path}.requests",
                    str(value),
                    f"must be less than or equal to {name} limit of {limits[name]}",
                )
            )
    return errors


def _validate_container(path: str, c: dict[str, Any], volumes: set[str], names: set[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    name = c.get("name", "")
    if not name:
        errors.append(FieldError("FieldValueRequired", f"{path}.name"))
    elif not DNS1123_LABEL.match(name) or len(name) > 63:
        errors.append(FieldError("FieldValueInvalid", f"{path}.name", name, DNS1123_LABEL_MSG))
    elif name in names:
        errors.append(FieldError("FieldValueDuplicate", f"{path}.name", name))
    names.add(name)
    image = c.get("image", "")
    if not image:
        errors.append(FieldError("FieldValueRequired", f"{path}.image"))
    elif image != image.strip():
        errors.append(
            FieldError(
                "FieldValueInvalid", f"{path}.image", image, "must not have leading or trailing whitespace"
            )
        )
    policy = c.get("imagePullPolicy")
    if policy is not None and policy not in _PULL_POLICIES:
        errors.append(
            FieldError("FieldValueNotSupported", f"{path}.imagePullPolicy", policy, supported=_PULL_POLICIES)
        )
    for i, env in enumerate(c.get("env") or []):
        env_name = env.get("name", "")
        if not env_name:
            errors.append(FieldError("FieldValueRequired", f"{path}.env[{i}].name"))
        elif not ENV_NAME.match(env_name):
            errors.append(FieldError("FieldValueInvalid", f"{path}.env[{i}].name", env_name, ENV_NAME_MSG))
        if "value" in env and "valueFrom" in env and env["value"]:
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    f"{path}.env[{i}].valueFrom",
                    "",
                    "may not be specified when `value` is not empty",
                )
            )
    mount_paths: set[str] = set()
    for i, mount in enumerate(c.get("volumeMounts") or []):
        mpath = f"{path}.volumeMounts[{i}]"
        if not mount.get("name"):
            errors.append(FieldError("FieldValueRequired", f"{mpath}.name"))
        elif mount["name"] not in volumes:
            errors.append(FieldError("FieldValueNotFound", f"{mpath}.name", mount["name"]))
        mount_path = mount.get("mountPath", "")
        if not mount_path:
            errors.append(FieldError("FieldValueRequired", f"{mpath}.mountPath"))
        elif mount_path in mount_paths:
            errors.append(FieldError("FieldValueInvalid", f"{mpath}.mountPath", mount_path, "must be unique"))
        mount_paths.add(mount_path)
        sub_path = mount.get("subPath", "")
        if sub_path:
            if sub_path.startswith("/"):
                errors.append(
                    FieldError("FieldValueInvalid", f"{mpath}.subPath", sub_path, "must be a relative path")
                )
            elif ".." in sub_path.split("/"):
                errors.append(
                    FieldError("FieldValueInvalid", f"{mpath}.subPath", sub_path, "must not contain '..'")
                )
        if sub_path and mount.get("subPathExpr"):
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    f"{mpath}.subPathExpr",
                    mount["subPathExpr"],
                    "subPathExpr and subPath are mutually exclusive",
                )
            )
    errors += _validate_resources(f"{path}.resources", c.get("resources") or {})
    errors += _validate_security_context(f"{path}.securityContext", c.get("securityContext") or {})
    return errors


def _validate_security_context(path: str, sc: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        if key in sc and not 0 <= sc[key] <= MAX_INT32:
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    f"{path}.{key}",
                    sc[key],
                    f"must be between 0 and {MAX_INT32}, inclusive",
                )
            )
    profile = sc.get("seccompProfile")
    if profile is not None:
        kind = profile.get("type")
        if kind not in _SECCOMP_TYPES:
            errors.append(
                FieldError(
                    "FieldValueNotSupported",
                    f"{path}.seccompProfile.type",
                    kind or "",
                    supported=_SECCOMP_TYPES,
                )
            )
        elif kind == "Localhost" and not profile.get("localhostProfile"):
            errors.append(
                FieldError(
                    "FieldValueRequired",
                    f"{path}.seccompProfile.localhostProfile",
                    detail="must be set when seccomp type is Localhost",
                )
            )
    if sc.get("privileged") and sc.get("allowPrivilegeEscalation") is False:
        errors.append(
            FieldError(
                "FieldValueInvalid",
                f"{path}",
                "",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            )
        )
    return errors


def validate_pod(pod: dict[str, Any]) -> list[FieldError]:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    errors = _validate_meta(meta)
    volumes: set[str] = set()
    for i, volume in enumerate(spec.get("volumes") or []):
        vpath = f"spec.volumes[{i}]"
        name = volume.get("name", "")
        if not name:
            errors.append(FieldError("FieldValueRequired", f"{vpath}.name"))
        elif not DNS1123_LABEL.match(name) or len(name) > 63:
            errors.append(FieldError("FieldValueInvalid", f"{vpath}.name", name, DNS1123_LABEL_MSG))
        elif name in volumes:
            errors.append(FieldError("FieldValueDuplicate", f"{vpath}.name", name))
        volumes.add(name)
        sources = [s for s in _VOLUME_SOURCES if s in volume]
        if not sources:
            errors.append(FieldError("FieldValueRequired", vpath, detail="must specify a volume type"))
        elif len(sources) > 1:
            errors.append(
                FieldError(
                    "FieldValueForbidden",
                    f"{vpath}.{sources[1]}",
                    detail="may not specify more than 1 volume type",
                )
            )
        if "persistentVolumeClaim" in volume and not volume["persistentVolumeClaim"].get("claimName"):
            errors.append(FieldError("FieldValueRequired", f"{vpath}.persistentVolumeClaim.claimName"))
    containers = spec.get("containers") or []
    if not containers:
        errors.append(FieldError("FieldValueRequired", "spec.containers"))
    names: set[str] = set()
    for i, c in enumerate(spec.get("initContainers") or []):
        errors += _validate_container(f"spec.initContainers[{i}]", c, volumes, names)
    for i, c in enumerate(containers):
        errors += _validate_container(f"spec.containers[{i}]", c, volumes, names)
    policy = spec.get("restartPolicy")
    if policy not in _RESTART_POLICIES:
        errors.append(
            FieldError(
                "FieldValueNotSupported", "spec.restartPolicy", policy or "", supported=_RESTART_POLICIES
            )
        )
    if spec.get("dnsPolicy") not in _DNS_POLICIES:
        errors.append(
            FieldError(
                "FieldValueNotSupported",
                "spec.dnsPolicy",
                spec.get("dnsPolicy") or "",
                supported=_DNS_POLICIES,
            )
        )
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and not 1 <= deadline <= MAX_INT32:
        errors.append(
            FieldError(
                "FieldValueInvalid",
                "spec.activeDeadlineSeconds",
                deadline,
                f"must be between 1 and {MAX_INT32}, inclusive",
            )
        )
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and grace < 0:
        errors.append(
            FieldError(
                "FieldValueInvalid",
                "spec.terminationGracePeriodSeconds",
                grace,
                "must be greater than or equal to 0",
            )
        )
    errors += label_errors("spec.nodeSelector", spec.get("nodeSelector"))
    for i, t in enumerate(spec.get("tolerations") or []):
        tpath = f"spec.tolerations[{i}]"
        op = t.get("operator", "Equal")
        if op not in _TOLERATION_OPS:
            errors.append(
                FieldError("FieldValueNotSupported", f"{tpath}.operator", op, supported=_TOLERATION_OPS)
            )
        if op == "Exists" and t.get("value"):
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    f"{tpath}.operator",
                    t["value"],
                    "value must be empty when `operator` is 'Exists'",
                )
            )
        if not t.get("key") and op != "Exists":
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    f"{tpath}.operator",
                    op,
                    'operator must be Exists when `key` is empty, which means "match all values and all keys"',
                )
            )
        if t.get("effect") and t["effect"] not in _TAINT_EFFECTS:
            errors.append(
                FieldError("FieldValueNotSupported", f"{tpath}.effect", t["effect"], supported=_TAINT_EFFECTS)
            )
        if t.get("tolerationSeconds") is not None and t.get("effect") != "NoExecute":
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    f"{tpath}.effect",
                    t.get("effect", ""),
                    "effect must be 'NoExecute' when `tolerationSeconds` is set",
                )
            )
    errors += _validate_security_context("spec.securityContext", spec.get("securityContext") or {})
    for i, secret in enumerate(spec.get("imagePullSecrets") or []):
        if not secret.get("name"):
            errors.append(FieldError("FieldValueRequired", f"spec.imagePullSecrets[{i}].name"))
    return errors


def _without_mutable(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec.pop("activeDeadlineSeconds", None)
    spec.pop("tolerations", None)
    spec.pop("terminationGracePeriodSeconds", None)  # may be set by graceful deletion
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        c.pop("image", None)
    return spec


def validate_pod_update(old: dict[str, Any], new: dict[str, Any]) -> list[FieldError]:
    """``ValidatePodUpdate``: metadata rules plus the small set of mutable spec fields."""
    errors = _validate_meta(new.get("metadata") or {})
    for key in ("name", "namespace", "uid", "creationTimestamp"):
        if (old["metadata"].get(key)) != (new.get("metadata") or {}).get(key):
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    f"metadata.{key}",
                    (new.get("metadata") or {}).get(key, ""),
                    "field is immutable",
                )
            )
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if _without_mutable(old_spec) != _without_mutable(new_spec):
        errors.append(
            FieldError(
                "FieldValueForbidden",
                "spec",
                detail="pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
                "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                "(allow it to be set to 1 if it was previously negative)",
            )
        )
    old_deadline, new_deadline = old_spec.get("activeDeadlineSeconds"), new_spec.get("activeDeadlineSeconds")
    if old_deadline is not None and (new_deadline is None or new_deadline > old_deadline):
        errors.append(
            FieldError(
                "FieldValueInvalid",
                "spec.activeDeadlineSeconds",
                new_deadline,
                "must be less than or equal to previous value",
            )
        )
    return errors


# --------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# patchMergeKey of the list fields a pod has (from the Go struct tags).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "resourceClaims": "name",
}
_PRIMITIVE_MERGE = {"finalizers"}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch for the pod's fields: merge-keyed lists, ``$patch`` directives."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field_name = key.split("/", 1)[1]
            result[field_name] = [v for v in result.get(field_name, []) if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in _MERGE_KEYS:
            result[key] = _merge_keyed_list(result.get(key) or [], value, _MERGE_KEYS[key])
        elif isinstance(value, list) and key in _PRIMITIVE_MERGE:
            merged = list(result.get(key) or [])
            merged += [v for v in value if v not in merged]
            result[key] = merged
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_keyed_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {key}")
        index = next(
            (i for i, cur in enumerate(result) if isinstance(cur, dict) and cur.get(key) == item[key]), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f'invalid JSON pointer "{path}"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test, move, copy)."""
    doc = copy.deepcopy(target)
    for op in operations:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind == "test":
                if _resolve(doc, parts) != op.get("value"):
                    raise StatusError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an error in our "
                        f"request: testing value {op.get('path')} failed",
                    )
                continue
            if kind in ("move", "copy"):
                value = copy.deepcopy(_resolve(doc, _pointer(op["from"])))
                if kind == "move":
                    doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
                kind, op = "add", {"value": value}
            else:
                value = copy.deepcopy(op.get("value"))
            if not parts:
                if kind in ("add", "replace"):
                    doc = value
                    continue
                raise KeyError("")
            parent, last = _resolve(doc, parts[:-1]), parts[-1]
            if kind == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if last == "-" else int(last), value)
                else:
                    parent[last] = value
            elif kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif kind == "replace":
                if isinstance(parent, list):
                    parent[int(last)] = value
                else:
                    if last not in parent:
                        raise KeyError(last)
                    parent[last] = value
            else:
                raise bad_request(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise StatusError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {kind} operation does not "
                f'apply: doc is missing path: "{op.get("path", "")}": {exc}',
            ) from None
    return doc
