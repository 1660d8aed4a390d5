"""The command line: config generation, tokens, migrations, graceful shutdown."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from grader_service import db

from .conftest import DATA
from .service import ServiceProcess


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grader_service.app", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_generate_config_writes_commented_traits(tmp_path: Path) -> None:
    result = run("--generate-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "grader_service_config.py").read_text()
    for trait in (
        "c.GraderService.port",
        "c.GraderService.db_url",
        "c.GraderService.authenticator_class",
        "c.TokenAuthenticator.last_used_resolution",
    ):
        assert f"# {trait}" in text
    assert "Largest accepted upload" in text
    again = run("--generate-config", cwd=tmp_path)
    assert again.returncode != 0 and "not overwriting" in again.stderr


LIMITS = (
    "max_request_size",
    "max_extracted_size",
    "max_files_per_upload",
    "max_uploads_per_user",
    "body_spool_size",
    "header_timeout",
    "keep_alive_timeout",
    "body_timeout",
    "body_min_rate",
    "max_connections",
    "db_pool_size",
    "db_max_overflow",
    "db_wait_timeout",
    "shutdown_timeout",
)


def test_every_limit_is_configurable_and_documented(tmp_path: Path) -> None:
    """Each limit is a trait with help in the generated config, in docs/deployment.md and the README."""
    from grader_service.app import GraderService

    result = run("--generate-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "grader_service_config.py").read_text()
    root = Path(__file__).resolve().parent.parent
    deployment = (root / "docs" / "deployment.md").read_text()
    readme = (root / "README.md").read_text()
    traits = GraderService.class_traits(config=True)
    for name in LIMITS:
        assert traits[name].help, name
        assert f"# c.GraderService.{name} = " in text, name
        assert f"| `{name}` |" in deployment, f"docs/deployment.md does not list {name}"
        assert name in readme, f"README.md does not list {name}"


def test_limits_must_be_positive() -> None:
    result = run("--GraderService.body_min_rate=0", "--port=1")
    assert result.returncode != 0
    assert "body_min_rate must be positive" in result.stderr


def test_token_create_list_revoke(tmp_path: Path) -> None:
    opts = ("--data-dir", str(tmp_path / "data"))
    created = run("token", "create", "--user", "alice", "--admin", "--expires-in", "3600", *opts)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert len(token) == 64 and all(c in "0123456789abcdef" for c in token)
    listed = run("token", "list", *opts)
    assert token[:8] in listed.stdout and "alice" in listed.stdout and "yes" in listed.stdout
    assert token not in listed.stdout  # only the prefix is ever shown
    assert run("token", "revoke", token[:8], *opts).returncode == 0
    assert token[:8] not in run("token", "list", *opts).stdout
    missing = run("token", "revoke", "deadbeef", *opts)
    assert missing.returncode == 1 and "No token matches" in missing.stderr
    assert run("token", "create", *opts).returncode == 2  # --user is required


def test_token_authenticates_and_expires(world, service: ServiceProcess) -> None:
    token = service.token("short", expires_in=1.5)
    client = service.client(token)
    assert client.get("user").json()["name"] == "short"
    time.sleep(1.6)
    r = client.get("user")
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"
    assert service.client("not-a-token").get("user").status_code == 401


def test_cli_token_works_against_the_server(tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'g.sqlite'}")
    svc.start()
    try:
        out = run("token", "create", "--user", "bob", *svc.command()[3:])
        token = out.stdout.strip().splitlines()[-1]
        r = svc.client(token).get("user")
        assert r.status_code == 200 and r.json() == {
            "name": "bob",
            "display_name": None,
            "admin": False,
            "roles": {},
        }
    finally:
        svc.stop()


def test_postgres_out_of_date_refuses_then_migrate(postgres_admin_url: str, tmp_path: Path) -> None:
    from .postgres import create_database

    url = create_database(postgres_admin_url, "grader_cli_migrate")
    svc = ServiceProcess(tmp_path / "data", url)
    svc.start(wait=False)
    assert svc.proc.wait(60) == 1
    log = svc.read_log()
    assert "grader-service migrate" in log and "none (empty)" in log
    migrated = run("migrate", *svc.command()[3:])
    assert migrated.returncode == 0, migrated.stderr
    assert db.current_revision(db.make_engine(url)) == db.head_revision()
    svc.start()
    svc.stop()


def test_sqlite_upgrades_automatically_with_wal_and_foreign_keys(tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'auto.sqlite'}")
    svc.start()
    svc.stop()
    engine = db.make_engine(svc.db_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert db.current_revision(engine) == db.head_revision()


def test_sigterm_finishes_in_flight_request(world, tmp_path: Path) -> None:
    """A slow upload in progress when SIGTERM arrives still completes; then the process exits 0."""
    svc = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'term.sqlite'}")
    svc.start()
    token = svc.token("root", admin=True)
    client = svc.client(token)
    assert client.post("lectures", json={"code": "c1", "name": "C"}).status_code == 201
    assert client.post("lectures/c1/assignments", json={"name": "a"}).status_code == 201
    body = (DATA / "tiny" / "tiny.ipynb").read_bytes()
    head = (
        f"PUT /api/v1/lectures/c1/assignments/a/files?filename=tiny.ipynb HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: token {token}\r\nContent-Type: application/x-ipynb+json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", svc.port)) as sock:
        sock.sendall(head + body[:100])
        time.sleep(0.5)
        svc.proc.send_signal(signal.SIGTERM)  # arrives while the body is still on its way
        time.sleep(1.0)
        sock.sendall(body[100:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert svc.proc.wait(30) == 0
    assert "Stopped" in svc.read_log()


def test_every_subcommand_takes_common_options() -> None:
    for cmd in (["migrate"], ["token", "create"], ["token", "list"], ["token", "revoke"]):
        result = run(*cmd, "--help")
        for option in ("--data-dir", "--db-url", "-f"):
            assert option in result.stdout, (cmd, option)
