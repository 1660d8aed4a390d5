"""The pure parts of the JupyterHub authenticator: group names to roles, `next` URLs, settings."""

from __future__ import annotations

import re

import pytest
from traitlets import TraitError

from grader_service.auth.jupyterhub import (
    DEFAULT_GROUP_PATTERN,
    JupyterHubAuthenticator,
    roles_from_groups,
    safe_next_url,
)


def test_default_pattern_takes_the_highest_role_per_lecture() -> None:
    groups = [
        "ml:student",
        "ml:tutor",
        "db:instructor",
        "ml:grader",
        "staff",
        "ML:tutor",
        "a:b:tutor",
        "x-:tutor",
    ]
    assert roles_from_groups(groups, re.compile(DEFAULT_GROUP_PATTERN)) == {"ml": "tutor", "db": "instructor"}


def test_custom_pattern_and_invalid_lecture_codes() -> None:
    pattern = re.compile(r"course-(?P<lecture>.+)-(?P<role>Student|Tutor|Instructor)s")
    groups = ["course-ml-Tutors", "course-ml-Students", "course-Bad Code-Tutors", "course-db-Admins"]
    assert roles_from_groups(groups, pattern) == {"ml": "tutor"}


def test_group_pattern_needs_both_named_groups() -> None:
    with pytest.raises(TraitError, match="role"):
        JupyterHubAuthenticator(group_pattern=r"(?P<lecture>\w+):\w+")


def test_cache_max_age_cannot_be_negative() -> None:
    with pytest.raises(TraitError):
        JupyterHubAuthenticator(cache_max_age=-1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/services/grader/api/v1/user", "/services/grader/api/v1/user"),
        ("/user/alice/lab?x=1#y", "/user/alice/lab?x=1#y"),
        (None, "D"),
        ("", "D"),
        ("relative", "D"),
        ("https://evil.example/", "D"),
        ("//evil.example", "D"),
        ("/\\evil.example", "D"),
        ("/\t/evil.example", "D"),
        ("/\x7f", "D"),
    ],
)
def test_safe_next_url(value: str | None, expected: str) -> None:
    assert safe_next_url(value, "D") == expected


def test_group_pattern_must_compile() -> None:
    with pytest.raises(TraitError, match="regular expression"):
        JupyterHubAuthenticator(group_pattern=r"(?P<lecture>")
