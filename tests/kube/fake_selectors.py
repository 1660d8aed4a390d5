"""Label and field selectors with the apiserver's grammar and semantics.

Written out in full (not ``key=value`` only) because the executor and kubectl send real selectors:
``!=`` and ``notin`` also match objects *without* the key, a bare key means "exists", ``!key`` means
"does not exist", and an unknown pod field in a field selector is a 400 from the real server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .fake_status import StatusError, bad_request

_TOKEN_RE = re.compile(r"\s*(!=|==|=|!|\(|\)|,|>|<|[A-Za-z0-9._/\-]+)")
_OPERATORS = frozenset({"!", "!=", "==", "=", "(", ")", ",", ">", "<"})
_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return has and value in self.values
        if self.op in ("!=", "notin"):
            return not has or value not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("gt", "lt"):
            try:
                number = int(value) if has else None
            except ValueError:
                return False
            if number is None:
                return False
            limit = int(self.values[0])
            return number > limit if self.op == "gt" else number < limit
        raise AssertionError(self.op)


def _key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN_RE.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_NAME_RE.match(name))


def _value_ok(value: str) -> bool:
    return len(value) <= 63 and bool(_VALUE_RE.match(value))


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``labelSelector``; a syntax error is the 400 the real server answers."""
    if not text or not text.strip():
        return []
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match:
            if text[pos:].strip() == "":
                break
            raise bad_request(f"unable to parse requirement: found '{text[pos]}', expected: identifier")
        tokens.append(match.group(1))
        pos = match.end()

    reqs: list[Requirement] = []
    i = 0

    def fail(why: str) -> StatusError:
        return bad_request(f"unable to parse requirement: {why}")

    while i < len(tokens):
        negate = tokens[i] == "!"
        if negate:
            i += 1
        if i >= len(tokens) or tokens[i] in _OPERATORS:
            raise fail("found '', expected: identifier")
        key = tokens[i]
        if not _key_ok(key):
            raise fail(f'invalid label key "{key}": name part must consist of alphanumeric characters')
        i += 1
        if negate:
            reqs.append(Requirement(key, "!"))
        elif i >= len(tokens) or tokens[i] == ",":
            reqs.append(Requirement(key, "exists"))
        else:
            op = tokens[i]
            i += 1
            if op in ("=", "==", "!="):
                value = tokens[i] if i < len(tokens) and tokens[i] not in _OPERATORS else ""
                if value:
                    i += 1
                if not _value_ok(value):
                    raise fail(
                        f'invalid label value: "{value}": a valid label must be an empty string or '
                        "consist of alphanumeric characters, '-', '_' or '.'"
                    )
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            elif op in ("in", "notin"):
                if i >= len(tokens) or tokens[i] != "(":
                    raise fail(f"found '{tokens[i] if i < len(tokens) else ''}', expected: '('")
                i += 1
                values: list[str] = []
                while i < len(tokens) and tokens[i] != ")":
                    if tokens[i] != ",":
                        if not _value_ok(tokens[i]):
                            raise fail(f'invalid label value: "{tokens[i]}"')
                        values.append(tokens[i])
                    i += 1
                if i >= len(tokens):
                    raise fail("found '', expected: ')'")
                i += 1
                if not values:
                    raise fail("for 'in', 'notin' operators, values set can't be empty")
                reqs.append(Requirement(key, op, tuple(values)))
            elif op in (">", "<"):
                if i >= len(tokens) or not tokens[i].lstrip("-").isdigit():
                    raise fail("for 'Gt', 'Lt' operators, the value must be an integer")
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", (tokens[i],)))
                i += 1
            else:
                raise fail(f"found '{op}', expected: '=', '!=', '==', 'in', notin'")
        if i < len(tokens):
            if tokens[i] != ",":
                raise fail(f"found '{tokens[i]}', expected: ',' or 'end of string'")
            i += 1
    return reqs


def labels_match(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


# Field selectors supported for pods (pkg/registry/core/pod/strategy.go: PodToSelectableFields).
_POD_FIELDS: dict[str, tuple[str, ...]] = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "spec.nodeName": ("spec", "nodeName"),
    "spec.restartPolicy": ("spec", "restartPolicy"),
    "spec.schedulerName": ("spec", "schedulerName"),
    "spec.serviceAccountName": ("spec", "serviceAccountName"),
    "spec.hostNetwork": ("spec", "hostNetwork"),
    "status.phase": ("status", "phase"),
    "status.podIP": ("status", "podIP"),
    "status.nominatedNodeName": ("status", "nominatedNodeName"),
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str


def parse_field_selector(text: str | None) -> list[FieldRequirement]:
    if not text or not text.strip():
        return []
    reqs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        for op in ("!=", "==", "="):
            if op in part:
                name, value = part.split(op, 1)
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        name = name.strip()
        if name not in _POD_FIELDS:
            raise bad_request(f"field label not supported: {name}")
        reqs.append(FieldRequirement(name, "!=" if op == "!=" else "=", value.strip()))
    return reqs


def _pod_field(pod: dict[str, Any], name: str) -> str:
    section, key = _POD_FIELDS[name]
    value = (pod.get(section) or {}).get(key)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def fields_match(reqs: list[FieldRequirement], pod: dict[str, Any]) -> bool:
    for req in reqs:
        equal = _pod_field(pod, req.field) == req.value
        if equal != (req.op == "="):
            return False
    return True
