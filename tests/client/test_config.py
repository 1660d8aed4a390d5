"""Where credentials and defaults come from, in which order, and which files are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grader_client import errors
from grader_client.config import (
    config_path,
    normalize_url,
    project_defaults,
    read_config,
    resolve_credentials,
    write_config,
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "config")}


def test_order_arguments_then_environment_then_file_then_jupyterhub(env: dict[str, str]) -> None:
    path = write_config("http://stored:4010/", "stored-token", config_path(env))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"

    stored = resolve_credentials(env=env)
    assert (stored.url, stored.token, stored.source) == ("http://stored:4010/", "stored-token", str(path))

    env["GRADER_TOKEN"] = "env-token"
    assert resolve_credentials(env=env).token == "env-token"
    env["GRADER_URL"] = "http://env:4010"
    from_env = resolve_credentials(env=env)
    assert (from_env.url, from_env.token) == ("http://env:4010/", "env-token")

    explicit = resolve_credentials("http://arg:1/api/v1", "arg-token", env=env)
    assert (explicit.url, explicit.token, explicit.source) == ("http://arg:1/", "arg-token", "argument")
    assert explicit.api_url == "http://arg:1/api/v1/"

    # A stored token is only ever sent to the URL it was stored for.
    del env["GRADER_TOKEN"]
    with pytest.raises(errors.ConfigError, match="No token for http://env:4010/"):
        resolve_credentials(env=env)

    # Inside JupyterHub: the server's token, for the URL the admin set.
    env["JUPYTERHUB_API_TOKEN"] = "hub-token"
    hub = resolve_credentials(env=env)
    assert (hub.url, hub.token, hub.source) == ("http://env:4010/", "hub-token", "JUPYTERHUB_API_TOKEN")
    with pytest.raises(errors.ConfigError, match="No token"):
        resolve_credentials("http://elsewhere:1/", env=env)


def test_nothing_configured_says_what_to_do(env: dict[str, str]) -> None:
    with pytest.raises(
        errors.ConfigError, match=r"No service URL: run `grader login URL`, or set GRADER_URL"
    ):
        resolve_credentials(env=env)
    assert resolve_credentials("http://x/", env=env, require_token=False).token is None


def test_a_config_file_others_can_read_is_refused(env: dict[str, str]) -> None:
    path = write_config("http://stored:4010/", "secret", config_path(env))
    os.chmod(path, 0o644)
    with pytest.raises(errors.ConfigError, match=r"other users can access it \(mode 0644\); run: chmod 600"):
        read_config(path)
    with pytest.raises(errors.ConfigError):
        resolve_credentials(env=env)
    os.chmod(path, 0o600)
    assert read_config(path)["token"] == "secret"


def test_a_broken_config_file_is_named(env: dict[str, str]) -> None:
    path = config_path(env)
    path.parent.mkdir(parents=True)
    path.write_text("url = [not toml")
    path.chmod(0o600)
    with pytest.raises(errors.ConfigError, match="is not valid TOML"):
        read_config(path)


def test_urls_are_normalized() -> None:
    assert normalize_url("http://h:4010") == "http://h:4010/"
    assert normalize_url("https://hub/services/grader/api/v1/") == "https://hub/services/grader/"
    with pytest.raises(errors.ConfigError, match="must start with http"):
        normalize_url("h:4010")


def test_project_file_in_a_parent_then_environment(tmp_path: Path) -> None:
    (tmp_path / ".grader.toml").write_text('lecture = "intro"\nassignment = "basics"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    found = project_defaults(deep, env={})
    assert (found.lecture, found.assignment, found.file) == ("intro", "basics", tmp_path / ".grader.toml")
    overridden = project_defaults(deep, env={"GRADER_ASSIGNMENT": "other"})
    assert (overridden.lecture, overridden.assignment) == ("intro", "other")
    (deep / ".grader.toml").write_text('lectur = "typo"\n')
    with pytest.raises(errors.ConfigError, match="unknown key"):
        project_defaults(deep, env={})
