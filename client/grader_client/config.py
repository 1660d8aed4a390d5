"""Where the service's URL, the token and the lecture/assignment defaults come from.

Credentials, first match wins:

1. explicit arguments (`GraderClient(url, token)`, `grader --url --token`);
2. the environment: `GRADER_URL`, `GRADER_TOKEN`;
3. `~/.config/grader/config.toml` (`$XDG_CONFIG_HOME/grader/config.toml`), written by `grader login`
   with mode 0600; a file that others can read is refused, since it holds a token. Its token is only
   sent to the URL it was stored for;
4. inside a JupyterHub single-user server: `JUPYTERHUB_API_TOKEN`, sent only to `GRADER_URL`, which
   the hub's admin sets for every server (`c.Spawner.environment`).

Defaults for `lecture` and `assignment` come from `.grader.toml` in the working directory or the
nearest parent that has one, overridden by `GRADER_LECTURE`/`GRADER_ASSIGNMENT`, overridden by options.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

PROJECT_FILE = ".grader.toml"
PROJECT_KEYS = ("lecture", "assignment")


@dataclass(frozen=True)
class Credentials:
    url: str  # the service's base URL, ending in "/" (api/v1/ is added by the client)
    token: str | None
    source: str  # where the token came from, for `grader whoami` and error messages

    @property
    def api_url(self) -> str:
        return self.url + "api/v1/"


def normalize_url(url: str) -> str:
    """`http://host:4010`, `.../services/grader` or `.../api/v1/` -> the base URL ending in '/'."""
    url = url.strip()
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"Service URL {url!r} must start with http:// or https://")
    url = url.rstrip("/") + "/"
    if url.endswith("/api/v1/"):
        url = url[: -len("api/v1/")]
    return url


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "grader" / "config.toml"


def read_config(path: Path) -> dict[str, Any]:
    """The user's config file, or {} if there is none. Refused if others can read it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    if os.name == "posix" and info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(
            f"{path} holds a token but other users can access it (mode {mode:04o}); run: chmod 600 {path}"
        )
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    for key in ("url", "token"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{path}: {key!r} must be a string")
    return data


def write_config(url: str, token: str, path: Path | None = None) -> Path:
    """Store the credentials with mode 0600, replacing the file atomically."""
    import tomli_w

    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            tomli_w.dump({"url": url, "token": token}, f)
        os.chmod(tmp, 0o600)  # whatever the umask or an earlier file said
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def resolve_credentials(
    url: str | None = None,
    token: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    require_token: bool = True,
) -> Credentials:
    """Apply the order above; ConfigError says what to do when something is missing."""
    env = os.environ if env is None else env
    path = config_path(env)
    file: dict[str, Any] | None = None

    def config_file() -> dict[str, Any]:
        nonlocal file
        if file is None:
            file = read_config(path)
        return file

    if url:
        url = normalize_url(url)
    elif env.get("GRADER_URL"):
        url = normalize_url(env["GRADER_URL"])
    elif config_file().get("url"):
        url = normalize_url(config_file()["url"])
    else:
        raise ConfigError("No service URL: run `grader login URL`, or set GRADER_URL")

    if token:
        return Credentials(url, token, "argument")
    if env.get("GRADER_TOKEN"):
        return Credentials(url, env["GRADER_TOKEN"], "GRADER_TOKEN")
    stored = config_file()
    if stored.get("token") and stored.get("url") and normalize_url(stored["url"]) == url:
        return Credentials(url, stored["token"], str(path))
    hub_url = env.get("GRADER_URL")
    if env.get("JUPYTERHUB_API_TOKEN") and hub_url and normalize_url(hub_url) == url:
        return Credentials(url, env["JUPYTERHUB_API_TOKEN"], "JUPYTERHUB_API_TOKEN")
    if require_token:
        raise ConfigError(f"No token for {url}: run `grader login {url}`, or set GRADER_TOKEN")
    return Credentials(url, None, "none")


@dataclass(frozen=True)
class ProjectDefaults:
    lecture: str | None = None
    assignment: str | None = None
    file: Path | None = None  # the .grader.toml they came from, if any


def find_project_file(start: Path | None = None) -> Path | None:
    directory = (start or Path.cwd()).resolve()
    for candidate in (directory, *directory.parents):
        path = candidate / PROJECT_FILE
        if path.is_file():
            return path
    return None


def project_defaults(start: Path | None = None, env: Mapping[str, str] | None = None) -> ProjectDefaults:
    """`.grader.toml` (nearest), then GRADER_LECTURE / GRADER_ASSIGNMENT on top."""
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    path = find_project_file(start)
    if path is not None:
        import tomllib

        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        unknown = sorted(set(data) - set(PROJECT_KEYS))
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: lecture, assignment")
        for key in PROJECT_KEYS:
            if key in data:
                if not isinstance(data[key], str) or not data[key]:
                    raise ConfigError(f"{path}: {key!r} must be a non-empty string")
                values[key] = data[key]
    for key in PROJECT_KEYS:
        if env.get(f"GRADER_{key.upper()}"):
            values[key] = env[f"GRADER_{key.upper()}"]
    return ProjectDefaults(values.get("lecture"), values.get("assignment"), path)
