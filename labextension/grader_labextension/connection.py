"""The Jupyter server's one connection to grader-service, shared by every request.

Credentials are resolved as the `grader` command resolves them (GRADER_URL/GRADER_TOKEN, the
`grader login` file, or JUPYTERHUB_API_TOKEN under JupyterHub) when first needed, so a server started
before `grader login` picks the login up without a restart. The token stays in this process.
"""

from __future__ import annotations

from grader_client import AsyncGraderClient
from grader_client.config import resolve_credentials


class GraderConnection:
    def __init__(self) -> None:
        self._client: AsyncGraderClient | None = None
        # Upstream event streams open right now (one per open browser stream), for the log and tests.
        self.open_streams = 0

    @property
    def url(self) -> str | None:
        return self._client.url if self._client is not None else None

    def client(self) -> AsyncGraderClient:
        """The shared client; ConfigError (a 503 naming GRADER_URL) while nothing is configured."""
        if self._client is None:
            self._client = AsyncGraderClient(credentials=resolve_credentials())
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
