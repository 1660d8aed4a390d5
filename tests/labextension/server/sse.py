"""A browser-like reader of the relay's event stream over a raw socket, so a test controls when the
browser goes away (closing the socket) and sees exactly the frames and headers sent."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Frame:
    id: str | None = None
    event: str | None = None
    retry: int | None = None
    data: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return json.loads("\n".join(self.data))


class Stream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    @classmethod
    async def open(cls, port: int, path: str, headers: dict[str, str]) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        stream = cls(reader, writer)
        status_line = await asyncio.wait_for(reader.readline(), 30)
        stream.status = int(status_line.split()[1])
        while (line := await asyncio.wait_for(reader.readline(), 30)) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            stream.headers[key.strip().lower()] = value.strip()
        if stream.status != 200:
            length = int(stream.headers.get("content-length", "0"))
            stream.body = await reader.readexactly(length) if length else b""
        return stream

    def error(self) -> dict[str, Any]:
        return json.loads(self.body)

    async def frames(self, timeout: float = 60):
        """Frames as they come (the response is chunked: chunk sizes are skipped), until the end."""
        buffer = ""
        frame = Frame()
        while True:
            size_line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not size_line:
                return
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return
            chunk = await self.reader.readexactly(size + 2)
            buffer += chunk[:-2].decode()
            while "\n" in buffer:
                line, buffer = buffer.split("\n", 1)
                if line == "":
                    if frame.data or frame.id or frame.retry is not None or frame.event:
                        yield frame
                    frame = Frame()
                elif line.startswith(":"):
                    continue
                else:
                    key, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if key == "data":
                        frame.data.append(value)
                    elif key == "id":
                        frame.id = value
                    elif key == "event":
                        frame.event = value
                    elif key == "retry":
                        frame.retry = int(value)

    def close(self) -> None:
        self.writer.close()
