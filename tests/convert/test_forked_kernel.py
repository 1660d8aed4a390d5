"""The grading client with a forked kernel: streams, and grader checks carried by cells.

Forked kernels write `sys.stdout`/`sys.stderr` through `GradingOutStream`, which skips ipykernel's
flush round trips when nothing is buffered: every cell's output must still arrive whole, in
order, and in the cell that produced it, including output written by threads and output
written just before the cell ends.

A cell's request can carry the grader's next check (`run_cell(carry=...)`); the kernel evaluates
it after the cell's code only when the cell succeeded, so after a failure the grader must see
that nothing was carried and send the check alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from grader_service.convert.forked_kernel import KernelLauncher
from grader_service.convert.kernel import CellRecord, GradingClient, KernelEnvironment


@pytest.fixture(scope="module")
def launcher() -> Iterator[KernelLauncher]:
    launcher = KernelLauncher.fork()
    yield launcher
    launcher.close()


def run_cells(
    launcher: KernelLauncher, cwd: Path, sources: list[str], carry: str | None = None
) -> tuple[list[list[dict]], list[CellRecord]]:
    """Run `sources` as cells of one notebook in a forked kernel: each cell's outputs and record."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    env = KernelEnvironment.create(cwd)
    records = []

    async def main() -> None:
        client = GradingClient(
            nb, km=env.kernel_manager(launcher), allow_errors=True, shutdown_kernel="immediate"
        )
        await client.async_start_new_kernel(cwd=str(cwd), env=env.env)
        await client.async_start_new_kernel_client()
        try:
            for index, cell in enumerate(nb.cells):
                record = await client.run_cell(cell, index, 20, index + 1, carry=carry)
                records.append(dataclasses.replace(record))
        finally:
            await client._async_cleanup_kernel()

    try:
        asyncio.run(main())
    finally:
        env.remove()
    return [cell.outputs for cell in nb.cells], records


def stream_text(outputs: list[dict], name: str) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == name)


def test_forked_kernel_streams_keep_every_cells_output_in_its_cell(
    launcher: KernelLauncher, tmp_path: Path
) -> None:
    quiet = "x = 1"
    printing = [f"print({i}); import sys; sys.stderr.write('e{i}')" for i in range(20)]
    threaded = (
        "import threading, time\n"
        "t = threading.Thread(target=lambda: (time.sleep(0.05), print('from a thread')))\n"
        "t.start(); t.join()"
    )
    last_moment = "print('z' * 200_000, end='')"
    outputs, records = run_cells(
        launcher,
        tmp_path,
        [
            "import sys; print(type(sys.stdout).__name__)",
            quiet,
            *printing,
            quiet,
            threaded,
            last_moment,
            quiet,
        ],
    )
    assert all(record.status == "ok" for record in records)
    assert stream_text(outputs[0], "stdout") == "GradingOutStream\n"
    assert outputs[1] == []
    for i, cell_outputs in enumerate(outputs[2 : 2 + len(printing)]):
        assert stream_text(cell_outputs, "stdout") == f"{i}\n"
        assert stream_text(cell_outputs, "stderr") == f"e{i}"
    rest = outputs[2 + len(printing) :]
    assert rest[0] == []
    assert stream_text(rest[1], "stdout") == "from a thread\n"
    assert stream_text(rest[2], "stdout") == "z" * 200_000
    assert rest[3] == []


def test_a_check_is_carried_by_a_cell_only_when_the_cell_succeeds(
    launcher: KernelLauncher, tmp_path: Path
) -> None:
    carry = "(calls.append(len(calls)), repr(calls))[1]"
    outputs, records = run_cells(
        launcher,
        tmp_path,
        [
            "calls = []",
            "1 / 0",
            "x = 2",
            "raise SystemExit('quitting is an error too')",
            "import time; time.sleep(0.01)",
        ],
        carry=carry,
    )
    assert [record.carried for record in records] == [
        ("ok", "'[0]'"),
        None,
        ("ok", "'[0, 1]'"),
        None,
        ("ok", "'[0, 1, 2]'"),
    ]
    # What a carried check evaluates shows nowhere in the cell's outputs.
    assert outputs[0] == [] and outputs[2] == [] and outputs[4] == []
