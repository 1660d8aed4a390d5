"""Every private hook of nbclient, jupyter_client and ipykernel that grading relies on, in one place.

Grading needs things these packages do not offer publicly: bounded outputs, timeouts that keep the
kernel's state, kernel starts without fixed sleeps, forked kernels. So the engine overrides or calls
a few private methods and attributes. A minor release may rename or change any of them without
notice, and grading would then break silently (an override no longer called is no error). Hence:

- every such hook is listed in `HOOKS` below: what it is, why we need it, the versions checked;
- every private *call or attribute access* goes through one function of this module (the
  overrides stay in their subclasses, named as upstream names them: `kernel.py`,
  `kernel_streams.py`, `forked_kernel.py`);
- `tests/convert/test_compat.py` checks each hook against the installed packages (it exists, has
  the expected parameters, is still called where we rely on it, behaves as we expect);
- setup.cfg bounds these packages below their next minor release.

To upgrade one of them: raise its bound in setup.cfg, install, run `tests/convert/test_compat.py`
and the kernel tests (`tests/convert/test_timeouts.py`, `test_forked_kernel.py`,
`test_robustness.py`), adapt what fails, then update `checked` below. docs/architecture.md says
the same for newcomers.

This module imports none of these packages at run time: the forked kernel imports it through
`kernel_streams.py`, where only ipykernel is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ipykernel.iostream import OutStream
    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.channels import ZMQSocketChannel
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient


# The versions each package's hooks were checked against: the newest passes the contract tests; the
# oldest setup.cfg allows was read (the same hooks, names and parameters), not run.
NBCLIENT = "nbclient 0.11.0 (tested), 0.10.0 (read)"
JUPYTER_CLIENT = "jupyter_client 8.10.0 (tested), 8.6.0 (read)"
IPYKERNEL = "ipykernel 7.4.0 (tested), 6.29.5 (read)"


@dataclass(frozen=True)
class Hook:
    """One private method or attribute of another package that grading depends on."""

    owner: str  # dotted path of the class that has it
    name: str
    use: str  # "override" (we subclass it), "call" (we call it), "attribute" (we read/write it)
    why: str
    checked: str
    # For methods: the parameter names (after self) our code relies on; None for attributes.
    params: tuple[str, ...] | None = None
    # The upstream methods of `owner` that must still call it (an override nobody calls is dead).
    called_by: tuple[str, ...] = ()


NB = "nbclient.client.NotebookClient"
KC = "jupyter_client.client.KernelClient"
KM = "jupyter_client.manager.KernelManager"
OUT = "ipykernel.iostream.OutStream"

HOOKS: tuple[Hook, ...] = (
    Hook(
        NB,
        "_async_cleanup_kernel",
        "call",
        "shut the kernel down and close the client's channels, as nbclient does after a run: after a "
        "failed start, and when a kernel is replaced or the run ends (`GradingClient.close_kernel`)",
        NBCLIENT,
        params=(),
    ),
    Hook(
        NB,
        "_async_check_alive",
        "call",
        "while waiting for a reply our own way, notice a dead kernel (raises DeadKernelError)",
        NBCLIENT,
        params=(),
    ),
    Hook(
        NB,
        "_async_poll_for_reply",
        "override",
        "timeouts: interrupt the cell and kill its processes instead of giving up on the kernel",
        NBCLIENT,
        params=("msg_id", "cell", "timeout", "task_poll_output_msg", "task_poll_kernel_alive"),
        called_by=("async_execute_cell",),
    ),
    Hook(
        NB,
        "_check_raise_for_error",
        "override",
        "record a cell's error (and the carried grader check's result) instead of raising",
        NBCLIENT,
        params=("cell", "cell_index", "exec_reply"),
        called_by=("async_execute_cell",),
    ),
    Hook(
        NB,
        "_update_display_id",
        "override",
        "an update_display_data message larger than the output cap is dropped, not kept",
        NBCLIENT,
        params=("display_id", "msg"),
        called_by=("process_message",),
    ),
    Hook(
        NB,
        "output",
        "override",
        "the output cap: each output message is measured and dropped once the cell's budget is spent",
        NBCLIENT,
        params=("outs", "msg", "display_id", "cell_index"),
        called_by=("process_message",),
    ),
    Hook(
        NB,
        "_display_id_map",
        "attribute",
        "`output` registers a kept display output under its display id, as nbclient's own does",
        NBCLIENT,
    ),
    Hook(
        NB,
        "clear_before_next_output",
        "attribute",
        "`output` honours clear_output(wait=True) as nbclient's own does: this flag, set by "
        "`clear_output`, reset by `async_execute_cell` and by the next output",
        NBCLIENT,
    ),
    Hook(
        KC,
        "_handle_kernel_info_reply",
        "call",
        "our faster wait for the kernel (no 0.2 s IOPub quiet wait) adopts the kernel's protocol "
        "version from its kernel_info reply, as jupyter_client's `wait_for_ready` does",
        JUPYTER_CLIENT,
        params=("msg",),
    ),
    Hook(
        KC,
        "_iopub_channel",
        "attribute",
        "after an oversized message the IOPub socket is replaced: the `iopub_channel` property makes a "
        "new channel only once this attribute is None",
        JUPYTER_CLIENT,
    ),
    Hook(
        KM,
        "_async_wait",
        "override",
        "poll every 5 ms (not 100) whether a killed kernel is gone: once per grading",
        JUPYTER_CLIENT,
        params=("pollinterval",),
        called_by=("_async_finish_shutdown", "_async_kill_kernel"),
    ),
    Hook(
        KM,
        "start_kernel.__wrapped__",
        "call",
        "`start_kernel`/`shutdown_kernel` are wrapped by `in_pending_state`, which ends with a 10 ms "
        "sleep: we re-wrap the undecorated method (`settled_at_once`) without it",
        JUPYTER_CLIENT,
    ),
    Hook(
        KM,
        "_ready",
        "attribute",
        "`settled_at_once` keeps the manager's `ready` future as `in_pending_state` does (with "
        "`_attempted_start` and `owns_kernel`)",
        JUPYTER_CLIENT,
    ),
    Hook(
        OUT,
        "_flush",
        "override",
        "the forked kernel's streams skip empty flushes: `_flush` must run under the buffer lock",
        IPYKERNEL,
        params=(),
        called_by=("flush",),
    ),
    Hook(
        OUT,
        "_buffers",
        "attribute",
        "whether anything is buffered (with `_buffer_lock` and `_is_master_process`)",
        IPYKERNEL,
    ),
    Hook(
        "jupyter_client.provisioning.local_provisioner.LocalProvisioner",
        "process",
        "attribute",
        "`ForkProvisioner` (forked_kernel.py) sets it to a `ForkedProcess`, which has only what the "
        "local provisioner uses of a Popen: pid, poll, wait, send_signal, kill, terminate",
        JUPYTER_CLIENT,
    ),
    Hook(
        "ipykernel.kernelbase.Kernel",
        "_execute_sleep",
        "attribute",
        "a configurable 0.5 ms sleep before every execute_reply; the kernel is started with it at 0",
        IPYKERNEL,
    ),
)


# ---- nbclient -----------------------------------------------------------------------------------


def cleanup_kernel(client: NotebookClient) -> Awaitable[None]:
    """Shut the client's kernel down and close its channels."""
    return client._async_cleanup_kernel()


def check_alive(client: NotebookClient) -> Awaitable[None]:
    """Raise nbclient's DeadKernelError if the client's kernel has died."""
    return client._async_check_alive()


def display_id_map(client: NotebookClient) -> dict[str, dict[int, list[int]]]:
    """display id → cell index → positions of that cell's outputs showing it."""
    return client._display_id_map


# ---- jupyter_client -----------------------------------------------------------------------------


def adopt_kernel_info(kc: AsyncKernelClient, reply: dict[str, Any]) -> None:
    """Take over the protocol version from a kernel_info reply, as `wait_for_ready` does."""
    kc._handle_kernel_info_reply(reply)


def new_iopub_channel(kc: AsyncKernelClient) -> ZMQSocketChannel:
    """Close the client's IOPub channel (if any) and return a new one, not yet started."""
    old = kc._iopub_channel
    if old is not None:
        # A socket broken by an oversized message may not close cleanly.
        with contextlib.suppress(Exception):
            old.close()
    kc._iopub_channel = None
    return kc.iopub_channel


def settled_at_once(decorated: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """jupyter_client's `in_pending_state`-decorated `decorated`, re-wrapped without its 10 ms sleep.

    The decorator marks the manager pending while the method runs, then sleeps "so tests can
    capture the state" before marking it ready: 20 ms of every grading (a start and a shutdown).
    """
    method = decorated.__wrapped__  # type: ignore[attr-defined]  # set by functools.wraps

    @functools.wraps(method)
    async def wrapper(self: AsyncKernelManager, *args: Any, **kwargs: Any) -> Any:
        if self._attempted_start or not self._ready:
            self._ready = asyncio.get_running_loop().create_future()
        try:
            out = await method(self, *args, **kwargs)
        except Exception as e:
            self._ready.set_exception(e)
            raise
        if self.owns_kernel:
            self._ready.set_result(None)
        return out

    return wrapper


# ---- ipykernel ----------------------------------------------------------------------------------

# The kernel's command-line option setting `Kernel._execute_sleep` to 0.
NO_EXECUTE_SLEEP = "--Kernel._execute_sleep=0"


def buffer_lock(stream: OutStream) -> Any:
    """The lock under which ipykernel's OutStream writes to and rotates its buffers."""
    return stream._buffer_lock


def nothing_to_flush(stream: OutStream) -> bool:
    """True if a flush of `stream` would send nothing (call with `buffer_lock` held)."""
    return stream.echo is None and stream._is_master_process() and not stream._buffers
