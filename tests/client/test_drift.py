"""Every operation of openapi.yaml has exactly one method in each client, and nothing else is called.

The spec is read from the service package in this repository, so a service change that adds, moves or
drops an endpoint fails here until the client follows.
"""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict

from grader_client import AsyncGraderClient, GraderClient, operations

from .conftest import spec_operations


def test_every_spec_operation_has_one_builder_and_no_builder_is_outside_the_spec() -> None:
    built = [(op.method, op.path) for op in operations.OPERATIONS.values()]
    assert len(built) == len(set(built)), "an operation is built twice"
    spec = spec_operations()
    assert sorted(spec - set(built)) == [], "operations in openapi.yaml without a client builder"
    assert sorted(set(built) - spec) == [], "client builders for operations not in openapi.yaml"


def _operations_used_by_methods(cls: type) -> dict[str, list[str]]:
    """For each builder in `operations`, the public methods of `cls` that call it."""
    tree = ast.parse(inspect.getsource(inspect.getmodule(cls)))
    (class_node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    used: dict[str, list[str]] = defaultdict(list)
    for node in class_node.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for sub in ast.walk(node):
            if (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.value, ast.Name)
                and sub.value.id == "operations"
            ):
                used[sub.attr].append(node.name)
    return used


def test_each_client_has_exactly_one_method_per_operation() -> None:
    for cls in (GraderClient, AsyncGraderClient):
        used = _operations_used_by_methods(cls)
        for name in operations.OPERATIONS:
            methods = sorted(set(used.get(name, [])))
            assert len(methods) == 1, (
                f"{cls.__name__}: operation {name} is called by {methods or 'no method'}"
            )
            assert not methods[0].startswith("_"), f"{cls.__name__}.{methods[0]} is private"
        unknown = set(used) - set(operations.OPERATIONS)
        assert not unknown, f"{cls.__name__} uses {unknown}, which are not registered operations"


def test_requests_are_only_sent_by_the_plumbing() -> None:
    """Methods send through `_send`/`_paginate`/`event_stream` only, so every path comes from a builder."""
    for cls in (GraderClient, AsyncGraderClient):
        tree = ast.parse(inspect.getsource(inspect.getmodule(cls)))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for sub in ast.walk(node):
                    if (
                        isinstance(sub, ast.Attribute)
                        and sub.attr == "_http"
                        and node.name
                        not in (
                            "__init__",
                            "_send",
                            "close",
                            "aclose",
                            "event_stream",
                        )
                    ):
                        raise AssertionError(f"{cls.__name__}.{node.name} uses the HTTP client directly")


def test_both_clients_offer_the_same_methods_with_the_same_parameters() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")
        }

    sync, asynchronous = public(GraderClient), public(AsyncGraderClient)
    assert set(sync) - {"close"} == set(asynchronous) - {"aclose"}
    for name in set(sync) - {"close"}:
        assert list(sync[name].parameters) == list(asynchronous[name].parameters), name


def test_a_call_without_an_operation_cannot_be_sent() -> None:
    call = operations.Call(operations.nothing)
    try:
        call.url  # noqa: B018
    except AssertionError:
        return
    raise AssertionError("a Call built outside @operation produced a URL")
