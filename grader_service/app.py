"""The grader-service application: configuration, subcommands, and the HTTP server.

`grader-service` serves; `grader-service migrate` upgrades the database; `grader-service token
create|list|revoke` manages standalone API tokens. Every subcommand reads the same config
file and options, so `-f`, `--data-dir` and `--db-url` mean the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import secrets
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from tornado import web
from traitlets import (
    Bool,
    Enum,
    Float,
    Instance,
    Int,
    Integer,
    TraitError,
    Unicode,
    default,
    observe,
    validate,
)
from traitlets.config import Application, catch_config_error
from traitlets.utils.importstring import import_item

from . import __version__, db, logs
from .auth import AUTHENTICATOR_ALIASES, Authenticator, Identity, TokenAuthenticator
from .auth.roles import sync_roles
from .autograding import EXECUTOR_ALIASES
from .autograding.announce import deliver_after_commit
from .autograding.events import EventBus, EventFeed
from .autograding.listener import PostgresListener, conninfo
from .autograding.local import LocalAutogradeExecutor
from .autograding.queue import enqueue_new
from .autograding.worker import Scheduler
from .dbpool import ConnectionGate
from .grades import record_manual_only
from .httpserver import GraderHTTPServer
from .metrics import Metrics
from .orm import ApiToken, Submission, User, utcnow
from .orm.api_token import PREFIX_LENGTH, hash_token, new_token
from .storage.git import RepoLocks
from .storage.layout import DataLayout

COMMON_ALIASES: dict[str, Any] = {
    "f": "GraderService.config_file",
    "config": "GraderService.config_file",
    "data-dir": "GraderService.data_dir",
    "db-url": "GraderService.db_url",
    "log-level": "Application.log_level",
    "log-format": "GraderService.log_output",
}

DB_URL_ENV = "GRADER_SERVICE_DB_URL"
METRICS_TOKEN_ENV = "GRADER_SERVICE_METRICS_TOKEN"


def optional_classes() -> list[type]:
    """Configurables of optional extras, documented when their dependencies are installed.

    Imported only for --help-all and --generate-config: importing jupyterhub costs about a second.
    """
    found: list[type] = []
    for path in AUTHENTICATOR_ALIASES["jupyterhub"], EXECUTOR_ALIASES["kube"]:
        with contextlib.suppress(ImportError):
            found.append(import_item(path))
    return found


class DatabaseOutOfDate(RuntimeError):
    pass


class GraderService(Application):
    """The grading service for Jupyter notebook assignments."""

    name = "grader-service"
    version = __version__
    description = "Grades Jupyter notebook submissions; runs standalone or as a JupyterHub service."
    examples = """
    grader-service                              # serve on 127.0.0.1:4010 with SQLite in ./grader-data
    grader-service -f grader_service_config.py  # serve with a config file
    grader-service --generate-config            # write a commented grader_service_config.py
    grader-service migrate                      # upgrade the database schema
    grader-service token create --user alice    # print a new API token for alice
    """

    aliases = {
        **COMMON_ALIASES,
        "ip": "GraderService.ip",
        "port": "GraderService.port",
        "base-url": "GraderService.base_url",
    }
    flags = {
        "generate-config": (
            {"GraderService": {"generate_config": True}},
            "Write a commented config file and exit.",
        ),
        "upgrade-db": ({"GraderService": {"upgrade_db": True}}, "Upgrade the database schema on start."),
        "debug": ({"Application": {"log_level": logging.DEBUG}}, "Log at debug level."),
    }
    subcommands = {
        "migrate": ("grader_service.app.MigrateCommand", "Upgrade the database schema to this version."),
        "token": ("grader_service.app.TokenCommand", "Create, list or revoke standalone API tokens."),
    }

    classes = [TokenAuthenticator, Scheduler, LocalAutogradeExecutor]

    config_file = Unicode(
        "grader_service_config.py",
        help="The config file to load. A missing default file is fine; a missing named file is an error.",
    ).tag(config=True)
    generate_config = Bool(False, help="Write a commented config file to config_file and exit.").tag(
        config=True
    )
    ip = Unicode("127.0.0.1", help="The address the HTTP server listens on.").tag(config=True)
    port = Integer(4010, help="The port the HTTP server listens on.").tag(config=True)
    base_url = Unicode(
        "/",
        help="URL prefix of the service, e.g. /services/grader/ under JupyterHub. The API is at <base_url>api/v1/.",
    ).tag(config=True)
    data_dir = Unicode(
        "grader-data",
        help="Directory for the SQLite database, git repositories, job directories and feedback.",
    ).tag(config=True)
    db_url = Unicode(
        help=f"SQLAlchemy database URL. Default: SQLite in the data dir. Env {DB_URL_ENV} overrides the default."
    ).tag(config=True)
    upgrade_db = Bool(
        None,
        allow_none=True,
        help="Upgrade the schema on start. Default (None): yes for SQLite, no for server databases, "
        "where other replicas may still run the old code: run `grader-service migrate` instead.",
    ).tag(config=True)
    executor_class = Unicode(
        "local",
        help="'local' (sandboxed subprocesses), 'kube' (a pod per job), or the import path of an executor.",
    ).tag(config=True)
    grading = Bool(True, help="Run grading workers in this process (off: only serve the API).").tag(
        config=True
    )
    authenticator_class = Unicode(
        "token",
        help="'token' (standalone API tokens), 'jupyterhub', or the import path of an Authenticator subclass.",
    ).tag(config=True)
    max_request_size = Integer(
        50 * 1024 * 1024, help="Largest accepted upload (submission or assignment files), in bytes."
    ).tag(config=True)
    max_extracted_size = Integer(
        200 * 1024 * 1024, help="Largest total size of the files in one upload after unzipping, in bytes."
    ).tag(config=True)
    max_files_per_upload = Integer(1000, help="Most files one upload may contain.").tag(config=True)
    max_uploads_per_user = Integer(
        3,
        help="Uploads (submissions, source files) one user may have in progress at once, in this process; "
        "one more is answered 429. Bounds what one user's slow or stalled uploads hold.",
    ).tag(config=True)
    body_spool_size = Integer(
        64 * 1024,
        help="Request bodies larger than this many bytes go to an unnamed temporary file in <data_dir>/tmp "
        "as they arrive, instead of staying in memory.",
    ).tag(config=True)
    header_timeout = Float(
        20.0,
        help="Seconds a new connection has to send its complete request headers; then it is closed.",
    ).tag(config=True)
    keep_alive_timeout = Float(
        75.0,
        help="Seconds an open (keep-alive) connection may wait for the next request's headers; then it is "
        "closed. Keep it longer than the idle timeout of a proxy in front of the service, so that the proxy "
        "closes first.",
    ).tag(config=True)
    body_timeout = Float(
        30.0,
        help="Seconds a request body may take, plus one second for every body_min_rate bytes that arrive: "
        "a body that stalls or trickles slower is answered 408 and its connection closed.",
    ).tag(config=True)
    body_min_rate = Integer(
        1024,
        help="Bytes per second a request body must keep arriving at, after its first body_timeout seconds.",
    ).tag(config=True)
    max_connections = Integer(
        1000,
        help="Open client connections this process accepts; past it a new connection is answered 503 and "
        "closed. The service raises its open-file limit to fit, when the hard limit allows.",
    ).tag(config=True)
    db_pool_size = Integer(
        10, help="Database connections kept open in the pool (PostgreSQL; SQLite too)."
    ).tag(config=True)
    db_max_overflow = Integer(
        20, help="Database connections opened beyond db_pool_size when all are in use, closed when idle."
    ).tag(config=True)
    db_wait_timeout = Float(
        10.0,
        help="Seconds a request waits for a database connection when all db_pool_size + db_max_overflow are "
        "in use; then it is answered 503 with Retry-After. The wait never blocks other requests.",
    ).tag(config=True)
    cookie_secret_file = Unicode(
        help="File holding the secret that signs cookies. Default: <data_dir>/cookie_secret (created 0600)."
    ).tag(config=True)
    shutdown_timeout = Float(
        30.0,
        help="Seconds from SIGTERM to exit: in-flight requests may finish meanwhile; then open connections "
        "are closed and grading jobs in progress go back to the queue.",
    ).tag(config=True)

    metrics_token = Unicode(
        help="A token a monitoring system (Prometheus) sends as 'Authorization: Bearer <token>' to read "
        "<base_url>api/v1/metrics; it opens nothing else. Empty: only admins can read the metrics. "
        "Env GRADER_SERVICE_METRICS_TOKEN sets the default.",
    ).tag(config=True)
    log_output = Enum(
        logs.LOG_OUTPUTS,
        "text",
        help="'text': log lines for people; 'json': one JSON object per line (time, level, logger, message, "
        "request_id, submission_id) for log collectors.",
    ).tag(config=True)

    metrics = Instance(Metrics, ())  # this app's own registry: apps in one process never collide
    # Made by init_db, init_authenticator and start_serving (state, not configuration).
    engine: Engine
    session_factory: sessionmaker[Session]
    db_gate: ConnectionGate
    authenticator: Authenticator
    http_server: GraderHTTPServer
    requests_in_flight = Int(0)
    repo_locks = Instance(RepoLocks, ())
    # Made by init_grading (None before).
    scheduler: Scheduler | None = None
    events: EventBus | None = None
    event_feed: EventFeed | None = None
    event_listener: PostgresListener | None = None

    @default("log_level")
    def _default_log_level(self) -> int:
        return logging.INFO

    @default("metrics_token")
    def _default_metrics_token(self) -> str:
        return os.environ.get(METRICS_TOKEN_ENV, "")

    def get_default_logging_config(self) -> dict[str, Any]:
        config = super().get_default_logging_config()
        level = self.log_level  # (traitlets types it as any object: it is a level's number or name)
        if self.log_output == "json" and isinstance(level, int | str):
            config = logs.json_logging_config(config, level)
        return config

    @observe("log_output")
    def _log_output_changed(self, _change: dict[str, Any]) -> None:
        self._configure_logging()

    @default("db_url")
    def _default_db_url(self) -> str:
        return os.environ.get(DB_URL_ENV) or f"sqlite:///{Path(self.data_dir).resolve() / 'grader.sqlite'}"

    @default("cookie_secret_file")
    def _default_cookie_secret_file(self) -> str:
        return str(Path(self.data_dir) / "cookie_secret")

    @validate("base_url")
    def _validate_base_url(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        return "/" + value.strip("/") + "/" if value.strip("/") else "/"

    @validate(
        "header_timeout",
        "keep_alive_timeout",
        "body_timeout",
        "body_min_rate",
        "db_wait_timeout",
        "shutdown_timeout",
    )
    def _validate_positive(self, proposal: dict[str, Any]) -> Any:
        if proposal["value"] <= 0:
            raise TraitError(
                f"GraderService.{proposal['trait'].name} must be positive, not {proposal['value']}"
            )
        return proposal["value"]

    @validate("max_connections", "max_uploads_per_user", "db_pool_size", "body_spool_size")
    def _validate_at_least_one(self, proposal: dict[str, Any]) -> Any:
        if proposal["value"] < 1:
            raise TraitError(
                f"GraderService.{proposal['trait'].name} must be at least 1, not {proposal['value']}"
            )
        return proposal["value"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uploads_in_flight: dict[int, int] = {}  # user id -> uploads in progress (max_uploads_per_user)

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir).resolve())

    # --- initialisation ---------------------------------------------------------------------

    @catch_config_error
    def initialize(self, argv: list[str] | None = None) -> None:
        args = sys.argv[1:] if argv is None else argv
        if {"--help-all", "--generate-config"} & set(args):
            self.classes = [*self.classes, *optional_classes()]
        super().initialize(argv)
        if self.subapp is not None:
            return
        self.load_config_file_if_any()

    def load_config_file_if_any(self) -> None:
        path = Path(self.config_file)
        if path.exists():
            self.load_config_file(path.name, path=[str(path.parent.resolve())])
        elif "config_file" in self.config.get("GraderService", {}) and not self.generate_config:
            self.log.critical("Config file %s not found", path)
            self.exit(1)

    def init_db(self) -> None:
        """Create the engine and make sure the schema is current (or refuse with a clear message)."""
        data_dir = Path(self.data_dir)
        if not data_dir.exists():
            # Job directories inside are open to the sandbox's uid (mode 0777): this mode is what keeps
            # other local users out of them (docs/architecture.md).
            data_dir.mkdir(parents=True, mode=0o700)
        self.engine = db.make_engine(
            self.db_url, pool_size=self.db_pool_size, max_overflow=self.db_max_overflow
        )
        self.session_factory = db.make_session_factory(self.engine)
        self.db_gate = ConnectionGate(self.engine, self.db_pool_size + self.db_max_overflow)
        current, head = db.current_revision(self.engine), db.head_revision()
        if current == head:
            return
        upgrade = self.upgrade_db if self.upgrade_db is not None else db.is_sqlite(self.db_url)
        where = self.engine.url.render_as_string(hide_password=True)
        if not upgrade:
            raise DatabaseOutOfDate(
                f"The database {where} is at schema revision {current or 'none (empty)'}, but this version "
                f"needs {head}. Back it up, then run `grader-service migrate` (or start with --upgrade-db)."
            )
        self.log.info("Upgrading database %s from %s to %s", where, current or "empty", head)
        db.upgrade(self.engine)

    def init_authenticator(self) -> None:
        name = AUTHENTICATOR_ALIASES.get(self.authenticator_class, self.authenticator_class)
        cls = import_item(name)
        self.authenticator = cls(parent=self, log=self.log)

    def cookie_secret(self) -> bytes:
        path = Path(self.cookie_secret_file)
        if path.exists():
            return path.read_bytes().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
        return secret

    def make_web_app(self) -> web.Application:
        from .api import NotFoundHandler, api_handlers

        handlers = api_handlers(self.base_url) + [
            (self.base_url.rstrip("/") + path, handler, kwargs)
            for path, handler, kwargs in self.authenticator.get_handlers(self.base_url)
        ]
        return web.Application(
            handlers,
            grader_service=self,
            default_handler_class=NotFoundHandler,
            xsrf_cookies=True,
            cookie_secret=self.cookie_secret(),
            log_function=self.log_request,
        )

    def log_request(self, handler: web.RequestHandler) -> None:
        self.metrics.observe_request(handler, self.base_url)
        status = handler.get_status()
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        if handler.request.path.endswith(("/api/v1/health", "/api/v1/health/live")) and status == 200:
            level = logging.DEBUG
        user = getattr(getattr(handler, "user", None), "name", "-")
        self.log.log(
            level,
            "%d %s %s (%s) %.1fms",
            status,
            handler.request.method,
            handler.request.uri,
            user,
            1000 * handler.request.request_time(),
            extra={"request_id": getattr(handler, "request_id", None)},
        )

    def record_identity(self, session: Session, identity: Identity) -> User:
        """The User row for an authenticated caller, created on first sight and kept current."""
        if identity.user_id is not None:
            user = session.get(User, identity.user_id)  # in the session already: no query
        else:
            user = session.scalars(select(User).where(User.name == identity.name)).one_or_none()
        if user is None:
            user = User(name=identity.name, display_name=identity.display_name, admin=identity.admin)
            session.add(user)
            session.commit()
        elif user.admin != identity.admin or (
            identity.display_name and user.display_name != identity.display_name
        ):
            user.admin = identity.admin
            user.display_name = identity.display_name or user.display_name
            session.commit()
        if identity.roles is not None:
            sync_roles(
                session, user, identity.roles, getattr(self.authenticator, "auto_create_lectures", False)
            )
        return user

    def on_submission(self, session: Session, submission: Submission) -> None:
        """Called in the transaction that records a submission, before it commits.

        The grading job is added to the same transaction: a submission and its job are stored
        together or not at all. An assignment with the setting `autograde: false` gets no job: its
        cells go to a person at once (`grades.record_manual_only`).
        """
        if submission.assignment.settings.get("autograde") is False:
            record_manual_only(session, submission, submission.assignment.gradebook_skeleton)
            return
        enqueue_new(session, submission)

    def jobs_committed(self) -> None:
        """Wake the workers once new jobs are visible in the database."""
        if self.scheduler is not None:
            self.scheduler.wake()

    def init_grading(self) -> Scheduler:
        name = EXECUTOR_ALIASES.get(self.executor_class, self.executor_class)
        executor = import_item(name)(parent=self, log=self.log)
        self.scheduler = Scheduler(self.session_factory, self.layout, executor, parent=self, log=self.log)
        self.scheduler.metrics = self.metrics
        self.init_events()
        return self.scheduler

    def init_events(self) -> None:
        """Live status: announced changes reach this process's bus through a LISTEN connection
        (PostgreSQL: every replica hears every change) or when their transaction commits (SQLite)."""
        self.events = EventBus()
        self.event_feed = EventFeed(
            self.events, self.session_factory, self.log, on_queued=self.jobs_committed
        )
        if self.engine.dialect.name == "postgresql":
            self.event_listener = PostgresListener(conninfo(self.engine.url), self.event_feed, self.log)
        else:
            deliver_after_commit(self.session_factory, self.event_feed.changed)

    async def start_events(self) -> None:
        if self.event_feed is not None:
            self.event_feed.start()
        if self.event_listener is not None:
            await self.event_listener.start()

    # --- serving ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.subapp is not None:
            self.subapp.start()
            return
        if self.generate_config:
            self.write_config_file()
            return
        try:
            asyncio.run(self.serve())
        except DatabaseOutOfDate as e:
            self.log.critical("%s", e)
            self.exit(1)

    def write_config_file(self) -> None:
        path = Path(self.config_file)
        if path.exists():
            self.log.critical("%s exists; not overwriting it", path)
            self.exit(1)
        path.write_text(self.generate_config_file())
        print(f"Wrote {path}")

    async def serve(self) -> None:
        await self.start_serving()
        # Everything loaded so far lives as long as the process: keep the collector's full passes
        # (~0.1 s over ~200k start-up objects, each a pause of every request) off it.
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.stop_serving()

    async def start_serving(self) -> None:
        """Everything up to accepting connections: database, authenticator, grading, the HTTP server."""
        self.init_db()
        self.init_authenticator()
        await self.authenticator.start()
        scheduler = self.init_grading()
        await self.start_events()
        await scheduler.executor.start()
        if self.grading:
            await scheduler.start()
        self.layout.tmp_dir().mkdir(parents=True, exist_ok=True)
        self.raise_open_file_limit()
        self.http_server = self.make_http_server()
        self.http_server.listen(self.port, self.ip)
        self.log.info(
            "grader-service %s listening on http://%s:%d%s", __version__, self.ip, self.port, self.base_url
        )

    def make_http_server(self) -> GraderHTTPServer:
        from .api.base import JSON_BODY_LIMIT

        return GraderHTTPServer(
            self.make_web_app(),
            xheaders=True,
            header_timeout=self.header_timeout,
            keep_alive_timeout=self.keep_alive_timeout,
            max_connections=self.max_connections,
            # API handlers raise both for their own bodies; these hold for every other route.
            max_body_size=JSON_BODY_LIMIT,
            body_timeout=self.body_timeout + 2 * JSON_BODY_LIMIT / self.body_min_rate,
        )

    def raise_open_file_limit(self) -> None:
        """Make room for max_connections open sockets, besides files, pipes and the database."""
        wanted = self.max_connections + 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft >= wanted:
            return
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            self.log.warning(
                "Open-file limit %d is too low for max_connections = %d (wants %d): lower max_connections "
                "or raise the limit (ulimit -n)",
                new,
                self.max_connections,
                wanted,
            )

    async def stop_serving(self) -> None:
        """Stop within shutdown_timeout: let requests finish, close connections, hand back grading jobs.

        Each step gets what is left of the time; a watchdog ends the process if even that overruns
        (a step that blocked the event loop), so SIGTERM always ends it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        watchdog = threading.Timer(self.shutdown_timeout + 1, self._shutdown_overrun)
        watchdog.daemon = True
        watchdog.start()
        self.log.info("Shutting down: no new connections, waiting for %d request(s)", self.requests_in_flight)
        self.http_server.stop()
        if self.events is not None:
            self.events.close()  # event streams never end by themselves
        # Leave time for the steps after the wait: closing connections and handing jobs back.
        wait_until = deadline - min(5.0, self.shutdown_timeout / 3)
        while self.requests_in_flight > 0 and loop.time() < wait_until:
            await asyncio.sleep(0.05)
        if self.requests_in_flight > 0:
            self.log.warning(
                "Closing %d unfinished request(s) at the shutdown timeout", self.requests_in_flight
            )
        steps: list[Callable[[], Awaitable[None]]] = [self.http_server.close_all_connections]
        if self.grading and self.scheduler is not None:
            steps.append(self.scheduler.stop)
        steps.append(self.authenticator.stop)
        if self.event_listener is not None:
            steps.append(self.event_listener.stop)
        if self.event_feed is not None:
            steps.append(self.event_feed.stop)
        for step in steps:
            name = getattr(step, "__qualname__", repr(step))
            try:
                await asyncio.wait_for(step(), max(0.1, deadline - loop.time()))
            except TimeoutError:
                self.log.warning("Shutdown step %s did not finish in time", name)
            except Exception:
                self.log.exception("Shutdown step %s failed", name)
        self.engine.dispose()
        watchdog.cancel()
        self.log.info("Stopped")

    def _shutdown_overrun(self) -> None:
        # A thread: the event loop may be the thing that is stuck.
        self.log.critical(
            "Shutdown took longer than shutdown_timeout (%s s): exiting now", self.shutdown_timeout
        )
        logging.shutdown()
        os._exit(1)


class _DatabaseCommand(GraderService):
    """A subcommand that works on the database with the service's configuration."""

    aliases = dict(COMMON_ALIASES)
    flags = {"debug": GraderService.flags["debug"]}
    subcommands: dict[str, Any] = {}

    def open_db(self) -> None:
        try:
            self.init_db()
        except DatabaseOutOfDate as e:
            self.log.critical("%s", e)
            self.exit(1)

    def start(self) -> None:
        raise NotImplementedError


class MigrateCommand(_DatabaseCommand):
    """Upgrade the database schema to the version this release needs."""

    name = "grader-service-migrate"
    description = "Upgrade the database schema (Alembic) to the version this release needs."

    def start(self) -> None:
        self.upgrade_db = True
        self.init_db()
        print(f"Database is at revision {db.current_revision(self.engine)}")


class TokenCreateCommand(_DatabaseCommand):
    """Print a new API token; the token alone is the last line of output."""

    name = "grader-service-token-create"
    description = "Create an API token for a user (standalone mode) and print it."
    aliases = {
        **COMMON_ALIASES,
        "user": "TokenCreateCommand.user",
        "expires-in": "TokenCreateCommand.expires_in",
        "note": "TokenCreateCommand.note",
    }
    flags = {"admin": ({"TokenCreateCommand": {"admin": True}}, "The token's holder is a service admin.")}

    user = Unicode(help="Name of the user the token authenticates (created if new).").tag(config=True)
    admin = Bool(False, help="Whether the token grants admin rights.").tag(config=True)
    expires_in = Integer(0, help="Seconds until the token expires; 0 means never.").tag(config=True)
    note = Unicode(help="Free text shown by `token list`.").tag(config=True)

    def start(self) -> None:
        if not self.user:
            self.log.critical("--user NAME is required")
            self.exit(2)
        self.open_db()
        token = new_token()
        with db.session_scope(self.session_factory) as session:
            user = session.scalars(select(User).where(User.name == self.user)).one_or_none()
            if user is None:
                user = User(name=self.user)
                session.add(user)
                session.flush()
            expires = utcnow() + timedelta(seconds=self.expires_in) if self.expires_in > 0 else None
            session.add(
                ApiToken(
                    user_id=user.id,
                    prefix=token[:PREFIX_LENGTH],
                    hashed=hash_token(token),
                    admin=self.admin,
                    expires_at=expires,
                    note=self.note or None,
                )
            )
        print(
            f"Created {'admin ' if self.admin else ''}token for {self.user}"
            + (f", expires {expires.isoformat()}" if expires else ""),
            file=sys.stderr,
        )
        print(token)


class TokenListCommand(_DatabaseCommand):
    name = "grader-service-token-list"
    description = "List API tokens (prefix, user, admin, created, expires, last used)."

    def start(self) -> None:
        self.open_db()
        with db.session_scope(self.session_factory) as session:
            rows = session.scalars(select(ApiToken).order_by(ApiToken.id)).all()
            print(
                f"{'prefix':10} {'user':20} {'admin':5} {'created':20} {'expires':20} {'last used':20} note"
            )
            for t in rows:
                fmt = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if d else "-"  # noqa: E731
                print(
                    f"{t.prefix:10} {t.user.name:20} {'yes' if t.admin else 'no':5} {fmt(t.created_at):20} "
                    f"{fmt(t.expires_at):20} {fmt(t.last_used_at):20} {t.note or ''}"
                )


class TokenRevokeCommand(_DatabaseCommand):
    name = "grader-service-token-revoke"
    description = "Revoke API tokens by prefix (as `token list` shows) or by full token."

    def start(self) -> None:
        if not self.extra_args:
            self.log.critical("Name the token(s) to revoke: grader-service token revoke PREFIX [PREFIX ...]")
            self.exit(2)
        self.open_db()
        with db.session_scope(self.session_factory) as session:
            for arg in self.extra_args:
                query = select(ApiToken).where(ApiToken.prefix == arg[:PREFIX_LENGTH])
                if len(arg) > PREFIX_LENGTH:
                    query = query.where(ApiToken.hashed == hash_token(arg))
                rows = session.scalars(query).all()
                if not rows:
                    self.log.critical("No token matches %r", arg)
                    self.exit(1)
                for row in rows:
                    session.delete(row)
                print(f"Revoked {len(rows)} token(s) matching {arg[:PREFIX_LENGTH]}")


class TokenCommand(Application):
    name = "grader-service-token"
    description = "Manage standalone API tokens."
    subcommands = {
        "create": ("grader_service.app.TokenCreateCommand", "Create a token and print it."),
        "list": ("grader_service.app.TokenListCommand", "List tokens."),
        "revoke": ("grader_service.app.TokenRevokeCommand", "Revoke tokens by prefix."),
    }

    def start(self) -> None:
        if self.subapp is None:
            self.print_subcommands()
            self.exit(2)
        else:
            self.subapp.start()


main = GraderService.launch_instance

if __name__ == "__main__":
    main()
