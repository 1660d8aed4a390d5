"""CSV exports: text a spreadsheet would run as a formula is neutralised; numbers stay numbers."""

from __future__ import annotations

import csv
import io

import pytest

from grader_service.api.csv_export import FORMULA_PREFIXES, spreadsheet_safe, to_csv

from .conftest import World

# Each prefix a spreadsheet reads as the start of a formula, in a realistic payload.
HOSTILE = {
    "=": "=1+2",
    "+": "+1+2",
    "-": "-2+3",
    "@": "@SUM(1,2)",
    "\t": "\t=1+2",
    "\r": "\r=1+2",
}


def test_every_formula_prefix_is_covered() -> None:
    assert set(HOSTILE) == set(FORMULA_PREFIXES)


@pytest.mark.parametrize("prefix", list(HOSTILE))
def test_text_starting_a_formula_is_quoted(prefix: str) -> None:
    text = HOSTILE[prefix]
    assert spreadsheet_safe(text) == "'" + text
    [header, row] = list(csv.reader(io.StringIO(to_csv(["user", "n"], [{"user": text, "n": 1}]), newline="")))
    assert header == ["user", "n"] and row == ["'" + text, "1"]


def test_numbers_stay_numbers_and_plain_text_is_untouched() -> None:
    # Numbers are the service's own values: a negative one is data, not a formula.
    assert spreadsheet_safe(-1.5) == -1.5 and spreadsheet_safe(-3) == -3 and spreadsheet_safe(0.0) == 0.0
    assert spreadsheet_safe(True) is True and spreadsheet_safe(None) is None
    # Text that merely looks like a number is still text, and still quoted.
    assert spreadsheet_safe("-1") == "'-1"
    assert spreadsheet_safe("alice") == "alice" and spreadsheet_safe("a=b") == "a=b"
    text = to_csv(["score", "late_seconds", "name"], [{"score": -1.5, "late_seconds": -2, "name": "x"}])
    assert text.splitlines()[1] == "-1.5,-2,x"


def test_a_hostile_user_name_lands_quoted_in_the_scores_csv(world: World) -> None:
    admin = world.client("admin")
    names = ["=1+2", "+1+2", "-2+3", "@SUM(1,2)"]
    for name in names:
        assert admin.put(f"lectures/ml/roles/{name}", json={"role": "student"}).status_code == 201
        world.tokens[name] = world.service.token(name)
        r = world.submit(name)
        assert r.status_code == 201, r.text
    r = world.client("tutor").get("lectures/ml/assignments/tiny/scores", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text, newline="")))
    users = {row["user"] for row in rows}
    for name in names:
        assert "'" + name in users and name not in users
    for row in rows:
        for value in row.values():
            assert not value.startswith(FORMULA_PREFIXES), row
        float(row["max_score"])  # numeric columns are still plain numbers
    # The JSON form is data for programs: names as they are.
    items = world.client("tutor").get("lectures/ml/assignments/tiny/scores").json()["items"]
    assert set(names) <= {item["user"] for item in items}
