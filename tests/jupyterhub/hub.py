"""A real JupyterHub with the grader registered as an external service, for tests.

Two layouts:
- "direct": a no-op proxy; the test talks to the hub (its own port, /hub/) and to the service (its own
  port, base URL /) directly, as a service outside the hub's proxy would be reached.
- "proxy": the real configurable-http-proxy in front of both, the service at /services/grader/, as in
  production. The proxy runs as its own process with `should_start = False` (as in zero-to-jupyterhub),
  so the test, not the hub, owns its lifetime.

The service starts before the hub: JupyterHub 6 waits up to a service's `timeout` (30 s) for it at
startup, and the hub's proxy routes to it from then on.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from ..postgres import free_port
from ..service import Client, ServiceProcess
from . import processes

HERE = Path(__file__).parent
PASSWORD = "grader-test-password"
SERVICE_NAME = "grader"
# Short, so that the tests can watch a group change arrive; the production default is 30 s.
CACHE_MAX_AGE = 1


class GraderServiceProcess(ServiceProcess):
    """The service, started so that it cannot outlive the test run (see processes.py)."""

    def start(self, *extra: str, wait: bool = True) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - kept open while the process runs
        self.proc = processes.start(
            self.command("--port", str(self.port), "--base-url", self.base_url, *extra),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        if wait:
            self.wait_healthy()

    def stop(self, sig: int = 0, timeout: float = 30) -> int | None:
        code = processes.stop(self.proc, timeout)
        if hasattr(self, "log"):
            self.log.close()
        return code


class HubStack:
    """A hub, the grader service and (in "proxy" layout) configurable-http-proxy, on loopback ports."""

    def __init__(self, workdir: Path, layout: str = "direct"):
        assert layout in ("direct", "proxy")
        self.workdir = workdir
        self.layout = layout
        self.hub_port = free_port()
        self.proxy_port = free_port()
        self.proxy_api_port = free_port()
        self.service_token = secrets.token_hex(16)
        self.admin_token = secrets.token_hex(16)
        self.proxy_token = secrets.token_hex(16)
        self.hub_proc: subprocess.Popen[bytes] | None = None
        self.proxy_proc: subprocess.Popen[bytes] | None = None
        self.hub_log_path = workdir / "jupyterhub.log"
        base_url = "/services/grader/" if layout == "proxy" else "/"
        data_dir = workdir / "grader" / "data"
        data_dir.parent.mkdir(parents=True)
        self.service = GraderServiceProcess(
            data_dir,
            f"sqlite:///{workdir / 'grader' / 'grader.sqlite'}",
            base_url=base_url,
            env=self.service_env(),
        )
        # written now that the service's port (part of its URL) is known
        self.service.config_file.write_text(self.service_config())
        self._names = 0

    # --- URLs ---------------------------------------------------------------------------------

    @property
    def hub_api(self) -> str:
        """The hub's API as services reach it (never through the proxy)."""
        return f"http://127.0.0.1:{self.hub_port}/hub/api/"

    @property
    def public_hub_url(self) -> str:
        """The hub as a browser reaches it."""
        if self.layout == "proxy":
            return f"http://127.0.0.1:{self.proxy_port}/hub/"
        return f"http://127.0.0.1:{self.hub_port}/hub/"

    @property
    def service_url(self) -> str:
        """The service as clients reach it."""
        if self.layout == "proxy":
            return f"http://127.0.0.1:{self.proxy_port}/services/{SERVICE_NAME}/"
        return self.service.url

    @property
    def service_api(self) -> str:
        return self.service_url + "api/v1/"

    # --- configuration ------------------------------------------------------------------------

    def service_config(self) -> str:
        """The grader's config. "proxy" takes hub settings from the environment, as a hub-managed
        service would; "direct" sets the traits, as an external service's config file would."""
        lines = [
            'c.GraderService.authenticator_class = "jupyterhub"',
            f"c.JupyterHubAuthenticator.cache_max_age = {CACHE_MAX_AGE}",
            "c.JupyterHubAuthenticator.auto_create_lectures = True",
            'c.JupyterHubAuthenticator.admin_users = ["grader-boss"]',
        ]
        if self.layout == "direct":
            lines += [
                f'c.JupyterHubAuthenticator.hub_api_url = "{self.hub_api}"',
                f'c.JupyterHubAuthenticator.api_token = "{self.service_token}"',
                f'c.JupyterHubAuthenticator.service_name = "{SERVICE_NAME}"',
                f'c.JupyterHubAuthenticator.hub_public_url = "{self.public_hub_url}"',
                f'c.JupyterHubAuthenticator.oauth_redirect_uri = "{self.service.url}oauth_callback"',
            ]
        return "\n".join(lines) + "\n"

    def service_env(self) -> dict[str, str]:
        if self.layout == "direct":
            return {}
        return {
            "JUPYTERHUB_API_URL": self.hub_api.rstrip("/"),
            "JUPYTERHUB_API_TOKEN": self.service_token,
            "JUPYTERHUB_SERVICE_NAME": SERVICE_NAME,
        }

    def hub_config(self) -> str:
        service: dict[str, Any] = {
            "name": SERVICE_NAME,
            "url": f"http://127.0.0.1:{self.service.port}",
            "api_token": self.service_token,
            "oauth_no_confirm": True,
            "oauth_client_id": f"service-{SERVICE_NAME}",
        }
        if self.layout == "direct":
            service["oauth_redirect_uri"] = self.service.url + "oauth_callback"
        config = f"""
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.JupyterHub.db_url = "sqlite:///{self.workdir / "jupyterhub.sqlite"}"
c.JupyterHub.cookie_secret_file = "{self.workdir / "jupyterhub_cookie_secret"}"
c.JupyterHub.pid_file = "{self.workdir / "jupyterhub.pid"}"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {PASSWORD!r}
c.Authenticator.allow_all = True
c.JupyterHub.services = [
    {service!r},
    {{"name": "test-admin", "api_token": {self.admin_token!r}}},
]
c.JupyterHub.load_roles = [
    # the default user role plus access to the grader (the default lacks it)
    {{"name": "user", "scopes": ["self", "access:services!service={SERVICE_NAME}"]}},
    # the tests' own hand on the hub: users (admins too), groups and their tokens
    {{"name": "admin", "services": ["test-admin"]}},
]
# the lab extension forwards the single-user server's token: it needs the grader's access scope too
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    "access:services!service={SERVICE_NAME}",
]
"""
        if self.layout == "direct":
            config += 'c.JupyterHub.proxy_class = "noop_proxy.NoopProxy"\n'
        else:
            config += f"""
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = {self.proxy_token!r}
"""
        return config

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        # The service is spawned first and the hub right after it, not once the service is healthy: the
        # hub waits for it anyway, and the two start-ups (a few seconds each) overlap.
        self.service.start("--upgrade-db", wait=False)
        if self.layout == "proxy":
            self.start_proxy()
        (self.workdir / "jupyterhub_config.py").write_text(self.hub_config())
        self.hub_log = open(self.hub_log_path, "ab")  # noqa: SIM115 - kept open while the hub runs
        self.hub_proc = processes.start(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.workdir / "jupyterhub_config.py")],
            cwd=self.workdir,
            stdout=self.hub_log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
            },
        )
        self.service.wait_healthy()
        self.wait_hub_ready()

    def start_proxy(self) -> None:
        self.proxy_log = open(self.workdir / "proxy.log", "ab")  # noqa: SIM115
        command = Path(sys.executable).parent / "configurable-http-proxy"
        self.proxy_proc = processes.start(
            [
                str(command),
                "--ip=127.0.0.1",
                f"--port={self.proxy_port}",
                "--api-ip=127.0.0.1",
                f"--api-port={self.proxy_api_port}",
                f"--error-target=http://127.0.0.1:{self.hub_port}/hub/error",
                "--log-level=info",
            ],
            stdout=self.proxy_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": self.proxy_token},
        )

    def wait_hub_ready(self, timeout: float = 60) -> None:
        """Until the hub answers its API with our admin token (and, behind the proxy, routes to us)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for proc, what in ((self.hub_proc, "jupyterhub"), (self.proxy_proc, "proxy")):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{what} exited with {proc.returncode}:\n{self.logs()}")
            try:
                ready = self.hub("GET", "users").status_code == 200
                if ready and self.layout == "proxy":
                    ready = requests.get(self.service_api + "health", timeout=2).status_code == 200
                if ready:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"JupyterHub did not become ready:\n{self.logs()}")

    def stop(self) -> None:
        processes.stop(self.hub_proc)
        processes.stop(self.proxy_proc)
        self.service.stop()
        for name in ("hub_log", "proxy_log"):
            if hasattr(self, name):
                getattr(self, name).close()

    def logs(self) -> str:
        parts = [f"--- jupyterhub\n{self.hub_log_path.read_text(errors='replace')[-6000:]}"]
        if (self.workdir / "proxy.log").exists():
            parts.append(f"--- proxy\n{(self.workdir / 'proxy.log').read_text(errors='replace')[-3000:]}")
        parts.append(f"--- grader-service\n{self.service.read_log()[-6000:]}")
        return "\n".join(parts)

    # --- the hub's REST API, as the tests' admin service ----------------------------------------

    def hub(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        headers = {"Authorization": f"token {self.admin_token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.hub_api + path, headers=headers, **kwargs)

    def new_user(self, prefix: str = "user", admin: bool = False, groups: tuple[str, ...] = ()) -> str:
        """A hub user with a name no other test uses, in the given groups."""
        self._names += 1
        name = f"{prefix}{self._names}"
        r = self.hub("POST", f"users/{name}", json={"admin": admin})
        assert r.status_code == 201, r.text
        for group in groups:
            self.add_to_group(group, name)
        return name

    def token(self, user: str, scopes: list[str] | None = None) -> str:
        """A hub API token for `user`: all of the user's permissions, or just `scopes`."""
        body: dict[str, Any] = {"note": "grader test"}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.hub("POST", f"users/{user}/tokens", json=body)
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def add_to_group(self, group: str, *users: str) -> None:
        r = self.hub("POST", f"groups/{group}")
        assert r.status_code in (201, 409), r.text
        r = self.hub("POST", f"groups/{group}/users", json={"users": list(users)})
        assert r.status_code == 200, r.text

    def remove_from_group(self, group: str, *users: str) -> None:
        r = self.hub("DELETE", f"groups/{group}/users", json={"users": list(users)})
        assert r.status_code == 200, r.text

    def client(self, token: str | None = None) -> Client:
        """The service's API, through the proxy in the "proxy" layout."""
        return Client(self.service_api, token)
