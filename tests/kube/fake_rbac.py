"""Bearer-token authentication and RBAC authorization for the fake apiserver.

The point is to test the Helm chart's Role against what the executor really calls: load the rendered
``Role``/``RoleBinding`` manifests, map a token to the bound ServiceAccount, and every request is
checked as RBAC does (apiGroups, resources incl. ``pods/log``, verbs, resourceNames, namespaces).
Members of ``system:masters`` may do everything, as on a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyRule:
    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ("",)
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, rule: dict[str, Any]) -> PolicyRule:
        return cls(
            verbs=tuple(rule.get("verbs") or ()),
            api_groups=tuple(rule.get("apiGroups") or ()),
            resources=tuple(rule.get("resources") or ()),
            resource_names=tuple(rule.get("resourceNames") or ()),
        )

    def allows(
        self, verb: str, api_group: str, resource: str, subresource: str | None, name: str | None
    ) -> bool:
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if "*" not in self.api_groups and api_group not in self.api_groups:
            return False
        full = f"{resource}/{subresource}" if subresource else resource
        if not (
            "*" in self.resources
            or full in self.resources
            or (subresource and f"*/{subresource}" in self.resources)
        ):
            return False
        # resourceNames cannot restrict create/list/watch/deletecollection (no name on the request).
        return not self.resource_names or (bool(name) and name in self.resource_names)


@dataclass
class _Grant:
    """Rules granted to a subject, cluster-wide (namespace None) or in one namespace."""

    subject_kind: str  # "User" or "Group"
    subject: str
    namespace: str | None
    rules: list[PolicyRule] = field(default_factory=list)


def service_account_user(namespace: str, name: str) -> User:
    return User(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
    )


class Authorizer:
    """Token table plus RBAC; all lookups are read-mostly and happen on the server's loop."""

    def __init__(self) -> None:
        self.tokens: dict[str, User] = {}
        self._grants: list[_Grant] = []
        self._roles: dict[tuple[str | None, str], list[PolicyRule]] = {}

    # -- authentication -------------------------------------------------------------------
    def add_token(self, token: str, user: User) -> None:
        self.tokens[token] = user

    def authenticate(self, authorization: str | None) -> User | None:
        # The scheme is case-insensitive, as in the apiserver (the in-cluster loader of the Python
        # client sends "bearer <token>").
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.tokens.get(token.strip())

    # -- authorization ----------------------------------------------------------------------
    def clear(self) -> None:
        self._grants.clear()
        self._roles.clear()

    def grant(
        self,
        subject: str,
        rules: Iterable[PolicyRule | dict[str, Any]],
        *,
        namespace: str | None = None,
        kind: str = "User",
    ) -> None:
        parsed = [r if isinstance(r, PolicyRule) else PolicyRule.from_manifest(r) for r in rules]
        self._grants.append(_Grant(kind, subject, namespace, parsed))

    def load_manifests(self, source: str | Path) -> None:
        """Apply rendered Role/ClusterRole/RoleBinding/ClusterRoleBinding documents (others ignored).

        ``source`` is YAML text or a path to a file with one or more documents, e.g. ``helm template``
        output. Bindings are resolved when loaded, so load roles before (or with) their bindings.
        """
        text = Path(source).read_text() if isinstance(source, Path) else source
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
        for doc in docs:
            kind = doc.get("kind")
            meta = doc.get("metadata") or {}
            if kind == "Role":
                self._roles[(meta.get("namespace") or "default", meta["name"])] = [
                    PolicyRule.from_manifest(r) for r in doc.get("rules") or []
                ]
            elif kind == "ClusterRole":
                self._roles[(None, meta["name"])] = [
                    PolicyRule.from_manifest(r) for r in doc.get("rules") or []
                ]
        for doc in docs:
            kind = doc.get("kind")
            if kind not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            meta = doc.get("metadata") or {}
            binding_ns = (meta.get("namespace") or "default") if kind == "RoleBinding" else None
            ref = doc["roleRef"]
            role_ns = binding_ns if ref["kind"] == "Role" else None
            rules = self._roles.get((role_ns, ref["name"]))
            if rules is None:
                # A binding to a missing role grants nothing, as in RBAC.
                continue
            for subject in doc.get("subjects") or []:
                if subject["kind"] == "ServiceAccount":
                    name = f"system:serviceaccount:{subject.get('namespace') or binding_ns}:{subject['name']}"
                    self.grant(name, rules, namespace=binding_ns)
                else:
                    self.grant(subject["name"], rules, namespace=binding_ns, kind=subject["kind"])

    def allowed(
        self,
        user: User,
        verb: str,
        api_group: str,
        resource: str,
        subresource: str | None,
        namespace: str | None,
        name: str | None,
    ) -> bool:
        if "system:masters" in user.groups:
            return True
        for grant in self._grants:
            if grant.subject_kind == "User" and grant.subject != user.name:
                continue
            if grant.subject_kind == "Group" and grant.subject not in user.groups:
                continue
            if grant.namespace is not None and grant.namespace != namespace:
                continue
            if any(r.allows(verb, api_group, resource, subresource, name) for r in grant.rules):
                return True
        return False
