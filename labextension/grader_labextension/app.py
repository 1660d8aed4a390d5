"""The server extension: registers the handlers under `<base_url>grader/` and owns the connection."""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join

from .base import SETTINGS_KEY
from .connection import GraderConnection
from .handlers import ROUTES
from .relay import EventsRelayHandler


class GraderLabExtension(ExtensionApp):
    name = "grader_labextension"
    # Handlers are registered under the server's base URL by hand: not under /grader_labextension/.
    load_other_extensions = True

    def initialize_settings(self) -> None:
        self.connection = GraderConnection()
        self.serverapp.web_app.settings[SETTINGS_KEY] = self.connection

    def initialize_handlers(self) -> None:
        base = url_path_join(self.serverapp.base_url, "grader")
        routes = [*ROUTES, (r"events", EventsRelayHandler)]
        self.serverapp.web_app.add_handlers(
            ".*$", [(url_path_join(base, pattern), handler) for pattern, handler in routes]
        )

    async def stop_extension(self) -> None:
        await self.connection.close()
