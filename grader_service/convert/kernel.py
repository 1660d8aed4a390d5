"""Running a plan in a fresh, contained kernel with nbclient.

`GradingClient` is an nbclient `NotebookClient` with four changes, each for a grading reason:

- **Output cap.** nbclient appends every output message to the cell; a cell printing gigabytes
  would exhaust the grader's memory and then the disk. Here each message is looked at as it
  arrives and dropped once the cell's budget (default 1 MB) is spent; a visible notice says so.
  Scoring facts (errors, displayed values) are recorded separately and survive truncation. The
  zmq sockets also get a maximum message size, so even a single gigantic message cannot blow up
  the grader: the channel drops it and is reconnected.
- **Timeouts.** A cell exceeding its timeout is stopped without losing the kernel's state: SIGINT
  to the kernel's process group, and every process the notebook started is killed (a cell
  waiting for a child in C, as `os.system` does with SIGINT ignored, returns once the child is
  gone). Both are repeated every `STOP_INTERVAL` (code that catches one KeyboardInterrupt gets
  another). If the kernel answers within the grace period, the next cell runs in the same
  kernel, with every definition made before the block; otherwise `KernelUnresponsive` is raised
  and the caller replaces the kernel.
- **No widget state** is kept (unbounded, and useless for grading).
- **Kernel launch**: the kernel runs `python -I -m ipykernel_launcher` (isolated mode: no
  PYTHON* variables, no user site, and no working directory on sys.path at start-up, so a file
  like `ipykernel_launcher.py` or `zmq.py` in a submission cannot replace the kernel), with a
  minimal environment, IPC sockets, and HOME/IPYTHONDIR/TMPDIR/... pointing into a private
  temporary directory that is deleted afterwards. Its working directory is the notebook's
  directory in the submission.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbclient.util import ensure_async
from nbformat import NotebookNode
from nbformat.v4 import output_from_msg
from traitlets import Type

from . import _compat, processes
from .forked_kernel import ForkProvisioner, KernelLauncher
from .options import DEFAULT_OUTPUT_LIMIT

KERNEL_NAME = "grader-python"

# The user expression a cell's request carries a grader check under (see `GradingClient.run_cell`).
CARRIED_EXPRESSION = "grader"

# Environment variables passed through to the kernel; everything else (tokens, service config,
# paths that would point the student at the instructor's files) is dropped.
KERNEL_ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# While a timed-out cell does not answer, the interrupt (and the killing of the notebook's
# processes) is repeated this often, until the grace period is over.
STOP_INTERVAL = 0.25


class KernelUnresponsive(Exception):
    """The kernel ignored the interrupts after a timeout; it must be killed."""


@dataclass
class CellRecord:
    """What the grader observed for one cell, independent of the (capped) outputs kept."""

    status: str = "not-run"  # ok | error | timeout | dead | unresponsive | not-run
    reply_error: tuple[str, str] | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    output_bytes: int = 0
    truncated: bool = False
    iopub_incomplete: bool = False
    duration: float = 0.0
    # The result of the grader check carried by this cell's request (see `run_cell`); None when
    # nothing was carried or the kernel did not evaluate it (it skips them after an error).
    carried: tuple[str, str | None] | None = None

    @property
    def failed(self) -> bool:
        return self.status != "ok" or self.reply_error is not None or bool(self.errors)

    @property
    def error(self) -> tuple[str, str] | None:
        if self.errors:
            return self.errors[-1]
        return self.reply_error


def _payload_size(content: dict[str, Any]) -> int:
    size = len(content.get("text", "") or "")
    for value in (content.get("data") or {}).values():
        size += len(value) if isinstance(value, str) else len(json.dumps(value))
    for line in content.get("traceback") or []:
        size += len(line)
    return size + len(content.get("evalue", "") or "")


def _expression_result(result: dict[str, Any]) -> tuple[str, str | None]:
    """(status, text/plain) of one evaluated user expression."""
    if result.get("status") != "ok":
        return "error", f"{result.get('ename')}: {result.get('evalue')}"
    return "ok", _text_plain(result)


def _text_plain(content: dict[str, Any]) -> str:
    value = (content.get("data") or {}).get("text/plain", "")
    if isinstance(value, list):
        value = "".join(value)
    return value if isinstance(value, str) else ""


class GradingClient(NotebookClient):
    """nbclient with bounded outputs, interrupt-then-kill timeouts and scoring records."""

    def __init__(
        self,
        nb: NotebookNode,
        *,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        interrupt_grace: float = 5.0,
        max_message_size: int = 64 * 1024 * 1024,
        **kwargs: Any,
    ):
        super().__init__(nb, **kwargs)
        self.output_limit = output_limit
        self.interrupt_grace = interrupt_grace
        self.max_message_size = max_message_size
        self.records: dict[int, CellRecord] = {}
        # Processes a timeout never kills: the grader's own (those from before the kernel started)
        # and the kernel; set by the caller once the kernel runs.
        self.spared_pids: set[int] = set()
        self.processes_killed: int = 0
        # The running cell's timeout (set by `run_cell`; nbclient's own `timeout` is not used).
        self.current_timeout: float = 30.0
        self.current_index: int = -1

    # ---- kernel client ---------------------------------------------------------------------

    @property
    def grading_kc(self) -> GradingKernelClient:
        """The kernel client (nbclient types it as any client; a `GradingKernelManager` makes ours)."""
        assert isinstance(self.kc, GradingKernelClient)
        return self.kc

    async def async_start_new_kernel_client(self) -> Any:
        """As nbclient's, with a maximum zmq message size set before the sockets exist."""
        assert self.km is not None
        try:
            self.kc = self.km.client()
            self.kc.context.setsockopt(zmq.MAXMSGSIZE, self.max_message_size)
            # The client connects while the new kernel is still binding its sockets; zmq retries
            # a refused connect after RECONNECT_IVL (default 100 ms, most of a kernel's start-up).
            self.kc.context.setsockopt(zmq.RECONNECT_IVL, 5)
            self.kc.start_channels()
            await self._wait_for_ready(self.startup_timeout)
        except Exception:
            await _compat.cleanup_kernel(self)
            raise
        self.kc.allow_stdin = False
        return self.kc

    async def close_kernel(self) -> None:
        """Shut the kernel down and close the client's channels, as nbclient does after a run."""
        await _compat.cleanup_kernel(self)

    async def _wait_for_ready(self, timeout: float) -> None:
        """The kernel answers kernel_info on shell and its IOPub messages reach us.

        As jupyter_client's `wait_for_ready`, without its closing 0.2 s wait for IOPub to go quiet
        (a fifth of a small notebook's grading time): stale status messages are harmless here,
        since every reply and output is matched to its request's msg_id.
        """
        kc = self.grading_kc
        deadline = time.monotonic() + timeout
        while True:
            msg_id = kc.kernel_info()
            reply_by = min(deadline, time.monotonic() + 1.0)
            while time.monotonic() < reply_by:
                try:
                    msg = await ensure_async(
                        kc.shell_channel.get_msg(timeout=max(0.0, reply_by - time.monotonic()))
                    )
                except Empty:
                    break
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "kernel_info_reply":
                    # IOPub is subscribed once any message arrives on it (the kernel's status).
                    with contextlib.suppress(Empty):
                        await ensure_async(kc.iopub_channel.get_msg(timeout=0.2))
                        _compat.adopt_kernel_info(kc, msg)
                        return
                    break
            if not await kc.is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")

    async def reconnect_iopub(self, timeout: float = 5.0) -> bool:
        """Replace the IOPub socket (after an oversized message dropped it) and check it works."""
        kc = self.grading_kc
        channel = _compat.new_iopub_channel(kc)
        with contextlib.suppress(Exception):
            channel.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = kc.kernel_info()
            until = min(deadline, time.monotonic() + 0.5)
            while time.monotonic() < until:
                try:
                    msg = await ensure_async(channel.get_msg(timeout=max(0.01, until - time.monotonic())))
                except Empty:
                    break
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status":
                    return True
        return False

    # ---- outputs -----------------------------------------------------------------------------

    def record(self, cell_index: int) -> CellRecord:
        rec = self.records.get(cell_index)
        if rec is None:
            rec = self.records[cell_index] = CellRecord()
        return rec

    # A private hook of nbclient: see _compat.HOOKS.
    def output(
        self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int
    ) -> NotebookNode | None:
        msg_type = msg["msg_type"]
        content = msg.get("content") or {}
        rec = self.record(cell_index)
        if msg_type == "execute_result":
            rec.results.append(_text_plain(content)[:1000])
        elif msg_type == "error":
            rec.errors.append((str(content.get("ename", ""))[:200], str(content.get("evalue", ""))[:2000]))

        size = _payload_size(content)
        remaining = self.output_limit - rec.output_bytes
        rec.output_bytes += size
        if self.clear_before_next_output:
            outs[:] = []
            self.clear_display_id_mapping(cell_index)
            self.clear_before_next_output = False
        if size > remaining:
            was_truncated = rec.truncated
            rec.truncated = True
            if msg_type == "stream" and remaining > 0 and not was_truncated:
                content = dict(content, text=content.get("text", "")[:remaining])
            elif msg_type == "error":
                # Keep the error itself visible; its traceback may be what overflowed.
                content = dict(content, evalue=str(content.get("evalue", ""))[:2000], traceback=[])
            else:
                return None
            msg = dict(msg, content=content)
        if msg_type == "stream" and outs and outs[-1].get("output_type") == "stream":
            last = outs[-1]
            if last.get("name") == content.get("name"):
                last["text"] = last.get("text", "") + content.get("text", "")
                return last
        try:
            out = output_from_msg(msg)
        except ValueError:
            return None
        if display_id:
            _compat.display_id_map(self).setdefault(display_id, {}).setdefault(cell_index, []).append(
                len(outs)
            )
        outs.append(out)
        return out

    # A private hook of nbclient: see _compat.HOOKS.
    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        if _payload_size(msg.get("content") or {}) <= self.output_limit:
            super()._update_display_id(display_id, msg)

    def handle_comm_msg(self, outs: list[NotebookNode], msg: dict[str, Any], cell_index: int) -> None:
        """Widgets are irrelevant to grading and their state is unbounded: ignore comms."""

    # ---- timeouts ----------------------------------------------------------------------------

    async def stop_cell(self) -> None:
        """Interrupt the kernel and kill every process the notebook started (not the kernel).

        What a blocked cell waits for (a sleeping child, one that ignores SIGINT, a pool worker)
        is then gone, so the cell returns and the kernel keeps its namespace. Processes started
        by earlier cells go too: after a timeout, nothing the notebook started survives.
        """
        assert self.km is not None
        with contextlib.suppress(Exception):  # a kernel that just died is noticed by the caller
            await ensure_async(self.km.interrupt_kernel())
        # Without `spared_pids` (a client used on its own), which processes are the grader's is
        # not known: only the interrupt is sent.
        if self.spared_pids:
            kernel = getattr(self.km.provisioner, "pid", None)
            spared = self.spared_pids | ({kernel} if kernel else set())
            self.processes_killed += len(processes.kill_descendants(spared))

    async def _await_reply(
        self, msg_id: str, timeout: float, on_timeout: Callable[[], None]
    ) -> dict[str, Any]:
        """The shell reply to `msg_id`; past `timeout`, stop the cell until the grace period ends.

        `on_timeout` is called once, when the timeout is first reached. Raises KernelUnresponsive
        if the kernel has not answered at the end of the grace period.
        """
        assert self.kc is not None
        deadline = time.monotonic() + timeout
        give_up: float | None = None
        while True:
            try:
                msg = await ensure_async(
                    self.kc.shell_channel.get_msg(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
                )
            except Empty:
                await _compat.check_alive(self)
                now = time.monotonic()
                if now < deadline:
                    continue
                if give_up is None:
                    on_timeout()
                    give_up = now + self.interrupt_grace
                elif now >= give_up:
                    raise KernelUnresponsive() from None
                await self.stop_cell()
                deadline = min(give_up, time.monotonic() + STOP_INTERVAL)
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    # A private hook of nbclient: see _compat.HOOKS.
    async def _async_poll_for_reply(
        self,
        msg_id: str,
        cell: NotebookNode,
        timeout: int | None,
        task_poll_output_msg: asyncio.Future[Any],
        task_poll_kernel_alive: asyncio.Future[Any],
    ) -> dict[str, Any]:
        rec = self.record(self.current_index)

        def timed_out() -> None:
            rec.status = "timeout"

        try:
            msg = await self._await_reply(msg_id, self.current_timeout, timed_out)
        except KernelUnresponsive:
            task_poll_kernel_alive.cancel()
            task_poll_output_msg.cancel()
            raise
        try:
            await asyncio.wait_for(task_poll_output_msg, self.iopub_timeout)
        except (TimeoutError, Empty):
            rec.iopub_incomplete = True
            task_poll_output_msg.cancel()
        task_poll_kernel_alive.cancel()
        return msg

    # ---- running steps -----------------------------------------------------------------------

    async def run_cell(
        self,
        cell: NotebookNode,
        index: int,
        timeout: float,
        execution_count: int,
        carry: str | None = None,
    ) -> CellRecord:
        """Execute one code cell; never raises for anything the cell itself does.

        `carry` is a grader check (an expression, as for `run_internal`) sent as a user expression
        of this cell's request: the kernel evaluates it right after the cell's code, exactly where
        a separate request would have, and saves a round trip. Its result is `rec.carried`, or
        None if the cell failed (the kernel then skips user expressions) and it must be sent alone.
        """
        self.current_index = index
        self.current_timeout = max(0.1, timeout)
        rec = self.record(index)
        rec.status = "ok"
        rec.carried = None
        self._last_reply_error = None
        self._last_carried = None
        assert isinstance(self.kc, GradingKernelClient)
        self.kc.carry = carry
        started = time.monotonic()
        try:
            await self.async_execute_cell(cell, index, execution_count=execution_count)
        except DeadKernelError:
            rec.status = "dead"
        except KernelUnresponsive:
            rec.status = "unresponsive"
        finally:
            rec.duration = time.monotonic() - started
            self.kc.carry = None
        if rec.status in ("ok", "timeout"):
            rec.reply_error = self._last_reply_error
        if rec.status in ("ok", "timeout") and rec.reply_error is None:
            # (A timed-out cell that still ended without an error -- it caught the interrupt, or
            # what it waited for was killed -- had the check evaluated too: it must not run twice.)
            rec.carried = self._last_carried
        if rec.truncated:
            _notice(
                cell,
                f"[output truncated by the grader: this cell produced {rec.output_bytes:,} "
                f"bytes of output, more than the limit of {self.output_limit:,}]",
            )
        if rec.status == "timeout":
            _notice(
                cell,
                f"[stopped by the grader: this cell exceeded its time limit of {self.current_timeout:g} s; "
                "the notebook's processes were ended and the next cells ran with what it had defined]",
            )
        elif rec.status == "unresponsive":
            _notice(
                cell,
                f"[stopped by the grader: this cell exceeded its time limit of {self.current_timeout:g} s "
                "and did not stop when interrupted; the kernel was killed]",
            )
        if rec.iopub_incomplete and rec.status in ("ok", "timeout"):
            await self.reconnect_iopub()
        return rec

    _last_reply_error: tuple[str, str] | None = None
    _last_carried: tuple[str, str | None] | None = None

    # A private hook of nbclient: see _compat.HOOKS.
    async def _check_raise_for_error(
        self, cell: NotebookNode, cell_index: int, exec_reply: dict[str, Any] | None
    ) -> None:
        content = (exec_reply or {}).get("content") or {}
        if content.get("status", "ok") != "ok":
            self._last_reply_error = (
                str(content.get("ename", "Error"))[:200],
                str(content.get("evalue", content.get("status", "")))[:2000],
            )
        else:
            self._last_reply_error = None
            carried = (content.get("user_expressions") or {}).get(CARRIED_EXPRESSION)
            if isinstance(carried, dict):
                self._last_carried = _expression_result(carried)

    async def run_internal(self, expression: str, timeout: float) -> tuple[str, str | None]:
        """Evaluate `expression` silently (no history, no cell events); return (status, text/plain).

        Raises DeadKernelError / KernelUnresponsive like a cell.
        """
        assert self.kc is not None and self.km is not None
        msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"r": expression})
        msg = await self._await_reply(msg_id, timeout, lambda: None)
        content = msg.get("content") or {}
        if content.get("status") != "ok":
            return "error", f"{content.get('ename')}: {content.get('evalue')}"
        return _expression_result((content.get("user_expressions") or {}).get("r") or {})


def _notice(cell: NotebookNode, text: str) -> None:
    """Append the grader's own message to a cell's outputs (on stderr, like Python's warnings)."""
    content = {"name": "stderr", "text": f"\n{text}\n"}
    cell.outputs.append(
        output_from_msg({"msg_type": "stream", "content": content, "header": {"msg_type": "stream"}})
    )


class GradingKernelClient(AsyncKernelClient):
    """jupyter_client's client, able to carry one grader check on the next cell it sends."""

    carry: str | None = None

    def execute(
        self,
        code: str,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool | None = None,
        stop_on_error: bool = True,
        **kwargs: Any,
    ) -> str:
        if self.carry is not None and not silent:
            user_expressions = {**(user_expressions or {}), CARRIED_EXPRESSION: self.carry}
            self.carry = None
        return super().execute(
            code, silent, store_history, user_expressions, allow_stdin, stop_on_error, **kwargs
        )


class GradingKernelManager(AsyncKernelManager):
    """jupyter_client's manager without its fixed waits.

    Every grading starts one kernel and kills it at the end. A SIGKILLed kernel is gone within a
    few ms, so whether it is gone is checked every 5 ms (not 100); and starting and shutting down
    do not end with jupyter_client's 10 ms sleeps.
    """

    client_factory = Type(GradingKernelClient, klass=AsyncKernelClient)

    start_kernel = _compat.settled_at_once(AsyncKernelManager.start_kernel)
    shutdown_kernel = _compat.settled_at_once(AsyncKernelManager.shutdown_kernel)

    # A private hook of jupyter_client: see _compat.HOOKS.
    async def _async_wait(self, pollinterval: float = 0.005) -> None:
        await super()._async_wait(pollinterval=pollinterval)


@dataclass
class KernelEnvironment:
    """The private directory and launch settings of one kernel."""

    root: Path
    cwd: Path
    python: str
    env: dict[str, str]

    @classmethod
    def create(
        cls, cwd: Path, python: str | None = None, extra_env: dict[str, str] | None = None
    ) -> KernelEnvironment:
        root = Path(tempfile.mkdtemp(prefix="grader-kernel-"))
        os.chmod(root, 0o700)
        for sub in ("home", "ipython", "runtime", "tmp", "kernels/" + KERNEL_NAME, "config", "data", "cache"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        python = python or sys.executable
        spec = {
            "argv": [
                python,
                "-I",
                "-m",
                "ipykernel_launcher",
                "-f",
                "{connection_file}",
                "--HistoryManager.enabled=False",
                "--IPKernelApp.log_level=ERROR",
                # Python's own traceback layout: the failing line of each frame, no context
                # lines. IPython's default ("Context") costs ~20 ms of kernel CPU per error, and
                # grading raises errors by design (mutation runs, canaries) in every notebook.
                "--InteractiveShell.xmode=Plain",
                # ipykernel sleeps 0.5 ms before every execute_reply, for clients that stop
                # reading IOPub at the reply; nbclient reads on until the kernel reports idle.
                _compat.NO_EXECUTE_SLEEP,
            ],
            "display_name": "grader (python)",
            "language": "python",
            "interrupt_mode": "signal",
            "metadata": {"debugger": False},
        }
        (root / "kernels" / KERNEL_NAME / "kernel.json").write_text(json.dumps(spec))
        env = {key: os.environ[key] for key in KERNEL_ENV_PASSTHROUGH if key in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(
            {
                "HOME": str(root / "home"),
                "IPYTHONDIR": str(root / "ipython"),
                "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
                "JUPYTER_CONFIG_DIR": str(root / "config"),
                "JUPYTER_DATA_DIR": str(root / "data"),
                "JUPYTER_PLATFORM_DIRS": "1",
                "XDG_CACHE_HOME": str(root / "cache"),
                "MPLCONFIGDIR": str(root / "cache"),
                "MPLBACKEND": "agg",
                "TMPDIR": str(root / "tmp"),
                "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            }
        )
        env.update(extra_env or {})
        return cls(root=root, cwd=cwd, python=python, env=env)

    def kernel_manager(self, launcher: KernelLauncher | None = None) -> AsyncKernelManager:
        """A manager for the kernel; with a launcher, the kernel is forked from it instead of exec'd."""
        km = GradingKernelManager(
            kernel_name=KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(self.root / "kernels")]),
            transport="ipc",
            ip=str(self.root / "runtime" / "k"),
        )
        km.connection_file = str(self.root / "runtime" / "kernel.json")
        if launcher is not None:
            provisioner = ForkProvisioner(kernel_id=str(uuid.uuid4()), kernel_spec=km.kernel_spec, parent=km)
            provisioner.launcher = launcher
            km.provisioner = provisioner
        return km

    def remove(self) -> None:
        """Delete the private directory, including anything the student made unwritable in it."""

        def retry_writable(func: Any, path: str, *exc: Any) -> None:
            with contextlib.suppress(OSError):
                os.chmod(os.path.dirname(path), 0o700)
                os.chmod(path, 0o700)
                func(path)

        if sys.version_info >= (3, 12):
            shutil.rmtree(self.root, onexc=retry_writable)
        else:
            shutil.rmtree(self.root, onerror=retry_writable)


def kill_kernel_tree(pgid: int | None, exclude: set[int]) -> list[int]:
    """Kill the kernel's process group and every other process it left behind."""
    processes.kill_process_group(pgid)
    return processes.kill_descendants(exclude)
