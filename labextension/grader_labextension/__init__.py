"""grader-labextension: JupyterLab's Grader panels and the server extension they talk to.

The server extension (`grader_labextension.app`) answers under `<base_url>grader/` and talks to
grader-service through `AsyncGraderClient` with the credentials the Jupyter server has (GRADER_URL and
GRADER_TOKEN, or JupyterHub's JUPYTERHUB_API_TOKEN), so the browser never holds a service token.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "grader-labextension"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import GraderLabExtension

    return [{"module": "grader_labextension", "app": GraderLabExtension}]
