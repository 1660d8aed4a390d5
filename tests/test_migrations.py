"""Alembic's head is exactly the models' schema, on SQLite and PostgreSQL; upgrades keep every row."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from alembic import command
from grader_service import db
from grader_service.orm import Base
from grader_service.orm.base import Vocabulary

from .postgres import create_database


def test_upgrade_head_matches_models(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True}),
            Base.metadata,
        )
    assert diff == []
    tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert tables == set(Base.metadata.tables)
    engine.dispose()


# --- 0003: CHECK constraints on every vocabulary column ------------------------------------------

_db_counter = itertools.count()
NOW = "2026-12-01 10:00:00"
# One row per table, written as 0002's schema knew them (plain SQL: the models are at head).
ROWS_0002 = [
    "INSERT INTO users (id, name, admin, created_at) VALUES (1, 'ann', false, '{now}')",
    "INSERT INTO users (id, name, admin, created_at) VALUES (2, 'ben', false, '{now}')",
    "INSERT INTO api_tokens (id, user_id, prefix, hashed, admin, created_at)"
    " VALUES (1, 1, 'abcdefgh', 'h1', false, '{now}')",
    "INSERT INTO lectures (id, code, name, state, created_at) VALUES (1, 'ml', 'ML', 'active', '{now}')",
    "INSERT INTO lectures (id, code, name, state, created_at) VALUES (2, 'db', 'DB', 'complete', '{now}')",
    "INSERT INTO roles (user_id, lecture_id, role, source) VALUES (1, 1, 'student', 'api')",
    "INSERT INTO roles (user_id, lecture_id, role, source) VALUES (2, 1, 'instructor', 'hub')",
    "INSERT INTO assignments (id, lecture_id, name, status, late_penalty, grading_policy, feedback_policy,"
    " settings, created_at) VALUES (1, 1, 'a1', 'released', 0.5, 'best', 'immediate', '{{}}', '{now}')",
    "INSERT INTO grading_runs (id, assignment_id, scope, created_at) VALUES (1, 1, 'all', '{now}')",
    "INSERT INTO submissions (id, assignment_id, user_id, commit_hash, submitted_at, late, late_seconds,"
    " auto_status, manual_status, feedback_status, status_detail)"
    " VALUES (1, 1, 1, 'c0ffee', '{now}', true, 12.5, 'graded', 'graded', 'generated', 'ok')",
    "INSERT INTO grading_jobs (id, submission_id, state, priority, attempts, run_id, created_at)"
    " VALUES (1, 1, 'succeeded', 10, 1, 1, '{now}')",
    "INSERT INTO grading_jobs (id, submission_id, state, priority, attempts, created_at)"
    " VALUES (2, 1, 'queued', 0, 0, '{now}')",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, empty database of each kind for one test (the test migrates it step by step)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'grader.sqlite'}"
    else:
        admin_url = request.getfixturevalue("postgres_admin_url")
        url = create_database(admin_url, f"grader_mig_{os.getpid()}_{next(_db_counter)}")
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


def vocabulary_columns() -> list[tuple[str, str, type[StrEnum]]]:
    """Every (table, column, vocabulary) of the models: the columns 0003 must constrain."""
    return [
        (table.name, column.name, column.type.vocabulary)
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, Vocabulary)
    ]


def tables_at(conn: Any) -> list[Any]:
    """The models' tables that the database has at its current revision (later ones add tables)."""
    present = set(inspect(conn).get_table_names())
    return [table for table in Base.metadata.sorted_tables if table.name in present]


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, of the columns the database has at its current revision (later
    ones add columns)."""
    with engine.connect() as conn:
        inspector = inspect(conn)
        dumped = {}
        for table in tables_at(conn):
            present = {column["name"] for column in inspector.get_columns(table.name)}
            # Untyped columns: a value of an older vocabulary reads back as it is.
            query = select(*[sa.column(c.name) for c in table.columns if c.name in present]).select_from(
                table
            )
            dumped[table.name] = sorted([tuple(row) for row in conn.execute(query)], key=repr)
        return dumped


def refused(engine: Engine, statement: str) -> bool:
    """Whether the database refuses the statement as a constraint violation (it is rolled back either way)."""
    with engine.connect() as conn:
        try:
            conn.execute(text(statement))
        except IntegrityError:
            return True
        finally:
            conn.rollback()
    return False


def test_0003_keeps_every_row_and_refuses_values_outside_the_vocabularies(empty_engine: Engine) -> None:
    engine = empty_engine
    db.upgrade(engine, "0002")
    with engine.begin() as conn:
        for row in ROWS_0002:
            conn.execute(text(row.format(now=NOW)))
    before = dump(engine)
    assert all(before.values())  # every table has a row to keep

    db.upgrade(engine, "0003")
    assert db.current_revision(engine) == "0003"
    assert dump(engine) == before  # nothing lost, not even rows that refer to copied tables

    db.upgrade(engine, "head")  # the lists as the latest revision left them (0006 renamed manual_status's)
    with engine.begin() as conn:  # a row for each table that later revisions add with a vocabulary column
        conn.execute(
            text(
                "INSERT INTO grades (submission_id, grade_id, notebook, kind, max_points, extra_credit,"
                f" needs_manual, updated_at) VALUES (1, 'q1', 'nb', 'test', 1, 0, false, '{NOW}')"
            )
        )
    columns = vocabulary_columns()
    assert {(t, c) for t, c, _ in columns} >= {("grading_jobs", "state"), ("submissions", "auto_status")}
    for table, column, vocabulary in columns:
        for bad in ("bogus", "", "Queued", "queued "):
            assert refused(engine, f"UPDATE {table} SET {column} = '{bad}'"), (table, column, bad)
        for member in vocabulary:  # the migration's lists hold every value the code writes
            assert not refused(engine, f"UPDATE {table} SET {column} = '{member.value}'"), (table, member)
    assert refused(
        engine,
        "INSERT INTO grading_jobs (id, submission_id, state, priority, attempts, created_at)"
        f" VALUES (99, 1, 'paused', 0, 0, '{NOW}')",
    )
    with engine.connect() as conn:  # reflected by name, as the models declare them
        for table in tables_at(conn):
            declared = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
            assert {c["name"] for c in inspect(conn).get_check_constraints(table.name)} == declared


def test_0003_downgrade_drops_the_constraints_and_keeps_the_rows(empty_engine: Engine) -> None:
    engine = empty_engine
    db.upgrade(engine, "0002")
    with engine.begin() as conn:
        for row in ROWS_0002:
            conn.execute(text(row.format(now=NOW)))
    written = dump(engine)
    db.upgrade(engine, "head")
    before = dump(engine)
    cfg = db.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    after = dump(engine)
    # Tables of later revisions go (they were empty); 0006 renamed manual_status values and back.
    assert set(before) - set(after) == {"extensions", "grades", "grade_changes"}
    assert after == written
    assert not refused(engine, "UPDATE grading_jobs SET state = 'paused'")


# --- 0004: indexes for the list endpoints of large courses -----------------------------------------


def index_columns(engine: Engine, table: str) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return {ix["name"]: ix["column_names"] for ix in inspect(conn).get_indexes(table)}


def test_0004_adds_the_list_indexes_keeps_the_rows_and_downgrades(empty_engine: Engine) -> None:
    engine = empty_engine
    db.upgrade(engine, "0003")
    with engine.begin() as conn:
        for row in ROWS_0002:
            conn.execute(text(row.format(now=NOW)))
    before = dump(engine)
    old = index_columns(engine, "submissions")
    assert old["ix_submissions_assignment_user"] == ["assignment_id", "user_id"]

    db.upgrade(engine, "0004")
    assert dump(engine) == before
    submissions = index_columns(engine, "submissions")
    assert submissions["ix_submissions_by_assignment"] == ["assignment_id", "id"]
    assert submissions["ix_submissions_by_assignment_user"] == ["assignment_id", "user_id", "id"]
    assert "ix_submissions_assignment_user" not in submissions  # a prefix of the new one: replaced
    assert index_columns(engine, "roles")["ix_roles_lecture_id"] == ["lecture_id"]

    cfg = db.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    assert index_columns(engine, "submissions") == old
    assert "ix_roles_lecture_id" not in index_columns(engine, "roles")
    assert dump(engine) == before


# --- 0005: per-student extensions ------------------------------------------------------------------


def test_0005_adds_extensions_unique_per_student_keeps_the_rows_and_downgrades(empty_engine: Engine) -> None:
    engine = empty_engine
    db.upgrade(engine, "0004")
    with engine.begin() as conn:
        for row in ROWS_0002:
            conn.execute(text(row.format(now=NOW)))
    before = dump(engine)
    assert "extensions" not in before

    db.upgrade(engine, "0005")
    after = dump(engine)
    assert after.pop("extensions") == [] and after == before
    insert = (
        "INSERT INTO extensions (assignment_id, user_id, due_date, created_at, updated_at)"
        f" VALUES (1, 1, '{NOW}', '{NOW}', '{NOW}')"
    )
    with engine.begin() as conn:
        conn.execute(text(insert))
    assert refused(engine, insert)  # one extension per student and assignment
    assert refused(engine, insert.replace("(1, 1,", "(1, 99,"))  # an unknown user

    cfg = db.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    assert dump(engine) == before


# --- 0006: per-cell grades, their history, the manual status not_needed/needed/done ----------------


OLD_GRADEBOOK = {
    "kind": "autograde",
    "score": 1.5,
    "notebooks": {
        "nb": {
            "cells": {
                "test_a": {"grade_id": "test_a", "kind": "test", "max_points": 2, "points": 1.5, "status": "passed"},
                "explain": {"grade_id": "explain", "kind": "manual", "max_points": 3, "points": None,
                            "status": "needs-manual"},
            }
        }
    },
}  # fmt: skip


def test_0006_renames_manual_statuses_adds_the_grade_tables_and_downgrades(empty_engine: Engine) -> None:
    engine = empty_engine
    db.upgrade(engine, "0005")
    with engine.begin() as conn:
        for row in ROWS_0002:
            conn.execute(text(row.format(now=NOW)))
        conn.execute(
            text(
                "INSERT INTO submissions (id, assignment_id, user_id, commit_hash, submitted_at, late,"
                " late_seconds, auto_status, manual_status, feedback_status)"
                f" VALUES (2, 1, 2, 'beef', '{NOW}', false, 0, 'graded', 'not_graded', 'none')"
            )
        )
        # Graded before 0006: its cells come from its gradebook (a test, and an answer waiting for a person).
        conn.execute(
            text(
                "INSERT INTO submissions (id, assignment_id, user_id, commit_hash, submitted_at, late,"
                " late_seconds, auto_status, manual_status, feedback_status, score, gradebook)"
                f" VALUES (3, 1, 2, 'cafe', '{NOW}', false, 0, 'graded', 'not_graded', 'none', 1.5, :book)"
            ),
            {"book": json.dumps(OLD_GRADEBOOK)},
        )
    before = dump(engine)
    db.upgrade(engine, "0006")
    with engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT id, manual_status FROM submissions")).all())
        versions = set(conn.execute(text("SELECT grades_version FROM submissions")).scalars())
        sums = dict(conn.execute(text("SELECT id, cell_score FROM submissions")).all())
        cells = conn.execute(
            text("SELECT grade_id, kind, auto_points, max_points, needs_manual FROM grades ORDER BY grade_id")
        ).all()
    assert statuses == {1: "done", 2: "not_needed", 3: "needed"} and versions == {0}
    assert sums == {1: None, 2: None, 3: 1.5}
    assert [tuple(c) for c in cells] == [
        ("explain", "manual", None, 3, True),
        ("test_a", "test", 1.5, 2, False),
    ]
    assert refused(engine, "UPDATE submissions SET manual_status = 'graded'")
    insert = (
        "INSERT INTO grades (submission_id, grade_id, notebook, kind, max_points, extra_credit, needs_manual,"
        f" updated_at) VALUES (1, 'q1', 'nb', 'manual', 2, 0, true, '{NOW}')"
    )
    with engine.begin() as conn:
        conn.execute(text(insert))
    assert refused(engine, insert)  # one row per cell and submission
    assert refused(engine, insert.replace("(1, 'q1'", "(3, 'explain'"))
    assert refused(engine, insert.replace("'q1'", "'q2'").replace("'manual'", "'essay'"))
    cfg = db.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":  # batch mode copies submissions: keep its jobs
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    assert dump(engine) == before


# --- 0007: assignment kinds ------------------------------------------------------------------------


def test_0007_makes_every_assignment_a_notebook_one_refuses_other_kinds_and_downgrades(
    empty_engine: Engine,
) -> None:
    engine = empty_engine
    db.upgrade(engine, "0005")
    with engine.begin() as conn:
        for row in ROWS_0002:
            conn.execute(text(row.format(now=NOW)))
    db.upgrade(engine, "0006")  # the rows as they are just before 0007 (0006 renames manual statuses)
    before = dump(engine)

    db.upgrade(engine, "0007")
    after = dump(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT kind FROM assignments")).scalars().all() == ["notebook"]
    assert {name: rows for name, rows in after.items() if name != "assignments"} == {
        name: rows for name, rows in before.items() if name != "assignments"
    }
    assert not refused(engine, "UPDATE assignments SET kind = 'command'")
    for bad in ("shell", "", "Command"):
        assert refused(engine, f"UPDATE assignments SET kind = '{bad}'")

    cfg = db.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    assert dump(engine) == before
