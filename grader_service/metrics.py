"""Prometheus metrics of one service process, exposed by `GET /api/v1/metrics` (`api/metrics.py`).

Each `GraderService` has its own `CollectorRegistry`, never prometheus_client's global one: a
test that runs several services in one process, or a service restarted in it, then counts from
zero, and no two apps collide over a name.

What is counted where:

- HTTP requests: `observe_request`, from the application's log function, once per finished
  request. The route label is the URL pattern the request matched (`/lectures/{code}`), never the
  raw path, and the method label only takes the methods the API has: a caller cannot make the
  series without bound by requesting made-up URLs or verbs.
- Grading: `job_claimed` and `job_finished`, from the scheduler.
- State that is read, not counted (queue depth and age, open event streams, pool connections in
  use): `refresh`, at scrape time, from one cheap query (`queue_stats`, the one `/health` uses).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from tornado.routing import PathMatches

if TYPE_CHECKING:
    from tornado import web

    from .autograding.executor import GradingOutcome, GradingTask

CONTENT_TYPE = CONTENT_TYPE_LATEST
NAMESPACE = "grader"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS"})
# Requests no route matched (the JSON 404): one label for every such path.
UNMATCHED_ROUTE = "unmatched"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Grading takes seconds to minutes; a queue can be backed up for an hour before a deadline.
GRADING_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# Why an executor could not grade, from its outcome: a few stable words, for the `reason` label.
# The outcome's reason text is for people and holds names and numbers; it never becomes a label.
_ERROR_PATTERNS = (
    ("internal", re.compile(r"^Internal error while grading")),
    ("disk_limit", re.compile(r"disk limit")),
    ("timeout", re.compile(r"did not finish within|time limit|DeadlineExceeded|could not be scheduled")),
    ("memory", re.compile(r"OOMKilled|out of memory")),
    ("image_pull", re.compile(r"grading image")),
    ("evicted", re.compile(r"evicted|was deleted before it finished")),
    (
        "start_failed",
        re.compile(r"could not start|did not start|could not be (created|built)|Could not grade"),
    ),
)


def error_reason(outcome: GradingOutcome) -> str:
    """A bounded reason for a failed grading: one of the words above, else "exit" (the grading
    process ended without a gradebook, e.g. with an error)."""
    text = outcome.reason or ""
    for name, pattern in _ERROR_PATTERNS:
        if pattern.search(text):
            return name
    return "exit"


def route_template(pattern: str, base_url: str) -> str:
    """A route's regular expression as a readable URL template below the API prefix.

    `/services/grader/api/v1/lectures/([^/]+)/roles/([^/]+)/?$` becomes `/lectures/{}/roles/{}`:
    each capture group is one `{}`. Routes outside the API keep their path under the base URL.
    """
    template = re.sub(r"\([^)]*\)", "{}", pattern)
    template = template.removesuffix("$").removesuffix("/?")
    for prefix in (base_url + "api/v1", base_url.rstrip("/")):
        if template.startswith(prefix):
            return template[len(prefix) :] or "/"
    return template


def route_templates(app: web.Application, base_url: str) -> dict[type, str]:
    """Handler class -> its route's template, from the application's own routing table."""
    found: dict[type, str] = {}
    for rule in app.wildcard_router.rules:
        target = rule.target
        if isinstance(target, type) and isinstance(rule.matcher, PathMatches):
            found.setdefault(target, route_template(rule.matcher.regex.pattern, base_url))
    return found


class Metrics:
    """The metrics of one service process, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, ns = self.registry, NAMESPACE
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response's end (an event stream: its whole life), "
            "by route template, method and status",
            ["route", "method", "status"],
            namespace=ns,
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.jobs = Counter(
            "jobs",
            "Grading attempts finished by this process, by outcome: graded, failed (for good), "
            "retried (failed, queued again), discarded (taken from this process meanwhile)",
            ["outcome", "executor"],
            namespace=ns,
            registry=r,
        )
        self.queue_wait = Histogram(
            "job_queue_wait_seconds",
            "Time from a job's enqueueing to its claim by this process",
            ["executor"],
            namespace=ns,
            buckets=GRADING_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            "job_run_seconds",
            "Time from a job's claim to its result (staging, executor, keeping the output)",
            ["executor"],
            namespace=ns,
            buckets=GRADING_BUCKETS,
            registry=r,
        )
        self.executor_errors = Counter(
            "executor_errors",
            "Grading attempts that ended without a gradebook, by reason (internal, disk_limit, timeout, "
            "memory, image_pull, evicted, start_failed, exit)",
            ["executor", "reason"],
            namespace=ns,
            registry=r,
        )

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, namespace=ns, registry=r)

        all_replicas = "all replicas together (read from the database at scrape time)"
        self.queue_depth = gauge("queue_depth", f"Jobs queued, {all_replicas}")
        self.queue_running = gauge("queue_running", f"Jobs running, {all_replicas}")
        self.queue_oldest = gauge(
            "queue_oldest_age_seconds", f"Age of the oldest queued job (0 with none), {all_replicas}"
        )
        self.sse_streams = gauge("sse_streams_open", "Event streams (SSE) open on this process")
        self.db_pool_in_use = gauge(
            "db_pool_connections_in_use", "Database connections checked out of this process's pool"
        )
        self.db_pool_capacity = gauge(
            "db_pool_connections_max",
            "Most database connections this process's pool opens (db_pool_size + db_max_overflow)",
        )
        self._templates: dict[type, str] | None = None
        self._claimed: dict[int, float] = {}

    # --- HTTP -----------------------------------------------------------------------------------

    def observe_request(self, handler: web.RequestHandler, base_url: str) -> None:
        if self._templates is None:
            self._templates = route_templates(handler.application, base_url)
        route = self._templates.get(type(handler), UNMATCHED_ROUTE)  # the 404 handler is on no route
        method = handler.request.method if handler.request.method in HTTP_METHODS else "other"
        self.http_duration.labels(route, method, str(handler.get_status())).observe(
            handler.request.request_time()
        )

    # --- grading --------------------------------------------------------------------------------

    def job_claimed(self, task: GradingTask, executor: str) -> None:
        """A job was claimed: how long it waited (since its enqueueing, attempts before included)."""
        self._claimed[task.job_id] = time.monotonic()
        if task.queued_at is not None:
            self.queue_wait.labels(executor).observe(max(0.0, time.time() - task.queued_at))

    def job_finished(self, task: GradingTask, executor: str, outcome: GradingOutcome, result: str) -> None:
        """A job's attempt ended with `result` (graded, failed, retried, discarded)."""
        started = self._claimed.pop(task.job_id, None)
        if started is not None:
            self.run_time.labels(executor).observe(time.monotonic() - started)
        self.jobs.labels(result, executor).inc()
        if not outcome.graded:
            self.executor_errors.labels(executor, error_reason(outcome)).inc()

    # --- scrape -----------------------------------------------------------------------------------

    def refresh(self, queue: Mapping[str, Any], streams: int, pool_in_use: int, pool_max: int) -> None:
        """Set what is read rather than counted, just before a scrape."""
        self.queue_depth.set(queue["queued"])
        self.queue_running.set(queue["running"])
        self.queue_oldest.set(queue["oldest_queued_seconds"])
        self.sse_streams.set(streams)
        self.db_pool_in_use.set(pool_in_use)
        self.db_pool_capacity.set(pool_max)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "Metrics", "error_reason", "route_template", "route_templates"]
