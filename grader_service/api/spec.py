"""Serves the OpenAPI description of this API."""

from __future__ import annotations

from pathlib import Path

from .base import APIHandler
from .permissions import public

SPEC_PATH = Path(__file__).with_name("openapi.yaml")


class OpenAPIHandler(APIHandler):
    auth_required = False
    authenticates = False

    @public
    def get(self) -> None:
        self.set_header("Content-Type", "application/yaml; charset=UTF-8")
        self.finish(SPEC_PATH.read_bytes())


handlers = [(r"openapi.yaml", OpenAPIHandler)]
