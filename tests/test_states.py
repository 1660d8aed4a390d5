"""The vocabularies of `grader_service.states` are the ones the API documents and accepts."""

from __future__ import annotations

from typing import Any

import yaml

from grader_service import states
from grader_service.api.spec import SPEC_PATH

# Enumerations in the spec that are no stored vocabulary: answers and query switches.
NOT_VOCABULARIES = [
    ["ok"],
    ["ok", "degraded"],
    ["ok", "busy", "unavailable"],
    ["source", "release"],
    ["json", "csv"],
]
# Vocabularies of grading internals: the API never takes or shows them as a field of their own.
# TestVisibility: a value inside a command grading's gradebook, which the spec leaves free-form.
INTERNAL = {states.StepKind, states.KernelOutcome, states.TestVisibility}


def enums(node: Any) -> list[list[str]]:
    if isinstance(node, dict):
        found = [node["enum"]] if isinstance(node.get("enum"), list) else []
        return found + [e for value in node.values() for e in enums(value)]
    if isinstance(node, list):
        return [e for value in node for e in enums(value)]
    return []


def test_every_enumeration_in_the_spec_is_a_vocabulary_and_every_vocabulary_is_documented() -> None:
    vocabularies = [v for v in vars(states).values() if isinstance(v, type) and issubclass(v, states.StrEnum)]
    vocabularies = [v for v in vocabularies if v is not states.StrEnum]
    values = {v: [m.value for m in v] for v in vocabularies}
    documented = enums(yaml.safe_load(SPEC_PATH.read_text()))
    assert documented  # the spec was read
    for listed in documented:
        assert listed in values.values() or listed in NOT_VOCABULARIES, listed
    missing = [v.__name__ for v in vocabularies if v not in INTERNAL and values[v] not in documented]
    assert missing == []


def test_roles_rank_in_order_and_unknown_values_rank_nothing() -> None:
    ranks = [states.role_rank(r) for r in ("student", "tutor", "instructor")]
    assert ranks == [1, 2, 3]
    for other in (None, "", "admin", "Student", ["student"], {"role": "tutor"}, 2):
        assert states.role_rank(other) == 0
        assert states.member_of(states.RoleName, other) is None
    assert states.member_of(states.RoleName, "tutor") is states.RoleName.TUTOR
