"""Slow and stalled HTTP clients, many at once, for tests and benchmarks/slow_clients.py.

Each attacker runs on one asyncio loop in a background thread and, once the service drops it,
reconnects after `reconnect_delay` seconds (a sustained attack, not a one-off). Kinds:

- `stalled`: an authenticated submission that sends its headers and 100 bytes of a 1 MiB body, then nothing;
- `trickling`: an authenticated submission that sends one byte of body a second;
- `slow-headers`: request headers, one line every 2 s, never finished;
- `idle`: a connection that sends nothing;
- `upload`: an authenticated upload of `upload_size` bytes that sends all but the last KiB, then stalls.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter

KINDS = ("stalled", "trickling", "slow-headers", "idle", "upload")


class Attack:
    def __init__(
        self,
        port: int,
        path: str,
        tokens: list[str],
        counts: dict[str, int],
        upload_size: int = 45 << 20,
        reconnect_delay: float = 1.0,
        ramp: float = 0.0,
    ):
        """`path`: an upload endpoint under /api/v1/ (a submission); `tokens`: one per attacker is
        realistic (each student has one upload in progress); `ramp`: seconds over which attackers arrive."""
        unknown = set(counts) - set(KINDS)
        assert not unknown, unknown
        self.port = port
        self.path = path
        self.tokens = tokens
        self.counts = counts
        self.upload_size = upload_size
        self.reconnect_delay = reconnect_delay
        self.ramp = ramp
        self.connected: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.open: Counter[str] = Counter()
        self.running = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[asyncio.Future[None]] = []

    def start(self) -> None:
        self.running = True
        total = sum(self.counts.values())

        async def spawn() -> None:
            n = 0
            for kind in KINDS:
                for _ in range(self.counts.get(kind, 0)):
                    delay = self.ramp * n / max(total, 1)
                    token = self.tokens[n % len(self.tokens)]
                    self.tasks.append(asyncio.ensure_future(self._attacker(kind, token, delay)))
                    n += 1

        asyncio.run_coroutine_threadsafe(spawn(), self.loop).result()

    def stop(self) -> None:
        """Close every attacker's connection."""
        self.running = False

        async def cancel() -> None:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self.tasks.clear()

        asyncio.run_coroutine_threadsafe(cancel(), self.loop).result()

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _head(self, token: str, length: int) -> bytes:
        return (
            f"POST /api/v1/{self.path} HTTP/1.1\r\nHost: attacker\r\n"
            f"Authorization: token {token}\r\nContent-Type: application/x-ipynb+json\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()

    async def _attacker(self, kind: str, token: str, delay: float) -> None:
        await asyncio.sleep(delay)
        while self.running:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.dropped[kind] += 1
                await asyncio.sleep(self.reconnect_delay)
                continue
            self.connected[kind] += 1
            self.open[kind] += 1
            try:
                await self._behave(kind, token, reader, writer)
                await reader.read()  # until the service answers and closes, or drops us
                self.dropped[kind] += 1
            except OSError:
                self.dropped[kind] += 1
            finally:
                self.open[kind] -= 1
                writer.close()
            # Real clients are not synchronised: retry after the delay, give or take a quarter.
            await asyncio.sleep(self.reconnect_delay * random.uniform(0.75, 1.25))

    async def _behave(
        self, kind: str, token: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def closed_within(seconds: float) -> bool:
            try:
                return await asyncio.wait_for(reader.read(1), seconds) == b""
            except TimeoutError:
                return False

        if kind == "stalled":
            writer.write(self._head(token, 1 << 20) + b"x" * 100)
        elif kind == "trickling":
            writer.write(self._head(token, 1 << 20))
            while self.running:
                writer.write(b"x")
                await writer.drain()
                if await closed_within(1.0):
                    return
        elif kind == "slow-headers":
            writer.write(f"POST /api/v1/{self.path} HTTP/1.1\r\n".encode())
            while self.running:
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                if await closed_within(2.0):
                    return
        elif kind == "upload":
            writer.write(self._head(token, self.upload_size))
            block = b"x" * (1 << 20)
            sent, end = 0, self.upload_size - 1024
            while sent < end:
                n = min(len(block), end - sent)
                writer.write(block[:n])
                await writer.drain()
                sent += n
        await writer.drain()
