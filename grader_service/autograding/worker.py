"""The grading workers: claim jobs from the queue, stage them, run them, record them, keep them alive.

`Scheduler` (the name its settings have always had: `c.Scheduler.*`) runs `concurrency` worker
loops, a heartbeat per running job that renews its lease, and a reaper that re-queues jobs whose
worker died. On start, running jobs of dead workers are adopted through the executor or
re-queued; on stop, jobs in progress go back to the queue. Every state change it makes is
announced by the queue, in the transaction that makes it (`announce.py`).

It is built from narrow collaborators: a session factory and the data layout (from which it makes
its `JobQueue`, all the SQL, and its `JobStager`, the job directories) and the executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker
from traitlets import Bool, Float, Integer
from traitlets.config import LoggingConfigurable

from .. import logs
from ..storage.layout import DataLayout
from ..storage.staging import JobStager
from .executor import AutogradeExecutor, GradingOutcome, GradingTask
from .queue import JobQueue, Recorded

if TYPE_CHECKING:
    from ..metrics import Metrics


class Scheduler(LoggingConfigurable):
    """Claims queued jobs and runs them on the executor with `concurrency` workers."""

    concurrency = Integer(
        0, help="Jobs graded at once by this service process; 0 means one per CPU (os.cpu_count())."
    ).tag(config=True)
    lease_seconds = Float(
        30.0,
        help="A running job's claim expires this long after its worker's last heartbeat; then it is re-queued.",
    ).tag(config=True)
    max_attempts = Integer(3, help="Claims a job gets before it fails for good.").tag(config=True)
    poll_interval = Float(
        1.0,
        help="Seconds between looks for jobs queued by other replicas (local submissions wake workers at once).",
    ).tag(config=True)
    max_queue_length = Integer(
        5000,
        help="Above this many queued jobs, health reports the queue as backlogged. Submissions are always "
        "accepted and stored; grading just waits.",
    ).tag(config=True)
    keep_job_dirs = Bool(False, help="Keep job directories after grading (for debugging).").tag(config=True)

    # Set by the application: counts claims and outcomes (`grader_service.metrics`).
    metrics: Metrics | None = None

    @property
    def workers(self) -> int:
        return self.concurrency or os.cpu_count() or 1

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        layout: DataLayout,
        executor: AutogradeExecutor,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.executor = executor
        self.queue = JobQueue(
            session_factory,
            layout,
            executor,
            lease_seconds=self.lease_seconds,
            max_attempts=self.max_attempts,
            log=self.log,
        )
        self.stager = JobStager(layout)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        executor.status_listener = self.record_status

    @property
    def worker_id(self) -> str:
        return self.queue.worker_id

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile, then start the workers, unless the executor refuses to grade here: then
        nothing is claimed and every queued job waits (the queue's upkeep still runs)."""
        await asyncio.to_thread(self._prune_source_cache)
        adoptions = await self.reconcile()
        workers = 0 if self.executor.refused is not None else self.workers
        self._tasks = [
            asyncio.create_task(self._worker(i), name=f"grader-worker-{i}") for i in range(workers)
        ]
        self._tasks.append(asyncio.create_task(self._reaper(), name="grader-reaper"))
        self._tasks.extend(adoptions)
        self.log.info(
            "Scheduler %s: %d worker(s), executor %s, sandbox %s",
            self.worker_id,
            workers,
            self.executor.name,
            self.executor.sandbox,
        )

    async def stop(self) -> None:
        """Stop claiming; jobs in progress are handed back to the queue without using up an attempt."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.executor.stop()
        self.queue.release_held()

    def wake(self) -> None:
        self._wake.set()

    def _prune_source_cache(self) -> None:
        """Drop cached sources that are no longer any assignment's current source."""
        self.stager.prune_source_cache(self.queue.current_sources())

    # --- workers ----------------------------------------------------------------------------------

    async def _worker(self, index: int) -> None:
        while not self._stopping:
            try:
                task = self.claim()
            except Exception:
                self.log.exception("Claiming a grading job failed")
                task = None
            if task is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                continue
            self._wake.set()  # there may be more: let an idle sibling look too
            await self._process(task)

    def claim(self) -> GradingTask | None:
        """The queue's best job, now ours and announced as running."""
        task = self.queue.claim()
        if task is not None and self.metrics is not None:
            self.metrics.job_claimed(task, self.executor.name)
        return task

    async def _process(self, task: GradingTask) -> None:
        named = logs.submission_id.set(task.submission_id)  # the log lines of this job name it
        heartbeat = asyncio.create_task(self._heartbeat(task.job_id))
        try:
            await self.stager.stage(task)
            outcome = await self.executor.run(task)
            if outcome.graded:
                await self._keep_output(task, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.log.exception("Grading job %d failed in the service", task.job_id)
            outcome = GradingOutcome(False, reason=f"Internal error while grading: {e}", retryable=True)
        finally:
            heartbeat.cancel()
        await self._finish(task, outcome)
        logs.submission_id.reset(named)

    async def _keep_output(self, task: GradingTask, outcome: GradingOutcome) -> None:
        await self.stager.keep_output(task)
        outcome.feedback = True

    async def _finish(self, task: GradingTask, outcome: GradingOutcome) -> None:
        """Record the outcome, announce it, and remove the job directory."""
        recorded = self.queue.record(task, outcome)
        if self.metrics is not None:
            self.metrics.job_finished(task, self.executor.name, outcome, finish_result(recorded, outcome))
        if recorded is None:
            self.log.warning("Job %d was taken from this worker; its result is discarded", task.job_id)
        elif recorded.retry:
            self.wake()
        if not self.keep_job_dirs:
            await self.stager.remove(task)

    def record_status(self, task: GradingTask, detail: str | None) -> None:
        """The executor's word on why a running job waits: the submission's status detail (announced)."""
        self.queue.record_status(task, detail)

    # --- crash safety -----------------------------------------------------------------------------

    async def _heartbeat(self, job_id: int) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            self.queue.renew_lease(job_id)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(max(self.lease_seconds / 3, 0.5))
            try:
                if self.queue.requeue_expired():
                    self.wake()
            except Exception:
                self.log.exception("Re-queueing expired grading jobs failed")

    def _worker_is_dead(self, worker: str | None) -> bool:
        """A worker of this host whose process is gone (the service restarted): no need to wait out its lease."""
        host, _, rest = (worker or "").partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            return False
        if int(pid) == os.getpid():
            return worker != self.worker_id
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    async def reconcile(self) -> list[asyncio.Task[None]]:
        """On start: running jobs of dead workers are adopted by the executor or re-queued.

        Each stale job is taken over at once (this worker, a fresh lease), then adopted in the
        background: its pod may run for minutes more, and the service must not wait for that
        before it serves. Then the executor removes what belongs to no running job.
        """
        stale, live = self.queue.take_over_stale(self._worker_is_dead)
        adoptions = [
            asyncio.create_task(self._adopt(job_id, runner_name), name=f"grader-adopt-{job_id}")
            for job_id, runner_name in stale
        ]
        try:
            await self.executor.cleanup_orphans(live)
        except Exception:
            self.log.exception("Cleaning up after jobs that no longer run failed")
        return adoptions

    async def _adopt(self, job_id: int, runner_name: str | None) -> None:
        """Let the executor finish a job a previous process started; re-queue it if it cannot."""
        task = self.queue.load_task(job_id)
        if task is not None:
            logs.submission_id.set(task.submission_id)  # this task's own context: no reset needed
        heartbeat = asyncio.create_task(self._heartbeat(job_id))
        try:
            outcome = await self.executor.reconcile(task, runner_name) if task else None
            if task is not None and outcome is not None and outcome.graded:
                await self._keep_output(task, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("Adopting grading job %d failed", job_id)
            outcome = None
        finally:
            heartbeat.cancel()
        if task is None or outcome is None:
            self.queue.requeue_held(job_id, "the service restarted while it ran")
            self.wake()
            return
        await self._finish(task, outcome)


def finish_result(recorded: Recorded | None, outcome: GradingOutcome) -> str:
    """What became of a grading attempt, for the jobs metric."""
    if recorded is None:
        return "discarded"
    if recorded.retry:
        return "retried"
    return "graded" if outcome.graded else "failed"


__all__ = ["Scheduler"]
