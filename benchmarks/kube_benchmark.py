"""KubeAutogradeExecutor under load: N concurrent jobs against the fake apiserver.

Starts the fake Kubernetes apiserver of the test suite (its kubelet runs each pod's command as a
local process under bubblewrap), stages N jobs on its PVC, runs them all at once through one
executor, and prints:
- API requests per graded submission, excluding the shared list+watch (target <= 5);
- the delay from the end of a pod's process (the fake kubelet's exit time) to the executor seeing
  the pod's final status (the watch path) and to the job's completion (log read, gradebook read,
  pod deleted and its DELETED event seen), p50/p95/max (target < 100 ms);
- wall time and jobs per second.

    python benchmarks/kube_benchmark.py --jobs 50            # trivial grading command
    python benchmarks/kube_benchmark.py --jobs 50 --notebook # the tiny notebook, really graded

The fake runs in a process of its own (as an apiserver would); both share this machine's CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader_service.autograding.executor import GradingOutcome, GradingTask  # noqa: E402
from grader_service.autograding.kube.executor import KubeAutogradeExecutor  # noqa: E402
from grader_service.autograding.kube.reflector import PodState  # noqa: E402
from tests.kube.fake_apiserver import FakeKubeAPIServer  # noqa: E402
from tests.kube.fake_kubelet import SandboxMode, bwrap_available  # noqa: E402
from tests.kube.jobs import make_task, stage_job  # noqa: E402

NAMESPACE = "grader"
CLAIM = "grader-data"
TRIVIAL = (
    "import json, pathlib; pathlib.Path('/job/output/gradebook.json').write_text("
    "json.dumps({'score': 1.0, 'max_score': 1.0})); print('graded')"
)


class TimedExecutor(KubeAutogradeExecutor):
    """Records when each job's final pod status reached the executor."""

    trivial = False
    seen_final: dict[str, float] = {}

    def grading_command(self, task: GradingTask) -> list[str]:
        if self.trivial:
            return ["python", "-c", TRIVIAL]
        return super().grading_command(task)

    async def _collect(self, task: GradingTask, state: PodState, pod: dict[str, Any]) -> GradingOutcome:
        self.seen_final[state.name] = time.time()
        return await super()._collect(task, state, pod)


class TimedFake(FakeKubeAPIServer):
    """Records when the apiserver emitted each pod's final status (the kubelet's status write)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.published_final: dict[str, float] = {}

    def _emit(self, type_: str, pod: dict[str, Any], prev: dict[str, Any] | None) -> None:
        super()._emit(type_, pod, prev)
        name = pod["metadata"]["name"]
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") and name not in self.published_final:
            self.published_final[name] = time.time()


def serve_fake(conn: Connection, tmp: str) -> None:
    """The fake apiserver in a process of its own, answering "clear", "report" and "stop"."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    fake = TimedFake(
        namespaces=[NAMESPACE], sandbox=SandboxMode.BWRAP, state_dir=Path(tmp) / "state", start_delay=0.0
    )
    fake.start()
    fake.set_pvc_dir(CLAIM, Path(tmp) / "pvc")
    conn.send(str(fake.write_kubeconfig(Path(tmp) / "kubeconfig", namespace=NAMESPACE)))
    while True:
        command = conn.recv()
        if command == "clear":
            fake.call(fake.requests.clear)
            conn.send(None)
        elif command == "report":
            conn.send(
                fake.call(
                    lambda: {
                        "requests": [(r.method, r.path, r.code) for r in fake.requests],
                        "exits": {name: t for (_, name), t in fake.container_exits.items()},
                        "published": dict(fake.published_final),
                    }
                )
            )
        else:
            fake.stop()
            conn.send(None)
            return


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"


async def run_jobs(
    fake: Connection,
    pvc: Path,
    kubeconfig: str,
    jobs: int,
    notebook: bool,
    memory_limit: str | None,
    stagger: float,
) -> None:
    executor = TimedExecutor(
        kubeconfig=kubeconfig,
        namespace=NAMESPACE,
        pvc_name=CLAIM,
        data_mount_path=str(pvc),
        image="ghcr.io/grader-service/grading:bench",
        max_concurrent_pods=jobs,
        start_timeout=120,
        memory_limit=memory_limit,
    )
    executor.trivial = not notebook
    await executor.start()
    tasks = [make_task(executor, stage_job(pvc, i), i) for i in range(1, jobs + 1)]
    fake.send("clear")
    fake.recv()
    completed: dict[str, float] = {}

    async def one(index: int, task: GradingTask) -> GradingOutcome:
        await asyncio.sleep(index * stagger)
        outcome = await executor.run(task)
        completed[executor.runner_name(task)] = time.time()
        return outcome

    began = time.monotonic()
    outcomes = await asyncio.gather(*(one(i, task) for i, task in enumerate(tasks)))
    wall = time.monotonic() - began
    await executor.stop()
    fake.send("report")
    report = fake.recv()

    graded = sum(1 for o in outcomes if o.graded)
    failures = [o.reason for o in outcomes if not o.graded]
    shared = [r for r in report["requests"] if r[0] == "GET" and r[1].rstrip("/").endswith("/pods")]
    per_job = len(report["requests"]) - len(shared)
    to_published, published_to_seen, to_status, to_done = [], [], [], []
    for name, done in completed.items():
        ended, published = report["exits"].get(name), report["published"].get(name)
        if ended is None or published is None:
            continue
        to_published.append(published - ended)
        published_to_seen.append(executor.seen_final[name] - published)
        to_status.append(executor.seen_final[name] - ended)
        to_done.append(done - ended)

    how = "all at once" if not stagger else f"one every {stagger * 1000:g} ms"
    print(f"jobs: {jobs} ({'tiny notebook' if notebook else 'trivial command'}, {how}), graded {graded}")
    if failures:
        print(f"failures: {failures[:3]}")
    print(f"wall time: {wall:.2f} s, {jobs / wall:.1f} jobs/s")
    print(
        f"API requests per graded submission (excluding the shared list+watch): {per_job / max(graded, 1):.2f}"
    )
    print(f"shared list+watch requests during the run: {len(shared)}")
    print(f"pod process end -> final status written by the fake kubelet: {percentiles(to_published)}")
    print(f"final status written -> seen by the executor (the watch):   {percentiles(published_to_seen)}")
    print(f"pod process end -> final status seen by the executor:       {percentiles(to_status)}")
    print(f"pod process end -> job complete (log, gradebook, deleted):  {percentiles(to_done)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument(
        "--memory-limit",
        default=None,
        help="memory limit of the pods (the fake enforces it by scanning /proc every 50 ms per pod, "
        "which loads this machine; default: none)",
    )
    parser.add_argument(
        "--stagger", type=float, default=0.0, help="seconds between job starts (default: all at once)"
    )
    parser.add_argument(
        "--notebook", action="store_true", help="grade the tiny notebook instead of a trivial command"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    if not bwrap_available():
        sys.exit("the fake kubelet needs bubblewrap (apt-get install bubblewrap)")
    with tempfile.TemporaryDirectory(prefix="kube-bench-") as tmp:
        pvc = Path(tmp) / "pvc"
        pvc.mkdir()
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        server = context.Process(target=serve_fake, args=(child, tmp), daemon=True)
        server.start()
        try:
            kubeconfig = parent.recv()
            asyncio.run(
                run_jobs(parent, pvc, kubeconfig, args.jobs, args.notebook, args.memory_limit, args.stagger)
            )
        finally:
            parent.send("stop")
            parent.recv()
            server.join(30)


if __name__ == "__main__":
    main()
