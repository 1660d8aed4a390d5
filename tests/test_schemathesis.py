"""schemathesis against the served OpenAPI description, on the real service (SQLite and PostgreSQL).

Every operation gets generated requests, valid and invalid, sent as an admin and as a student: each
answer must be documented in the spec (status, content type, body schema), never a 5xx; invalid
input must be refused, valid input accepted. Path and query parameters are either generated or
point at real objects (the lecture, the released assignment, real submission and run ids), so the
handlers behind the lookups are reached too. A fixed seed and a bounded number of examples keep
the run repeatable and short; GRADER_SCHEMATHESIS_EXAMPLES=200 runs deeper by hand.
"""

from __future__ import annotations

import os
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .conftest import World
from .grading_utils import wait_graded

MAX_EXAMPLES = int(os.environ.get("GRADER_SCHEMATHESIS_EXAMPLES", "25"))
SEED = 20261201

# Rules the schema cannot express (between fields, or on file contents) make some schema-valid
# requests 400 or 422; each is stated in the operation's description in the spec. For these
# operations, those statuses count as accepting valid data.
CROSS_FIELD_RULES = {
    ("/events", "GET"): (400,),  # ?submission= or ?lecture=&assignment=
    ("/lectures/{code}/assignments", "POST"): (400,),  # late_until needs due_date, not before it
    ("/lectures/{code}/assignments/{name}", "PATCH"): (400, 422),  # the same; release validation
    ("/lectures/{code}/assignments/{name}/files", "PUT"): (400, 422),  # upload contents
    ("/lectures/{code}/assignments/{name}/submissions", "POST"): (400, 422),  # upload contents
    ("/lectures/{code}/assignments/{name}/submissions/{id}", "PATCH"): (400,),  # manual_score <= max_score
    # late_until not before due_date; the user a student, not a tutor or instructor
    ("/lectures/{code}/assignments/{name}/extensions/{user}", "PUT"): (400,),
    # grade_ids are the submission's cells; points at most the cell's max
    ("/lectures/{code}/assignments/{name}/submissions/{id}/grades", "PUT"): (422,),
}
ACCEPTED = (401, 403, 404, 409, 429)


def config_for(token: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"token {token}"},
            "request-timeout": 30,
            # Unknown query parameters are ignored (as most HTTP APIs do), not refused.
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "database": "none",
                "deterministic": True,
                "allow-extra-parameters": False,
            },
        }
    )


def is_positive(case: schemathesis.Case, location: str) -> bool:
    """Whether schemathesis generated this part of the case to be valid."""
    info = case.meta.components.get(ParameterLocation(location)) if case.meta else None
    return info is None or info.mode == GenerationMode.POSITIVE


def real_objects(world: World) -> dict[str, list[Any]]:
    """Values of real objects for each parameter name, besides whatever schemathesis generates."""
    ids = []
    for who in ("student", "other_student", "tutor"):
        r = world.submit(who)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    for submission_id in ids:
        wait_graded(world.client("tutor"), submission_id)
    run = world.client("tutor").post(f"lectures/{world.lecture}/assignments/{world.released}/grading-runs")
    assert run.status_code == 201, run.text
    return {
        "code": [world.lecture],
        "name": [world.released, world.unreleased],
        "id": [*ids, run.json()["id"]],
        "submission": ids,
        "user": [world.names["student"]],
    }


@pytest.fixture(scope="module")
def real(world: World) -> dict[str, list[Any]]:
    return real_objects(world)


@pytest.fixture(scope="module", params=["admin", "student"])
def api_schema(request: pytest.FixtureRequest, world: World, real: dict[str, list[Any]]) -> Any:
    schema = schemathesis.openapi.from_url(
        world.service.api + "openapi.yaml", config=config_for(world.tokens[request.param])
    )

    def mixed(values: dict[str, Any] | None, names: tuple[str, ...]) -> st.SearchStrategy[Any]:
        if not isinstance(values, dict):
            return st.just(values)
        return st.fixed_dictionaries(
            {
                key: st.sampled_from([value, *real[key]]) if key in names and key in real else st.just(value)
                for key, value in values.items()
            }
        )

    @schema.hook
    def flatmap_case(context: Any, case: schemathesis.Case) -> Any:
        # Only the valid (positive) parts of a case: a real value in a part meant to be invalid
        # would make schemathesis expect a refusal of a valid request. Role paths keep generated
        # user names: granting or revoking real users' roles would change who may do what for the
        # rest of the run. Event streams of an assignment last until the client leaves, so events
        # get real submission ids only (their streams end: those submissions are graded).
        path_names = ("code", "name", "id") if "user" not in (case.path_parameters or {}) else ("code",)
        path = (
            mixed(case.path_parameters, path_names)
            if is_positive(case, "path")
            else st.just(case.path_parameters)
        )
        query = (
            mixed(case.query, ("submission", "user")) if is_positive(case, "query") else st.just(case.query)
        )

        def apply(values: tuple[Any, Any]) -> schemathesis.Case:
            case.path_parameters, case.query = values
            return case

        return st.tuples(path, query).map(apply)

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_api_conforms_to_its_spec(case: schemathesis.Case) -> None:
    extra = CROSS_FIELD_RULES.get((case.operation.path, case.method.upper()))
    if extra is None:
        case.call_and_validate()
        return
    response = case.call()
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    if case.meta is not None and case.meta.generation.mode.is_positive:
        status = response.status_code
        assert status < 300 or status in ACCEPTED + extra, (
            f"valid data refused: {case.method} {case.formatted_path}: {status} {response.text[:300]}"
        )
