"""One shared list+watch of the grading pods, instead of one poll loop per pod (as kubespawner's).

A :class:`PodReflector` keeps a local copy of every pod matching a label selector in one
namespace, and wakes whoever waits on a particular pod when that pod changes. However many jobs
run, the apiserver sees one long-lived watch request, and a pod's end reaches its job as soon as
the watch event arrives.

The official client is synchronous, so the list and the watch run in one thread of their own and
hand their results to the event loop with ``call_soon_threadsafe``; the cache and the waiters are
only ever touched on the loop. The watch resumes from the last resourceVersion it saw (bookmarks
keep it fresh); when the apiserver no longer has that version (``410 Gone``) the reflector lists
again, and a tracked pod that vanished meanwhile is reported as deleted. Connection failures are
retried with exponential backoff, so an apiserver restart costs a few reconnects, not lost events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from .client import KubeError, Operation, PermissionDenied, backoff_delay, is_transient, translate_error

Pod = dict[str, Any]


def resource_version(obj: Pod | None) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("resourceVersion")


def is_newer(candidate: str | None, current: str | None) -> bool:
    """Whether resourceVersion ``candidate`` is later than ``current``.

    resourceVersions are formally opaque, but every apiserver hands out etcd revisions (integers
    that only grow); comparing them is how we ignore a stale copy (the answer to our own create,
    arriving after the watch already reported newer states). Anything not an integer counts as
    newer, which is what a cache without this check would do.
    """
    if current is None:
        return True
    try:
        return int(candidate or 0) > int(current)
    except ValueError:
        return True


class PodState:
    """What the reflector knows about one pod someone waits for."""

    def __init__(self, name: str):
        self.name = name
        self.pod: Pod | None = None
        self.deleted = False
        self.last_pod: Pod | None = None  # the last state seen, kept after deletion
        self.version = 0  # counts changes, so a waiter can tell "changed since I looked"
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def uid(self) -> str | None:
        return ((self.last_pod or {}).get("metadata") or {}).get("uid")

    def bind(self, pod: Pod) -> None:
        """Follow exactly this pod (by uid) from now on: a new pod of this name starts afresh."""
        uid = (pod.get("metadata") or {}).get("uid")
        if self.uid != uid:
            self.pod = self.last_pod = None
            self.deleted = False
        if not self.deleted and is_newer(resource_version(pod), resource_version(self.last_pod)):
            self.pod = self.last_pod = pod
        self._notify()

    def update(self, pod: Pod) -> bool:
        """Take ``pod`` if it is this pod (same uid once known) and newer than what we have."""
        uid = (pod.get("metadata") or {}).get("uid")
        if self.uid is not None and uid != self.uid:
            return False
        if self.deleted or not is_newer(resource_version(pod), resource_version(self.last_pod)):
            return False
        self.pod = self.last_pod = pod
        self._notify()
        return True

    def mark_deleted(self, pod: Pod | None = None) -> None:
        uid = ((pod or {}).get("metadata") or {}).get("uid")
        if pod is not None and self.uid is not None and uid != self.uid:
            return
        if pod is not None:
            self.last_pod = pod
        self.pod = None
        self.deleted = True
        self._notify()

    def _notify(self) -> None:
        self.version += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, predicate: Callable[[PodState], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate(self)`` holds (True) or ``timeout`` seconds pass (False)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not predicate(self):
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return predicate(self)
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class PodReflector:
    """Local copy of the pods matching ``label_selector`` in ``namespace``, kept by one watch."""

    def __init__(
        self,
        core: client.CoreV1Api,
        namespace: str,
        label_selector: str,
        *,
        log: logging.Logger | logging.LoggerAdapter[Any],
        watch_timeout: int = 300,
        max_backoff: float = 10.0,
        list_limit: int = 500,
    ):
        self.core = core
        self.namespace = namespace
        self.label_selector = label_selector
        self.log = log
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.list_limit = list_limit
        # Loop side.
        self.pods: dict[str, Pod] = {}
        self._tracked: dict[str, PodState] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        # Thread side.
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._response: Any = None
        self._rv: str | None = None
        # Counters, for tests and logs.
        self.lists = 0
        self.watches = 0
        self.events = 0

    # --- loop side ------------------------------------------------------------------------------

    async def start(self, timeout: float = 60.0) -> None:
        """List, open the watch, and return once both worked (or raise why they could not)."""
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="kube-pod-reflector", daemon=True)
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            await self.stop()
            raise KubeError(
                f"could not list and watch pods in namespace {self.namespace!r} within {timeout:g} s"
            ) from None
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None

    def track(self, name: str) -> PodState:
        """Start following pod ``name`` (before creating it, so no event is missed)."""
        state = self._tracked.get(name)
        if state is None:
            state = self._tracked[name] = PodState(name)
            if name in self.pods:
                state.update(self.pods[name])
        return state

    def bind(self, name: str, pod: Pod) -> PodState:
        """Follow the pod ``pod`` (the answer to our create, or an adopted one) under ``name``.

        The cache may already hold a newer state of the same pod (watch events can overtake the
        create's answer); the newest wins. A same-named pod with another uid is not ours.
        """
        state = self.track(name)
        state.bind(pod)
        cached = self.pods.get(name)
        if cached is not None and cached["metadata"].get("uid") == state.uid:
            state.update(cached)
        return state

    def untrack(self, name: str) -> None:
        self._tracked.pop(name, None)

    def _ready_with(self, error: BaseException | None) -> None:
        if self._ready is not None and not self._ready.done():
            if error is None:
                self._ready.set_result(None)
            else:
                self._ready.set_exception(error)

    def _apply_list(self, items: list[Pod], list_rv: str | None) -> None:
        self.pods = {pod["metadata"]["name"]: pod for pod in items}
        for name, state in self._tracked.items():
            pod = self.pods.get(name)
            if pod is not None:
                if (
                    not state.update(pod)
                    and state.uid is not None
                    and pod["metadata"].get("uid") != state.uid
                ):
                    state.mark_deleted()  # replaced by another pod of that name meanwhile
            elif state.pod is not None and is_newer(list_rv, resource_version(state.pod)):
                state.mark_deleted()  # gone while we were not watching

    def _apply_events(self, events: list[tuple[str, Pod]]) -> None:
        for kind, pod in events:
            name = pod["metadata"]["name"]
            state = self._tracked.get(name)
            if kind == "DELETED":
                cached = self.pods.get(name)
                if cached is not None and cached["metadata"].get("uid") == pod["metadata"].get("uid"):
                    del self.pods[name]
                if state is not None:
                    state.mark_deleted(pod)
                continue
            if is_newer(resource_version(pod), resource_version(self.pods.get(name))):
                self.pods[name] = pod
            if state is not None:
                state.update(pod)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(callback, *args)

    # --- thread side ----------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if self._rv is None:
                    self._list()
                started = time.monotonic()
                received = self._watch()
                if received or time.monotonic() - started > 1.0:
                    failures = 0
                    continue
                failures += 1  # a watch that ends at once, empty, is a failure in disguise
            except _Gone:
                self.log.info("Pod watch: resourceVersion %s expired (410 Gone); listing again", self._rv)
                self._rv = None
                continue
            except Exception as exc:
                if self._stopping.is_set():
                    break
                failures += 1
                verb = "list" if self._rv is None else "watch"
                error = translate_error(exc, Operation(verb, "pods", self.namespace))
                if isinstance(error, PermissionDenied) or not (is_transient(exc) or error.retryable):
                    if self._ready is not None and not self._ready.done():
                        self._post(self._ready_with, error)
                        return
                    self.log.error("Pod watch: %s", error.message)
                else:
                    self.log.warning("Pod watch: %s (reconnect %d)", error.message, failures)
            self._stopping.wait(
                min(self.max_backoff, backoff_delay(failures, base=0.2, cap=self.max_backoff))
            )

    def _list(self) -> None:
        items: list[Pod] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": self.label_selector, "limit": self.list_limit}
            if token:
                kwargs["_continue"] = token
            try:
                response = _unread(
                    self.core.list_namespaced_pod(
                        self.namespace, _preload_content=False, _request_timeout=(10, 60), **kwargs
                    )
                )
            except ApiException as exc:
                if exc.status == 410 and token:  # the continue token expired: start over
                    items, token = [], None
                    continue
                raise
            try:
                body = json.loads(response.data)
            finally:
                response.release_conn()
            items.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                break
        list_rv = (body.get("metadata") or {}).get("resourceVersion")
        self.lists += 1
        self._rv = list_rv
        self._post(self._apply_list, items, list_rv)

    def _watch(self) -> int:
        """Follow the watch until it ends; the number of events it brought."""
        response = _unread(
            self.core.list_namespaced_pod(
                self.namespace,
                label_selector=self.label_selector,
                watch=True,
                resource_version=self._rv,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                _preload_content=False,
                _request_timeout=(10, self.watch_timeout + 30),
            )
        )
        self._response = response
        self.watches += 1
        self._post(self._ready_with, None)
        received = 0
        finished = False
        try:
            if self._stopping.is_set():
                return 0
            pending = b""
            for chunk in response.stream(amt=None, decode_content=False):
                pending += chunk
                if b"\n" not in chunk:
                    continue
                *lines, pending = pending.split(b"\n")
                received += self._handle_lines(lines)
            if pending.strip():
                received += self._handle_lines([pending])
            finished = True
        finally:
            self._response = None
            # A connection left in the middle of a response must not go back to the pool.
            if finished:
                response.release_conn()
            else:
                response.close()
        return received

    def _handle_lines(self, lines: list[bytes]) -> int:
        events: list[tuple[str, Pod]] = []
        try:
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    error = ApiException(
                        status=obj.get("code") or 500, reason=obj.get("reason") or "WatchError"
                    )
                    error.body = json.dumps(obj)
                    raise error
                rv = resource_version(obj)
                if rv:
                    self._rv = rv
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    events.append((kind, obj))
        finally:
            if events:
                self.events += len(events)
                self._post(self._apply_events, events)
        return len(events) or 1


__all__ = ["PodReflector", "PodState", "is_newer", "resource_version"]


def _unread(response: object) -> urllib3.BaseHTTPResponse:
    """The HTTP response the client returns with `_preload_content=False` (its signature names the model
    it would have made of it)."""
    assert isinstance(response, urllib3.BaseHTTPResponse)
    return response
