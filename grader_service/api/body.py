"""A request body as it arrives: in memory while small, then in an unnamed temporary file.

An upload is never held in memory as a whole: past `spool_size` bytes the body goes to a file in the
data dir's tmp/ that has no name (it disappears when closed, or when the process dies), and the upload
is extracted from that file. So memory does not grow with the size or the number of uploads in flight,
and what a large upload took is given back when it ends.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO


class RequestBody:
    """The bytes received so far; `exceeded` once more than `limit` arrived (the rest is not kept)."""

    def __init__(self, limit: int, spool_size: int, tmp_dir: Path):
        self.limit = limit
        self.size = 0
        self._spool_size = spool_size
        self._tmp_dir = tmp_dir
        self._file: tempfile.SpooledTemporaryFile[bytes] | None = None

    @property
    def exceeded(self) -> bool:
        return self.size > self.limit

    @property
    def on_disk(self) -> bool:
        """Whether the body went to a file (closing it frees its pages: milliseconds for a large one)."""
        return self._file is not None and min(self.size, self.limit) > self._spool_size

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.exceeded or not chunk:
            return
        self._spool().write(chunk)

    def file(self) -> IO[bytes]:
        """The body from its first byte, as a seekable file."""
        spool = self._spool()
        spool.seek(0)
        return spool

    def _spool(self) -> tempfile.SpooledTemporaryFile[bytes]:
        if self._file is None:
            # Closed by close(), when the request ends.
            self._file = tempfile.SpooledTemporaryFile(self._spool_size, dir=str(self._tmp_dir))  # noqa: SIM115
        return self._file

    def read(self) -> bytes:
        """The whole body in memory: for JSON bodies, whose limit is small."""
        return self.file().read() if self._file is not None else b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
