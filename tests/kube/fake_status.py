"""metav1.Status errors exactly as the real apiserver words them.

Clients branch on ``code`` and ``reason`` (the Python client raises ``ApiException`` with the
status code, kubectl prints ``Error from server (Reason): message``), and people read the message.
So the fake builds every error through these constructors, whose wording follows
k8s.io/apimachinery/pkg/api/errors and the apiserver's authorization filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class StatusError(Exception):
    """An error answered as a ``kind: Status`` body with an HTTP status code."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _details(resource: str, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": resource}
    if name:
        details["name"] = name
    return details


def _qualified(resource: str, name: str | None) -> str:
    return f'{resource} "{name}"' if name else resource


def unauthorized() -> StatusError:
    return StatusError(401, "Unauthorized", "Unauthorized")


def forbidden(
    *,
    user: str,
    verb: str,
    resource: str,
    subresource: str | None,
    namespace: str | None,
    name: str | None,
    api_group: str = "",
) -> StatusError:
    """403 as written by the apiserver's authorization filter (``forbiddenMessage``)."""
    full = f"{resource}/{subresource}" if subresource else resource
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    why = f'User "{user}" cannot {verb} resource "{full}" in API group "{api_group}" {where}'
    return StatusError(
        403, "Forbidden", f"{_qualified(resource, name)} is forbidden: {why}", _details(resource, name)
    )


def forbidden_admission(resource: str, name: str | None, why: str) -> StatusError:
    return StatusError(
        403, "Forbidden", f"{_qualified(resource, name)} is forbidden: {why}", _details(resource, name)
    )


def not_found(resource: str, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{resource} "{name}" not found', _details(resource, name))


def route_not_found() -> StatusError:
    return StatusError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(resource: str, name: str) -> StatusError:
    return StatusError(409, "AlreadyExists", f'{resource} "{name}" already exists', _details(resource, name))


def conflict(resource: str, name: str, why: str) -> StatusError:
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": {why}',
        _details(resource, name),
    )


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def gone(message: str) -> StatusError:
    return StatusError(410, "Expired", message)


def method_not_allowed(message: str) -> StatusError:
    return StatusError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json "
        f'(got "{content_type}")',
    )


@dataclass
class FieldError:
    """One entry of a field.ErrorList; ``body()`` is the text after ``<field>: ``."""

    type: str  # FieldValueRequired, FieldValueInvalid, ...
    field: str
    value: Any = None
    detail: str = ""
    supported: list[str] = field(default_factory=list)

    def body(self) -> str:
        if self.type == "FieldValueRequired":
            text = "Required value"
        elif self.type == "FieldValueInvalid":
            text = f"Invalid value: {_go_value(self.value)}"
        elif self.type == "FieldValueNotSupported":
            text = f"Unsupported value: {_go_value(self.value)}"
            if self.supported:
                text += ": supported values: " + ", ".join(f'"{s}"' for s in self.supported)
            return text
        elif self.type == "FieldValueDuplicate":
            text = f"Duplicate value: {_go_value(self.value)}"
        elif self.type == "FieldValueNotFound":
            text = f"Not found: {_go_value(self.value)}"
        elif self.type == "FieldValueForbidden":
            text = "Forbidden"
        elif self.type == "FieldValueTooLong":
            text = "Too long"
        else:
            text = "Internal error"
        if self.detail:
            text += f": {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def invalid(kind: str, name: str, errors: list[FieldError]) -> StatusError:
    """422 as ``apierrors.NewInvalid``: one error inline, several as ``[a, b]``."""
    text = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    details = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": e.type, "message": e.body(), "field": e.field} for e in errors],
    }
    return StatusError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', details)
