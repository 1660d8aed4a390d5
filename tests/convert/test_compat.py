"""Contract tests: every private hook in `grader_service.convert._compat.HOOKS` against the installed packages.

Each fails when an upgrade of nbclient, jupyter_client or ipykernel renames a hook, changes the
parameters we rely on, stops calling a method we override, or changes what it does.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from pathlib import Path

import nbformat
import pytest
import zmq
from ipykernel.iostream import IOPubThread, OutStream
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session

from grader_service.convert import _compat
from grader_service.convert.kernel import GradingClient, GradingKernelManager
from grader_service.convert.kernel_streams import GradingOutStream

CONVERT = Path(_compat.__file__).parent

# The class of ours that overrides each owner's hooks.
OVERRIDERS = {_compat.NB: GradingClient, _compat.KM: GradingKernelManager, _compat.OUT: GradingOutStream}


def _owner(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _params(function: object) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(function).parameters if p != "self")  # type: ignore[arg-type]


METHODS = [h for h in _compat.HOOKS if h.params is not None]


@pytest.mark.parametrize("hook", METHODS, ids=lambda h: f"{h.owner}.{h.name}")
def test_method_hooks_have_the_expected_parameters(hook: _compat.Hook) -> None:
    upstream = getattr(_owner(hook.owner), hook.name, None)
    assert upstream is not None, f"{hook.owner} has no {hook.name} any more"
    assert _params(upstream) == hook.params
    if hook.use == "override":
        ours = vars(OVERRIDERS[hook.owner]).get(hook.name)
        assert ours is not None, f"{OVERRIDERS[hook.owner].__name__} no longer overrides {hook.name}"
        assert _params(ours) == hook.params
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(upstream)


CALLED = [(h, caller) for h in _compat.HOOKS for caller in h.called_by]


@pytest.mark.parametrize("hook, caller", CALLED, ids=lambda v: getattr(v, "name", v))
def test_overridden_hooks_are_still_called_upstream(hook: _compat.Hook, caller: str) -> None:
    """An override nobody calls any more is silently dead: its caller must still call it."""
    source = inspect.getsource(getattr(_owner(hook.owner), caller))
    assert re.search(rf"\.{re.escape(hook.name)}\(", source), f"{caller} no longer calls {hook.name}"


def test_every_hook_says_why_and_what_was_checked() -> None:
    for hook in _compat.HOOKS:
        assert hook.use in ("override", "call", "attribute")
        assert len(hook.why) > 30 and hook.checked


def test_no_private_hook_is_used_outside_compat() -> None:
    """Calls and attribute accesses go through _compat; overrides only define or `super()` them."""
    names = {h.name.split(".")[-1] for h in _compat.HOOKS if h.name.startswith("_")}
    names |= {"__wrapped__", "_buffer_lock", "_is_master_process", "_attempted_start"}
    pattern = re.compile(r"\.(" + "|".join(re.escape(n) for n in sorted(names)) + r")\b")
    offenders = []
    for path in CONVERT.rglob("*.py"):
        if path.name == "_compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in pattern.finditer(line):
                if not line[: match.start()].rstrip().endswith("super()"):
                    offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


# ---- behaviour ---------------------------------------------------------------------------------


def test_display_id_map_is_the_clients_own_mapping() -> None:
    """What `GradingClient.output` registers there is what nbclient updates on update_display_data."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("display(1, display_id=True)")])
    client = GradingClient(nb)
    assert _compat.display_id_map(client) == {}

    def message(msg_type: str, text: str) -> dict:
        content = {"data": {"text/plain": text}, "metadata": {}, "transient": {"display_id": "d1"}}
        return {"msg_type": msg_type, "header": {"msg_type": msg_type}, "content": content}

    outs = nb.cells[0].outputs
    client.clear_before_next_output = False  # as async_execute_cell starts every cell
    client.output(outs, message("display_data", "1"), "d1", 0)
    assert _compat.display_id_map(client) == {"d1": {0: [0]}}
    client._update_display_id("d1", message("update_display_data", "2"))
    assert outs[0]["data"]["text/plain"] == "2"
    # clear_output(wait=True): nbclient sets the flag, our `output` clears before the next output.
    client.clear_output(outs, {"content": {"wait": True}, "parent_header": {"msg_id": "m"}}, 0)
    assert client.clear_before_next_output is True and len(outs) == 1
    client.output(outs, message("display_data", "3"), None, 0)
    assert [o["data"]["text/plain"] for o in outs] == ["3"]
    assert _compat.display_id_map(client) == {"d1": {0: []}}  # cleared by nbclient's own method


def test_adopt_kernel_info_takes_the_protocol_version() -> None:
    kc = AsyncKernelClient()
    current = kc.session.adapt_version
    _compat.adopt_kernel_info(kc, {"content": {"protocol_version": "5.3"}})
    assert kc.session.adapt_version == current
    _compat.adopt_kernel_info(kc, {"content": {"protocol_version": "4.1"}})
    assert kc.session.adapt_version == 4


def test_new_iopub_channel_replaces_the_channel(tmp_path: Path) -> None:
    kc = AsyncKernelClient(transport="ipc", ip=str(tmp_path / "k"))
    first = kc.iopub_channel
    second = _compat.new_iopub_channel(kc)
    assert second is not first and kc.iopub_channel is second
    assert first.socket is None  # closed
    second.close()


def test_settled_at_once_keeps_the_ready_future() -> None:
    """A fresh manager's pending state, and what `settled_at_once` does with it on success and failure."""
    assert inspect.iscoroutinefunction(AsyncKernelManager.start_kernel.__wrapped__)
    assert inspect.iscoroutinefunction(AsyncKernelManager.shutdown_kernel.__wrapped__)
    km = AsyncKernelManager()
    assert km._attempted_start is False and km._ready is None and km.owns_kernel

    async def ok(self: AsyncKernelManager) -> str:
        return "started"

    async def fails(self: AsyncKernelManager) -> None:
        raise RuntimeError("no kernel")

    ok.__wrapped__ = ok  # type: ignore[attr-defined]  # as in_pending_state's functools.wraps sets it
    fails.__wrapped__ = fails  # type: ignore[attr-defined]  # same

    async def run() -> None:
        assert await _compat.settled_at_once(ok)(km) == "started"
        assert km._ready is not None and km._ready.done() and km._ready.exception() is None
        km._attempted_start = True
        with pytest.raises(RuntimeError):
            await _compat.settled_at_once(fails)(km)
        assert isinstance(km._ready.exception(), RuntimeError)
        # The manager's own `ready` is the future settled_at_once set.
        assert km.ready is km._ready

    asyncio.run(run())


def test_grading_kernel_manager_uses_the_undecorated_methods() -> None:
    for name in ("start_kernel", "shutdown_kernel"):
        ours = vars(GradingKernelManager)[name]
        assert ours.__wrapped__ is getattr(AsyncKernelManager, name).__wrapped__


def test_out_stream_buffers_tell_whether_a_flush_has_work() -> None:
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.bind("inproc://compat-test")
    thread = IOPubThread(socket)
    thread.start()
    stream = OutStream(Session(), thread, "stdout", watchfd=False)
    try:
        with _compat.buffer_lock(stream):
            assert _compat.nothing_to_flush(stream)
        stream.write("something")
        with _compat.buffer_lock(stream):
            assert not _compat.nothing_to_flush(stream)
        stream.flush()
        with _compat.buffer_lock(stream):
            assert _compat.nothing_to_flush(stream)
    finally:
        stream.close()
        thread.stop()
        socket.close()
        context.term()


def test_forked_process_has_what_the_local_provisioner_uses() -> None:
    from jupyter_client.provisioning.local_provisioner import LocalProvisioner

    from grader_service.convert.forked_kernel import ForkedProcess

    used = set(re.findall(r"\.process\.(\w+)", inspect.getsource(LocalProvisioner)))
    used.discard("win32_interrupt_event")  # Windows only
    assert used and all(hasattr(ForkedProcess, name) or name == "pid" for name in used), used
    assert "pid" in inspect.signature(ForkedProcess).parameters


def test_execute_sleep_is_a_configurable_kernel_trait() -> None:
    from ipykernel.kernelbase import Kernel

    trait = Kernel.class_traits().get("_execute_sleep")
    assert trait is not None and trait.metadata.get("config") is True
