"""Database engine, sessions and migrations.

The schema is owned by Alembic. The service upgrades the embedded SQLite database on
start; a shared server database (PostgreSQL) is only upgraded when an admin asks, because
other replicas may still be running the old code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from alembic import command

# Seconds a new PostgreSQL connection may take before it fails (libpq's connect_timeout).
CONNECT_TIMEOUT = 5


def alembic_dir() -> Path:
    """The migrations: beside the package in a checkout, under share/ when installed."""
    checkout = Path(__file__).resolve().parent.parent / "alembic"
    if (checkout / "env.py").exists():
        return checkout
    return Path(sys.prefix) / "share" / "grader-service" / "alembic"


def make_engine(db_url: str, echo: bool = False, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """An engine whose pool never waits: an exhausted pool raises `sqlalchemy.exc.TimeoutError` at once.

    Checkouts are synchronous; on the event loop, a checkout that waited for a connection would stop
    every request, the health check and grading for as long as it waited. Request handlers wait for a
    free connection asynchronously instead (`dbpool.ConnectionGate`).
    """
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": 0}
    if db_url.startswith("sqlite"):
        if ":memory:" in db_url or db_url.rstrip("/") == "sqlite:":
            pool = {}  # an in-memory database lives in one connection: SQLAlchemy picks its own pool
        engine = create_engine(db_url, echo=echo, connect_args={"timeout": 30}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A connection attempt runs on the event loop too: bound it when the server does not answer.
    postgres = make_url(db_url).get_backend_name() == "postgresql"
    connect_args = (
        {"connect_timeout": CONNECT_TIMEOUT} if postgres and "connect_timeout" not in db_url else {}
    )
    return create_engine(db_url, echo=echo, pool_pre_ping=True, connect_args=connect_args, **pool)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers proceed while a writer commits; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success and rolled back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(db_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(alembic_dir()))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise RuntimeError(f"No migrations in {alembic_dir()}: the installation is incomplete")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations on the engine's database (reusing its connection).

    On SQLite, foreign keys are off meanwhile: a migration that changes a constraint copies the table
    and drops the old one, and dropping a table with foreign keys on deletes the rows that refer to
    it (ON DELETE CASCADE). The pragma only takes effect outside a transaction; the references are
    checked before the migration commits.
    """
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(
                            f"The migration left rows that refer to missing ones: {broken[:5]}"
                        )
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")
