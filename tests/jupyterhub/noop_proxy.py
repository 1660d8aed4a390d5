"""A JupyterHub proxy that routes nothing, for tests that talk to the hub and the service directly.

The hub imports it as `noop_proxy.NoopProxy` (this directory is on its PYTHONPATH). It remembers the
routes it is given, so the hub's periodic route check finds them and stays quiet.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.proxy import Proxy


class NoopProxy(Proxy):
    """Accepts every route and forwards nothing."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.routes: dict[str, dict[str, Any]] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def add_route(self, routespec: str, target: str, data: dict[str, Any]) -> None:
        self.routes[routespec] = {"routespec": routespec, "target": target, "data": data}

    async def delete_route(self, routespec: str) -> None:
        self.routes.pop(routespec, None)

    async def get_all_routes(self) -> dict[str, dict[str, Any]]:
        return dict(self.routes)
