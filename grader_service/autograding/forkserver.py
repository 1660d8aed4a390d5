"""The service's side of the fork server (`zygote.py`): start it, ask it for jobs, hear how they end.

One unix SOCK_SEQPACKET socket carries the whole conversation, read by the event loop
(`add_reader`): no thread, no polling. Each job's log pipe is created here and its write end
handed to the zygote with the request (SCM_RIGHTS), so the job writes its log straight to us.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .sandbox import Limits

_MAX_MESSAGE = 1 << 20


class ForkServerError(RuntimeError):
    """The fork server could not start a job, or died while jobs ran (retrying can help)."""


class ForkServer:
    def __init__(self, python: str, env: dict[str, str], log: logging.Logger):
        self.python = python
        self.env = env
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._started: dict[int, asyncio.Future[int]] = {}
        self._exited: dict[int, asyncio.Future[int]] = {}
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None and self.sock is not None

    async def start(self, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = await asyncio.create_subprocess_exec(
                self.python, "-I", "-m", "grader_service.autograding.zygote", str(theirs.fileno()),
                pass_fds=[theirs.fileno()], env=self.env, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self._ready = loop.create_future()
        loop.add_reader(ours, self._on_readable)
        try:
            await asyncio.wait_for(self._ready, timeout)
        except (TimeoutError, ForkServerError):
            await self.stop()
            raise ForkServerError("the fork server did not start (see the log above)") from None

    async def stop(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock)
            self.sock.close()  # the zygote kills every job and exits when its end closes
            self.sock = None
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        self._fail_all("the fork server stopped")

    async def spawn(
        self,
        job_id: int,
        uid: int,
        job_dir: Path,
        argv: list[str] | None,
        env: dict[str, str],
        limits: Limits,
        log_fd: int,
        hidden: list[str] | None = None,
        stage: dict[str, Any] | None = None,
    ) -> asyncio.Future[int]:
        """Start a job; the returned future is its exit code (negative: the signal that killed it)."""
        async with self._lock:
            if not self.running:
                await self.start()
        loop = asyncio.get_running_loop()
        started: asyncio.Future[int] = loop.create_future()
        exited: asyncio.Future[int] = loop.create_future()
        self._started[job_id], self._exited[job_id] = started, exited
        request = {"op": "run", "job": job_id, "uid": uid, "job_dir": str(job_dir), "argv": argv, "env": env,
                   "limits": asdict(limits), "hidden": hidden or [], "stage": stage}  # fmt: skip
        try:
            await self._send(json.dumps(request).encode(), [log_fd])
            await started
        except BaseException:
            self._started.pop(job_id, None)
            self._exited.pop(job_id, None)
            raise
        return exited

    async def kill(self, job_id: int) -> None:
        if self.running:
            await self._send(json.dumps({"op": "kill", "job": job_id}).encode(), [])

    async def _send(self, data: bytes, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.sock is None:
                raise ForkServerError("the fork server is not running")
            try:
                socket.send_fds(self.sock, [data], fds)
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self.sock, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(self.sock)
            except OSError as e:
                self._lost(f"the fork server is gone ({e})")
                raise ForkServerError(f"the fork server is gone ({e})") from None

    def _on_readable(self) -> None:
        while self.sock is not None:
            try:
                data = self.sock.recv(_MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError as e:
                data = b""
                self.log.error("Fork server connection failed: %s", e)
            if not data:
                self._lost("the fork server exited")
                return
            self._dispatch(json.loads(data))

    def _dispatch(self, message: dict[str, Any]) -> None:
        op, job = message.get("op"), message.get("job")
        if op == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(message)
        elif op == "started" and job in self._started:
            _resolve(self._started.pop(job), message["pid"])
        elif op == "exited" and job in self._exited:
            _resolve(self._exited.pop(job), message["returncode"])
        elif op == "failed":
            error = ForkServerError(f"the fork server could not start job {job}: {message.get('error')}")
            for futures in (self._started, self._exited):
                if job in futures:
                    _fail(futures.pop(job), error)

    def _lost(self, reason: str) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock)
            self.sock.close()
            self.sock = None
        if self._ready is not None and not self._ready.done():
            _fail(self._ready, ForkServerError(reason))
        if self._started or self._exited:
            self.log.error("Fork server lost (%s): its running jobs will be retried", reason)
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        for futures in (self._started, self._exited):
            for future in futures.values():
                _fail(future, ForkServerError(reason))
            futures.clear()


def _resolve(future: asyncio.Future[int], value: int) -> None:
    if not future.done():
        future.set_result(int(value))


def _fail(future: asyncio.Future[Any], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
        future.exception()  # retrieved: a job nobody waits for any more must not warn
