"""Running the real service as a subprocess and talking to it over HTTP, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from grader_service import db
from grader_service.orm import ApiToken, User, utcnow
from grader_service.orm.api_token import PREFIX_LENGTH, hash_token, new_token

from .postgres import free_port


class ServiceProcess:
    """`grader-service` started with a data dir, a database URL and optional config text.

    Several processes may share one data dir (replicas): give each its own `name` (for its config
    file and log).
    """

    def __init__(
        self,
        data_dir: Path,
        db_url: str,
        config: str = "",
        base_url: str = "/",
        env: dict[str, str] | None = None,
        name: str | None = None,
    ):
        self.data_dir = data_dir
        self.db_url = db_url
        self.base_url = base_url
        self.port = free_port()
        name = name or data_dir.name
        self.config_file = data_dir.parent / f"{name}_config.py"
        self.config_file.write_text(config)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{name}.log"
        self._engine = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    @property
    def api(self) -> str:
        return self.url + "api/v1/"

    def command(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "grader_service.app",
            *extra,
            "-f",
            str(self.config_file),
            "--data-dir",
            str(self.data_dir),
            "--db-url",
            self.db_url,
        ]

    def start(self, *extra: str, wait: bool = True) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - kept open while the process runs
        self.proc = subprocess.Popen(
            self.command("--port", str(self.port), "--base-url", self.base_url, *extra),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                if requests.get(self.api + "health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"service did not become healthy:\n{self.read_log()}")

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
        finally:
            self.log.close()

    @property
    def engine(self):
        if self._engine is None:
            self._engine = db.make_engine(self.db_url)
        return self._engine

    def token(self, name: str, admin: bool = False, expires_in: float | None = None) -> str:
        """A fresh API token for `name`, written straight to the service's database."""
        token = new_token()
        factory = db.make_session_factory(self.engine)
        with db.session_scope(factory) as session:
            user = session.scalars(select(User).where(User.name == name)).one_or_none()
            if user is None:
                user = User(name=name)
                session.add(user)
                session.flush()
            expires = utcnow() + timedelta(seconds=expires_in) if expires_in is not None else None
            session.add(
                ApiToken(
                    user_id=user.id,
                    prefix=token[:PREFIX_LENGTH],
                    hashed=hash_token(token),
                    admin=admin,
                    expires_at=expires,
                )
            )
        return token

    def client(self, token: str | None) -> Client:
        return Client(self.api, token)


class Client:
    """requests with the API prefix and a token."""

    def __init__(self, api: str, token: str | None):
        self.api = api
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"token {token}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.api + path.lstrip("/"), **kwargs)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)
