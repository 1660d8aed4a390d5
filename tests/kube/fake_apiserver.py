"""A fake Kubernetes apiserver (core/v1 pods) with a simulated kubelet, for tests without a cluster.

The real ``kubernetes`` Python client and real ``kubectl`` talk to it over HTTP(S) through a
kubeconfig, so code under test cannot tell it from a cluster as far as pods go:

* pods: create (``generateName``, defaults, validation → 422), get, list (label and field selectors,
  ``limit``/``continue``, server-side ``Table`` for kubectl), patch (merge, strategic merge, JSON
  patch; immutable spec fields → 422), update, delete (graceful, preconditions, propagationPolicy),
  deletecollection, ``pods/log``, ``pods/status``;
* one global ``resourceVersion`` counter like etcd's revision; watches (``ADDED``/``MODIFIED``/
  ``DELETED``/``BOOKMARK``, resume from a resourceVersion, ``410 Gone`` once it left the retained
  window, ``compact()`` to force that, ``sendInitialEvents``);
* bearer tokens (401) and RBAC (403 worded as the real authorizer), loadable from rendered
  Role/RoleBinding YAML;
* a scheduler + kubelet (``fake_kubelet``) that runs each container as a local process in a
  bubblewrap sandbox with the pod's volumes mounted.

It runs in-process on its own thread and asyncio loop. Everything mutable lives on that loop;
the public methods below hop onto it, so tests may call them from any thread.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import datetime
import json
import os
import random
import shutil
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web
import yaml

from . import fake_schema
from .fake_kubelet import (
    _IMAGE_DIRS,
    PULL_ERRORS,
    FakeKubelet,
    Node,
    PullFailure,
    SandboxMode,
    bwrap_available,
    rfc3339,
    rfc3339_nano,
)
from .fake_rbac import Authorizer, PolicyRule, User, service_account_user
from .fake_selectors import (
    FieldRequirement,
    Requirement,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from .fake_status import (
    FieldError,
    StatusError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    forbidden_admission,
    gone,
    invalid,
    method_not_allowed,
    not_found,
    route_not_found,
    unauthorized,
    unsupported_media_type,
)
from .fake_tls import make_server_certificate

__all__ = [
    "ADMIN_TOKEN",
    "FakeKubeAPIServer",
    "Fault",
    "Node",
    "PolicyRule",
    "RequestRecord",
    "SandboxMode",
    "User",
]

T = TypeVar("T")
PodKey = tuple[str, str]
ADMIN_TOKEN = "fake-admin-token"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


@dataclass
class WatchEvent:
    rv: int
    type: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None


@dataclass(eq=False)
class _Watcher:
    namespace: str | None
    labels: list[Requirement]
    fields: list[FieldRequirement]
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)
    # The request serving this watch, so a test can cut its connection (``drop_watches``).
    handler: Any = None

    def matches(self, pod: dict[str, Any] | None) -> bool:
        if pod is None:
            return False
        if self.namespace and pod["metadata"]["namespace"] != self.namespace:
            return False
        return labels_match(self.labels, pod["metadata"].get("labels")) and fields_match(self.fields, pod)

    def translate(self, event: WatchEvent) -> tuple[str, dict[str, Any]] | None:
        """The event this watcher sees: objects entering/leaving its selector are ADDED/DELETED."""
        now = self.matches(event.obj)
        before = self.matches(event.prev)
        if event.type == "MODIFIED":
            if now and before:
                return "MODIFIED", event.obj
            if now:
                return "ADDED", event.obj
            if before:
                return "DELETED", event.obj
            return None
        return (event.type, event.obj) if now else None


@dataclass
class RequestRecord:
    """One request as the server saw it, for assertions like "one watch, no polling"."""

    method: str
    path: str
    query: dict[str, str]
    user: str | None
    code: int = 0
    watch: bool = False
    fault: str | None = None


@dataclass
class Fault:
    """An injected failure for requests matching ``method``/``path``/``watch`` (None: any).

    ``mode``: ``"status"`` answers ``status`` (5xx/429) without doing anything; ``"reset"`` closes
    the connection before the request is handled (as an apiserver going away); ``"reset-after"``
    handles the request, then closes the connection instead of answering (the response is lost:
    a create did happen, but the client cannot know).
    """

    mode: str = "status"
    status: int = 503
    method: str | None = None
    path: str | None = None  # substring of the request path
    watch: bool | None = None
    remaining: int | None = 1  # None: until ``until``/``clear_faults()``
    until: float | None = None  # time.monotonic() after which the fault no longer applies

    def matches(self, record: RequestRecord, watch: bool) -> bool:
        if self.until is not None and time.monotonic() > self.until:
            return False
        if self.remaining is not None and self.remaining <= 0:
            return False
        return (
            (self.method is None or record.method == self.method)
            and (self.path is None or self.path in record.path)
            and (self.watch is None or self.watch == watch)
        )


_FAULT_REASONS = {
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class FakeKubeAPIServer:
    """Start with ``start()`` (or as a context manager); ``kubeconfig`` is ready afterwards.

    Knobs (all safe to change between tests; ``reset()`` restores the constructor's values):
    ``bad_images`` (never pull: not found), ``pull_failures`` (image → ``PullFailure``: the
    kubelet's ErrImagePull → ImagePullBackOff cycle with a given error, for some or all pulls;
    ``set_pull_failure``), ``backoff_message_has_error``, ``nodes`` (labels/taints the
    scheduler matches nodeSelector, affinity and tolerations against), ``set_pvc_dir(claim, dir)``,
    ``history_window`` (watch events retained; older resourceVersions get 410), ``compact()``,
    RBAC (``add_service_account_token``, ``load_rbac``, ``grant``), delays (``schedule_delay``,
    ``start_delay``, ``image_pull_backoff``, ``restart_backoff``), ``bookmark_interval``,
    images (``default_image_env``, ``image_env``, ``image_users``, ``image_commands``).
    Failures: ``inject_fault`` (5xx answers, connection resets, lost responses), ``drop_watches``
    (cut every open watch, cleanly or abruptly); ``container_exits`` records when each container's
    process ended (``time.time()``), for latency measurements.
    """

    def __init__(
        self,
        *,
        tls: bool = True,
        port: int = 0,
        namespaces: Iterable[str] = ("default",),
        nodes: list[Node] | None = None,
        bad_images: Iterable[str] = (),
        pvc_dirs: dict[str, Path] | None = None,
        history_window: int = 1000,
        schedule_delay: float = 0.0,
        start_delay: float = 0.1,
        image_pull_backoff: float = 0.3,
        image_pull_backoff_max: float = 300.0,
        restart_backoff: float = 0.5,
        bookmark_interval: float = 5.0,
        memory_poll_interval: float = 0.05,
        storage_poll_interval: float = 0.2,
        default_watch_timeout: float = 1800.0,
        sandbox: SandboxMode | None = None,
        default_image_env: dict[str, str] | None = None,
        image_env: dict[str, dict[str, str]] | None = None,
        image_users: dict[str, int] | None = None,
        image_commands: dict[str, list[str]] | None = None,
        service_accounts: Iterable[tuple[str, str]] | None = None,
        server_version: str = "1.36.0",
        state_dir: Path | None = None,
    ) -> None:
        self.tls = tls
        self._requested_port = port
        self.port = 0
        self.server_version = server_version
        self.sandbox = sandbox or (SandboxMode.BWRAP if bwrap_available() else SandboxMode.PROCESS)
        self.bwrap_path = shutil.which("bwrap") or "bwrap"
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="fake-kube-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._knobs = dict(
            namespaces=set(namespaces) | {"default", "kube-system", "kube-public"},
            nodes=list(nodes) if nodes is not None else [Node.default()],
            bad_images=set(bad_images),
            pull_failures={},
            backoff_message_has_error=True,
            pvc_dirs={("*", k): Path(v) for k, v in (pvc_dirs or {}).items()},
            history_window=history_window,
            schedule_delay=schedule_delay,
            start_delay=start_delay,
            image_pull_backoff=image_pull_backoff,
            image_pull_backoff_max=image_pull_backoff_max,
            restart_backoff=restart_backoff,
            bookmark_interval=bookmark_interval,
            memory_poll_interval=memory_poll_interval,
            storage_poll_interval=storage_poll_interval,
            default_watch_timeout=default_watch_timeout,
            default_image_env=default_image_env
            or {
                "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            },
            image_env=dict(image_env or {}),
            image_users=dict(image_users or {}),
            image_commands=dict(image_commands or {}),
            service_accounts=set(service_accounts) if service_accounts is not None else None,
        )
        self.namespaces: set[str] = set()
        self.nodes: list[Node] = []
        self.bad_images: set[str] = set()
        self.pull_failures: dict[str, PullFailure] = {}
        self.backoff_message_has_error = True
        self.image_pull_backoff_max = 0.0
        self.pvc_dirs: dict[tuple[str, str], Path] = {}
        self.history_window = 0
        self.schedule_delay = self.start_delay = self.image_pull_backoff = self.restart_backoff = 0.0
        self.bookmark_interval = self.memory_poll_interval = self.default_watch_timeout = 0.0
        self.storage_poll_interval = 0.0
        self.default_image_env: dict[str, str] = {}
        self.image_env: dict[str, dict[str, str]] = {}
        self.image_users: dict[str, int] = {}
        self.image_commands: dict[str, list[str]] = {}
        self.service_accounts: set[tuple[str, str]] | None = None
        self._apply_knobs()

        self.auth = Authorizer()
        self.auth.add_token(ADMIN_TOKEN, User("kubernetes-admin", ("system:masters", "system:authenticated")))
        self.pods: dict[PodKey, dict[str, Any]] = {}
        self.history: deque[WatchEvent] = deque()
        self.requests: list[RequestRecord] = []
        self.events: list[dict[str, Any]] = []
        self.internal_errors: list[str] = []
        self.faults: list[Fault] = []
        self.container_exits: dict[PodKey, float] = {}
        self._rv = 1000
        self._compacted_rv = 0
        self._watchers: set[_Watcher] = set()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: tornado.httpserver.HTTPServer | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.kubelet: FakeKubelet | None = None
        self.certificate = make_server_certificate(self.state_dir / "pki") if tls else None
        self.kubeconfig = self.state_dir / "kubeconfig"

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------
    def start(self) -> FakeKubeAPIServer:
        self._thread = threading.Thread(target=self._thread_main, name="fake-kube-apiserver", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._startup_error:
            raise RuntimeError("fake apiserver failed to start") from self._startup_error
        try:
            self.write_kubeconfig(self.kubeconfig)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """End watches, kill every container process, close the listener and the loop."""
        loop = self._loop
        if loop is None or self._thread is None:
            return
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._astop(), loop).result(60)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(60)
        self._loop = None
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> FakeKubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._astart())
        except BaseException as exc:  # reported by start()
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _astart(self) -> None:
        self.kubelet = FakeKubelet(self)
        sockets = tornado.netutil.bind_sockets(self._requested_port, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        ssl_ctx = None
        if self.certificate:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(self.certificate.cert_file, self.certificate.key_file)
        self._http = tornado.httpserver.HTTPServer(
            _make_app(self), ssl_options=ssl_ctx, decompress_request=True
        )
        self._http.add_sockets(sockets)

    async def _astop(self) -> None:
        self._stopping = True
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
        if self.kubelet:
            await self.kubelet.shutdown()
        if self._http:
            self._http.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._http.close_all_connections(), 10)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the server's loop and return its result (thread-safe entry point)."""
        assert self._loop is not None, "server not started"

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(60)

    def call_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        assert self._loop is not None, "server not started"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    # ------------------------------------------------------------------------------------------
    # test-facing configuration
    # ------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def ca_pem(self) -> str:
        return self.certificate.ca_file.read_text() if self.certificate else ""

    def write_kubeconfig(
        self, path: Path | None = None, *, token: str = ADMIN_TOKEN, namespace: str = "default"
    ) -> Path:
        """A kubeconfig for ``token`` (default: the cluster admin) with the CA embedded."""
        path = path or self.state_dir / f"kubeconfig-{uuid.uuid4().hex[:8]}"
        cluster: dict[str, Any] = {"server": self.url}
        if self.certificate:
            cluster["certificate-authority-data"] = base64.b64encode(
                self.certificate.ca_file.read_bytes()
            ).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake-user", "user": {"token": token}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fake-user", "namespace": namespace}}
            ],
            "current-context": "fake",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _apply_knobs(self) -> None:
        for name, value in self._knobs.items():
            setattr(self, name, copy.copy(value))

    def reset(self) -> None:
        """Back to a fresh cluster for the next test: no pods, default knobs, admin token only.

        The resourceVersion counter keeps counting, as on a real cluster.
        """

        def do() -> None:
            assert self.kubelet is not None
            for key in list(self.pods):
                pod = self.pods.pop(key)
                self.kubelet.forget(key)
                self._emit("DELETED", pod, None)
            self._apply_knobs()
            admin = self.auth.tokens[ADMIN_TOKEN]
            self.auth = Authorizer()
            self.auth.add_token(ADMIN_TOKEN, admin)
            self.requests.clear()
            self.events.clear()
            self.faults.clear()
            self.container_exits.clear()
            self.kubelet.cluster_changed()

        self.call(do)
        assert self.kubelet is not None
        self.call_async(self.kubelet.drain())

    def add_namespace(self, name: str) -> None:
        self.call(self.namespaces.add, name)

    def set_pvc_dir(self, claim: str, directory: Path, namespace: str | None = None) -> None:
        """Back PersistentVolumeClaim ``claim`` by a host directory (in every namespace by default)."""

        def do() -> None:
            self.pvc_dirs[(namespace or "*", claim)] = Path(directory)
            assert self.kubelet is not None
            self.kubelet.cluster_changed()

        self.call(do)

    def pvc_dir(self, namespace: str, claim: str) -> Path | None:
        return self.pvc_dirs.get((namespace, claim)) or self.pvc_dirs.get(("*", claim))

    def set_nodes(self, nodes: list[Node]) -> None:
        def do() -> None:
            self.nodes = list(nodes)
            assert self.kubelet is not None
            self.kubelet.cluster_changed()

        self.call(do)

    def set_bad_images(self, images: Iterable[str]) -> None:
        self.call(setattr, self, "bad_images", set(images))

    def set_pull_failure(self, image: str, failure: PullFailure | None) -> None:
        """Make pulls of `image` fail as `failure` says (None: pull normally again)."""

        def do() -> None:
            if failure is None:
                self.pull_failures.pop(image, None)
            else:
                self.pull_failures[image] = failure

        self.call(do)

    def pull_failure(self, image: str, attempt: int) -> tuple[str, str] | None:
        """(waiting reason, message) if pull number `attempt` (from 0) of `image` fails, else None."""
        if image in self.bad_images:
            return "ErrImagePull", PULL_ERRORS["not found"].format(image=image)
        failure = self.pull_failures.get(image)
        if failure is None or (failure.times is not None and attempt >= failure.times):
            return None
        return failure.reason, failure.message.format(image=image)

    def set(self, **knobs: Any) -> None:
        """Change plain knobs, e.g. ``set(start_delay=1.0, history_window=5)``."""
        for name in knobs:
            if name not in self._knobs:
                raise AttributeError(f"unknown knob {name}")

        def do() -> None:
            for name, value in knobs.items():
                setattr(self, name, value)
            self._trim_history()

        self.call(do)

    def add_token(self, token: str, user: User) -> None:
        self.call(self.auth.add_token, token, user)

    def add_service_account_token(self, namespace: str, name: str, token: str | None = None) -> str:
        """Register a bearer token for ServiceAccount ``namespace/name``; returns the token."""
        token = token or f"sa-{namespace}-{name}-{uuid.uuid4().hex[:8]}"
        self.add_token(token, service_account_user(namespace, name))
        return token

    def load_rbac(self, manifests: str | Path) -> None:
        """Apply rendered Role/ClusterRole and (Cluster)RoleBinding YAML, e.g. ``helm template`` output."""
        self.call(self.auth.load_manifests, manifests)

    def grant(
        self, subject: str, rules: Iterable[PolicyRule | dict[str, Any]], namespace: str | None = None
    ) -> None:
        self.call(self.auth.grant, subject, list(rules), namespace=namespace)

    def compact(self) -> int:
        """Drop all watch history (like an etcd compaction); returns the compacted resourceVersion.

        A watch or continue token from an older resourceVersion now gets 410 Gone/Expired.
        """

        def do() -> int:
            self.history.clear()
            self._compacted_rv = self._rv
            return self._rv

        return self.call(do)

    def inject_fault(
        self,
        mode: str = "status",
        *,
        status: int = 503,
        method: str | None = None,
        path: str | None = None,
        watch: bool | None = None,
        count: int | None = 1,
        seconds: float | None = None,
    ) -> Fault:
        """Make the next ``count`` matching requests fail (``count=None``: all, for ``seconds``).

        See :class:`Fault` for the modes. Returns the fault.
        """
        if mode not in ("status", "reset", "reset-after"):
            raise ValueError(f"unknown fault mode {mode}")
        until = time.monotonic() + seconds if seconds is not None else None
        fault = Fault(mode, status, method, path, watch, count, until)
        self.call(self.faults.append, fault)
        return fault

    def clear_faults(self) -> None:
        self.call(self.faults.clear)

    def drop_watches(self, abrupt: bool = True) -> int:
        """End every open watch: ``abrupt`` closes the TCP connection (an apiserver restart),
        otherwise the stream ends cleanly (as a watch timeout does). Returns how many were open."""

        def do() -> int:
            watchers = list(self._watchers)
            for watcher in watchers:
                if abrupt and watcher.handler is not None:
                    stream = watcher.handler.request.connection.stream
                    if stream is not None:
                        stream.close()
                watcher.queue.put_nowait(None)
            return len(watchers)

        return self.call(do)

    def take_fault(self, record: RequestRecord, watch: bool) -> Fault | None:
        """The fault this request hits, if any (loop thread only)."""
        for fault in self.faults:
            if fault.matches(record, watch):
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.call(lambda: copy.deepcopy(self.pods.get((namespace, name))))

    def list_pods(self) -> list[dict[str, Any]]:
        return self.call(lambda: [copy.deepcopy(p) for p in self.pods.values()])

    def running_processes(self) -> int:
        assert self.kubelet is not None
        return self.call(self.kubelet.running_processes)

    def resource_version(self) -> int:
        return self.call(lambda: self._rv)

    def wait_for_pod(
        self,
        namespace: str,
        name: str,
        predicate: Callable[[dict[str, Any] | None], bool],
        timeout: float = 30,
    ) -> dict[str, Any] | None:
        """Poll the store (not the API) until ``predicate(pod or None)``; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            pod = self.get_pod(namespace, name)
            if predicate(pod):
                return pod
            if time.monotonic() > deadline:
                raise TimeoutError(f"pod {namespace}/{name} never matched; last: {json.dumps(pod)[:2000]}")
            time.sleep(0.02)

    def image_dirs(self) -> set[str]:
        """Top-level host directories visible read-only in every container (the "image")."""
        dirs = {d for d in _IMAGE_DIRS if os.path.lexists(f"/{d}")}
        for path in (sys.prefix, sys.base_prefix, os.path.realpath(sys.executable)):
            top = Path(path).resolve().parts[1:2]
            if top:
                dirs.add(top[0])
        return dirs - {"proc", "dev", "sys", "tmp", "run"}

    def python_dirs(self) -> list[str]:
        """Interpreter and project directories under a top-level directory the image leaves out."""
        import grader_service

        excluded = {"proc", "dev", "sys", "tmp", "run"}
        candidates = {sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent.parent),
                      str(Path(grader_service.__file__).resolve().parent.parent)}  # fmt: skip
        found = sorted(p for p in candidates if Path(p).resolve().parts[1:2] and Path(p).parts[1] in excluded)
        return [p for p in found if not any(p != q and p.startswith(q + "/") for q in found)]

    def hidden_paths(self) -> list[Path]:
        """Host directories that must not show through the image: volumes are only seen mounted."""
        return [self.state_dir, *self.pvc_dirs.values()]

    # ------------------------------------------------------------------------------------------
    # store (loop thread only)
    # ------------------------------------------------------------------------------------------
    def record_event(self, key: PodKey, reason: str, message: str) -> None:
        self.events.append({"namespace": key[0], "pod": key[1], "reason": reason, "message": message})

    def record_internal_error(self, message: str) -> None:
        self.internal_errors.append(message)

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, type_: str, pod: dict[str, Any], prev: dict[str, Any] | None) -> None:
        if type_ != "DELETED":
            pod["metadata"]["resourceVersion"] = str(self._next_rv())
            snapshot = copy.deepcopy(pod)
        else:
            snapshot = copy.deepcopy(pod)
            snapshot["metadata"]["resourceVersion"] = str(self._next_rv())
        event = WatchEvent(self._rv, type_, snapshot, prev)
        self.history.append(event)
        self._trim_history()
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(event)

    def _trim_history(self) -> None:
        while len(self.history) > max(self.history_window, 0):
            dropped = self.history.popleft()
            self._compacted_rv = dropped.rv

    def update_pod(self, key: PodKey, uid: str, mutate: Callable[[dict[str, Any]], None]) -> bool:
        """Kubelet/scheduler status writes; one MODIFIED event if anything changed."""
        pod = self.pods.get(key)
        if pod is None or pod["metadata"]["uid"] != uid:
            return False
        prev = copy.deepcopy(pod)
        mutate(pod)
        if pod != prev:
            self._emit("MODIFIED", pod, prev)
        return True

    def finalize_deletion(self, key: PodKey, uid: str) -> None:
        """The kubelet is done with a gracefully deleted pod: remove the object (DELETED)."""
        pod = self.pods.get(key)
        if pod is not None and pod["metadata"]["uid"] == uid:
            del self.pods[key]
            self._emit("DELETED", pod, None)

    def _random_suffix(self, n: int) -> str:
        return "".join(random.choice(_NAME_CHARS) for _ in range(n))

    # -- operations (called by handlers on the loop) -----------------------------------------
    def create_pod(
        self, namespace: str, body: Any, strict: bool, dry_run: bool
    ) -> tuple[dict[str, Any], list[str]]:
        if isinstance(body, dict):
            if body.get("kind") not in (None, "", "Pod"):
                raise bad_request(
                    f"the kind in the data ({body['kind']}) does not match the expected kind (Pod)"
                )
            if body.get("apiVersion") not in (None, "", "v1"):
                raise bad_request(
                    f"the API version in the data ({body['apiVersion']}) does not match the expected API version (v1)"
                )
        pod, warnings = fake_schema.decode(body, "V1Pod", strict)
        meta = pod.setdefault("metadata", {})
        if meta.get("namespace", namespace) != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if namespace not in self.namespaces:
            raise not_found("namespaces", namespace)
        meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"][:58] + self._random_suffix(5)
        for key in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ):
            meta.pop(key, None)
        pod["kind"], pod["apiVersion"] = "Pod", "v1"
        pod.pop("status", None)
        fake_schema.apply_pod_defaults(pod, self._random_suffix)
        errors = fake_schema.validate_pod(pod)
        if errors:
            raise invalid("Pod", meta.get("name", ""), errors)
        name = meta["name"]
        account = pod["spec"]["serviceAccountName"]
        if self.service_accounts is not None and (namespace, account) not in self.service_accounts:
            raise forbidden_admission(
                "pods",
                name,
                f'error looking up service account {namespace}/{account}: serviceaccount "{account}" not found',
            )
        if (namespace, name) in self.pods:
            raise already_exists("pods", name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339()
        if dry_run:
            return pod, warnings
        self.pods[(namespace, name)] = pod
        self._emit("ADDED", pod, None)
        assert self.kubelet is not None
        self.kubelet.pod_created(pod)
        return pod, warnings

    def get_pod_or_404(self, namespace: str, name: str) -> dict[str, Any]:
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise not_found("pods", name)
        return pod

    def change_pod(
        self, namespace: str, name: str, compute: Callable[[dict[str, Any]], Any], strict: bool, dry_run: bool
    ) -> tuple[dict[str, Any], list[str]]:
        """Patch/update: ``compute(current)`` returns the new body; status is not writable here."""
        old = self.get_pod_or_404(namespace, name)
        new_body = compute(copy.deepcopy(old))
        new, warnings = fake_schema.decode(new_body, "V1Pod", strict)
        new["kind"], new["apiVersion"] = "Pod", "v1"
        wanted_rv = (new.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise conflict(
                "pods",
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            if key in old["metadata"]:
                new["metadata"][key] = old["metadata"][key]
        new["status"] = copy.deepcopy(old["status"])
        new.setdefault("spec", {})
        errors = fake_schema.validate_pod_update(old, new)
        if errors:
            raise invalid("Pod", name, errors)
        if dry_run or new == old:
            return (new if dry_run else old), warnings
        self.pods[(namespace, name)] = new
        self._emit("MODIFIED", new, old)
        return new, warnings

    def delete_pod(self, namespace: str, name: str, options: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        pod = self.get_pod_or_404(namespace, name)
        policy = options.get("propagationPolicy")
        if policy is not None and policy not in ("Foreground", "Background", "Orphan"):
            raise invalid(
                "DeleteOptions.meta.k8s.io",
                "",
                [
                    FieldError(
                        "FieldValueNotSupported",
                        "propagationPolicy",
                        policy,
                        supported=["Foreground", "Background", "Orphan"],
                    )
                ],
            )
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != pod["metadata"]["uid"]:
            raise conflict(
                "pods",
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {pod['metadata']['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != pod["metadata"]["resourceVersion"]:
            raise conflict(
                "pods",
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{pod['metadata']['resourceVersion']}",
            )
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        grace = max(int(grace), 0)
        # pod strategy CheckGracefulDelete: unscheduled and terminal pods go at once.
        if not pod["spec"].get("nodeName") or pod["status"].get("phase") in ("Succeeded", "Failed"):
            grace = 0
        if dry_run:
            return copy.deepcopy(pod)
        meta = pod["metadata"]
        current = meta.get("deletionGracePeriodSeconds")
        if current is not None and grace >= current:
            return copy.deepcopy(pod)  # already terminating with a shorter or equal grace period
        assert self.kubelet is not None
        if grace == 0:
            prev = copy.deepcopy(pod)
            now = rfc3339()
            meta["deletionTimestamp"] = meta.get("deletionTimestamp") or now
            meta["deletionGracePeriodSeconds"] = 0
            del self.pods[(namespace, name)]
            self.kubelet.forget((namespace, name))
            self._emit("DELETED", pod, prev)
            return copy.deepcopy(pod)
        prev = copy.deepcopy(pod)
        meta["deletionTimestamp"] = rfc3339(
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace)
        )
        meta["deletionGracePeriodSeconds"] = grace
        pod["spec"]["terminationGracePeriodSeconds"] = grace
        self._emit("MODIFIED", pod, prev)
        self.kubelet.delete_requested((namespace, name), grace)
        return copy.deepcopy(pod)

    def select(
        self, namespace: str | None, labels: list[Requirement], fields: list[FieldRequirement]
    ) -> list[dict[str, Any]]:
        pods = [
            p
            for (ns, _), p in sorted(self.pods.items())
            if (namespace is None or ns == namespace)
            and labels_match(labels, p["metadata"].get("labels"))
            and fields_match(fields, p)
        ]
        return pods


# ------------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------------
_PUBLIC_PATHS = ("/version", "/healthz", "/readyz", "/livez")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _list_item(pod: dict[str, Any]) -> dict[str, Any]:
    item = copy.deepcopy(pod)
    item.pop("kind", None)
    item.pop("apiVersion", None)
    return item


class _Handler(tornado.web.RequestHandler):
    """Shared plumbing: authentication, RBAC, Status errors, JSON, request records."""

    server: FakeKubeAPIServer
    user: User | None

    def initialize(self, server: FakeKubeAPIServer) -> None:
        self.server = server
        self.user = None
        self.record = RequestRecord(
            self.request.method or "",
            self.request.path,
            {k: v[-1] for k, v in parse_qs(self.request.query).items()},
            None,
        )

    def prepare(self) -> None:
        self.server.requests.append(self.record)
        self._reset_after = False
        self.record.watch = self.flag("watch")
        fault = self.server.take_fault(self.record, self.record.watch)
        if fault is not None:
            self.record.fault = fault.mode
            if fault.mode == "status":
                code = fault.status
                raise StatusError(code, _FAULT_REASONS.get(code, "InternalError"), f"injected fault ({code})")
            if fault.mode == "reset":
                self._close_connection()
                raise tornado.web.Finish()
            self._reset_after = True
        if self.request.path.rstrip("/") in _PUBLIC_PATHS:
            return
        self.user = self.server.auth.authenticate(self.request.headers.get("Authorization"))
        if self.user is None:
            raise unauthorized()
        self.record.user = self.user.name

    def on_finish(self) -> None:
        self.record.code = self.get_status()

    def _close_connection(self) -> None:
        stream = self.request.connection.stream  # type: ignore[attr-defined]
        if stream is not None:
            stream.close()

    def finish(self, chunk: Any = None) -> Any:
        if getattr(self, "_reset_after", False) and not self._finished:
            self._close_connection()  # the work is done; the answer never arrives
        return super().finish(chunk)

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.get_query_argument(name, default)

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("true", "1")

    def authorize(
        self,
        verb: str,
        namespace: str | None,
        name: str | None = None,
        subresource: str | None = None,
        resource: str = "pods",
    ) -> None:
        assert self.user is not None
        if not self.server.auth.allowed(self.user, verb, "", resource, subresource, namespace, name):
            raise forbidden(
                user=self.user.name,
                verb=verb,
                resource=resource,
                subresource=subresource,
                namespace=namespace,
                name=name,
            )

    def send(self, obj: Any, code: int = 200, warnings: Iterable[str] = ()) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.set_header("Audit-Id", str(uuid.uuid4()))
        for warning in warnings:
            self.add_header("Warning", f'299 - "{warning.replace(chr(34), chr(92) + chr(34))}"')
        self.finish(_dumps(obj))

    def body_json(self) -> Any:
        if not self.request.body:
            return None
        try:
            return json.loads(self.request.body)
        except ValueError:
            try:
                return yaml.safe_load(self.request.body)
            except yaml.YAMLError:
                raise bad_request("couldn't get version/kind; json parse error: invalid character") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, StatusError):
            error = exc
        elif isinstance(exc, tornado.web.HTTPError) and exc.status_code == 405:
            error = method_not_allowed("the server does not allow this method on the requested resource")
        else:
            self.server.record_internal_error(f"{self.request.method} {self.request.uri}: {exc!r}")
            error = StatusError(500, "InternalError", f"Internal error occurred: {exc!r}")
        self.set_status(error.code)
        self.set_header("Content-Type", "application/json")
        self.finish(_dumps(error.body()))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not isinstance(value, StatusError | tornado.iostream.StreamClosedError):
            super().log_exception(typ, value, tb)

    def strict(self) -> bool:
        return (self.arg("fieldValidation") or "").lower() == "strict"

    def dry_run(self) -> bool:
        return self.arg("dryRun") == "All"


class _VersionHandler(_Handler):
    def get(self) -> None:
        major, minor, *_ = self.server.server_version.split(".")
        self.send(
            {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{self.server.server_version}",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.24.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )


class _HealthHandler(_Handler):
    def get(self, _name: str) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("ok")


class _DiscoveryHandler(_Handler):
    def get(self, which: str) -> None:
        if which == "api":
            self.send(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.server.port}"}
                    ],
                }
            )
        elif which == "apis":
            self.send({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        else:
            pod_verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            self.send(
                {
                    "kind": "APIResourceList",
                    "groupVersion": "v1",
                    "resources": [
                        {
                            "name": "namespaces",
                            "singularName": "namespace",
                            "namespaced": False,
                            "kind": "Namespace",
                            "verbs": ["get", "list"],
                            "shortNames": ["ns"],
                        },
                        {
                            "name": "pods",
                            "singularName": "pod",
                            "namespaced": True,
                            "kind": "Pod",
                            "verbs": pod_verbs,
                            "shortNames": ["po"],
                            "categories": ["all"],
                        },
                        {
                            "name": "pods/log",
                            "singularName": "",
                            "namespaced": True,
                            "kind": "Pod",
                            "verbs": ["get"],
                        },
                        {
                            "name": "pods/status",
                            "singularName": "",
                            "namespaced": True,
                            "kind": "Pod",
                            "verbs": ["get"],
                        },
                    ],
                }
            )


class _NamespaceHandler(_Handler):
    def get(self, name: str | None = None) -> None:
        def namespace(ns: str) -> dict[str, Any]:
            return {
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }

        if name is None:
            self.authorize("list", None, resource="namespaces")
            self.send(
                {
                    "kind": "NamespaceList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.server._rv)},
                    "items": [namespace(n) for n in sorted(self.server.namespaces)],
                }
            )
            return
        self.authorize("get", None, name, resource="namespaces")
        if name not in self.server.namespaces:
            raise not_found("namespaces", name)
        self.send({"kind": "Namespace", "apiVersion": "v1", **namespace(name)})


class _NotFoundHandler(_Handler):
    def prepare(self) -> None:
        super().prepare()
        raise route_not_found()


class _PodCollectionHandler(_Handler):
    async def get(self, namespace: str | None = None) -> None:
        watch = self.flag("watch")
        self.authorize("watch" if watch else "list", namespace)
        labels = parse_label_selector(self.arg("labelSelector"))
        fields = parse_field_selector(self.arg("fieldSelector"))
        if watch:
            self.record.watch = True
            await _serve_watch(self, namespace, labels, fields)
            return
        self._list(namespace, labels, fields)

    def _list(self, namespace: str | None, labels: list[Requirement], fields: list[FieldRequirement]) -> None:
        server = self.server
        items = server.select(namespace, labels, fields)
        list_rv = server._rv
        token = self.arg("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                list_rv, start = int(state["rv"]), tuple(state["start"])
            except (ValueError, KeyError, TypeError):
                raise bad_request(f"continue key is not valid: {token}") from None
            if list_rv < server._compacted_rv:
                raise gone(
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter."
                )
            items = [p for p in items if (p["metadata"]["namespace"], p["metadata"]["name"]) > start]
        metadata: dict[str, Any] = {"resourceVersion": str(list_rv)}
        limit = int(self.arg("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            metadata["continue"] = base64.urlsafe_b64encode(
                _dumps({"rv": list_rv, "start": [last["namespace"], last["name"]]}).encode()
            ).decode()
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if _wants_table(self):
            self.send(_table(items, metadata, self.arg("includeObject") or "Metadata"))
            return
        self.send(
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": metadata,
                "items": [_list_item(p) for p in items],
            }
        )

    def post(self, namespace: str | None = None) -> None:
        if namespace is None:
            raise method_not_allowed("the server does not allow this method on the requested resource")
        self.authorize("create", namespace)
        pod, warnings = self.server.create_pod(namespace, self.body_json(), self.strict(), self.dry_run())
        self.send(pod, 201, warnings)

    def delete(self, namespace: str | None = None) -> None:
        if namespace is None:
            raise method_not_allowed("the server does not allow this method on the requested resource")
        self.authorize("deletecollection", namespace)
        options = self.body_json() or {}
        if self.arg("gracePeriodSeconds") is not None:
            options["gracePeriodSeconds"] = int(self.arg("gracePeriodSeconds") or 0)
        labels = parse_label_selector(self.arg("labelSelector"))
        fields = parse_field_selector(self.arg("fieldSelector"))
        deleted = [
            self.server.delete_pod(namespace, p["metadata"]["name"], options, self.dry_run())
            for p in self.server.select(namespace, labels, fields)
        ]
        self.send(
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.server._rv)},
                "items": [_list_item(p) for p in deleted],
            }
        )


class _PodHandler(_Handler):
    def get(self, namespace: str, name: str) -> None:
        self.authorize("get", namespace, name)
        pod = self.server.get_pod_or_404(namespace, name)
        if _wants_table(self):
            self.send(
                _table(
                    [pod],
                    {"resourceVersion": pod["metadata"]["resourceVersion"]},
                    self.arg("includeObject") or "Metadata",
                )
            )
            return
        self.send(pod)

    def patch(self, namespace: str, name: str) -> None:
        self.authorize("patch", namespace, name)
        content_type = (self.request.headers.get("Content-Type") or "").split(";")[0].strip()
        body = self.body_json()
        if content_type == "application/merge-patch+json":

            def compute(old: dict[str, Any]) -> Any:
                return fake_schema.merge_patch(old, body)
        elif content_type == "application/strategic-merge-patch+json":

            def compute(old: dict[str, Any]) -> Any:
                return fake_schema.strategic_merge_patch(old, body)
        elif content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")

            def compute(old: dict[str, Any]) -> Any:
                return fake_schema.json_patch(old, body)
        else:
            raise unsupported_media_type(content_type)
        if not isinstance(body, dict | list):
            raise bad_request("the body of the request must be a JSON object")
        pod, warnings = self.server.change_pod(namespace, name, compute, self.strict(), self.dry_run())
        self.send(pod, 200, warnings)

    def put(self, namespace: str, name: str) -> None:
        self.authorize("update", namespace, name)
        body = self.body_json()
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        if (body.get("metadata") or {}).get("name") != name:
            raise bad_request("the name of the object does not match the name on the URL")
        pod, warnings = self.server.change_pod(
            namespace, name, lambda old: body, self.strict(), self.dry_run()
        )
        self.send(pod, 200, warnings)

    def delete(self, namespace: str, name: str) -> None:
        self.authorize("delete", namespace, name)
        options = self.body_json() or {}
        if not isinstance(options, dict):
            raise bad_request("the body of the request must be a DeleteOptions object")
        if self.arg("gracePeriodSeconds") is not None:
            options["gracePeriodSeconds"] = int(self.arg("gracePeriodSeconds") or 0)
        if self.arg("propagationPolicy") is not None:
            options["propagationPolicy"] = self.arg("propagationPolicy")
        self.send(self.server.delete_pod(namespace, name, options, self.dry_run()))


class _PodSubresourceHandler(_Handler):
    async def get(self, namespace: str, name: str, subresource: str) -> None:
        self.authorize("get", namespace, name, subresource)
        pod = self.server.get_pod_or_404(namespace, name)
        if subresource == "status":
            self.send(pod)
            return
        await _serve_log(self, pod)


def _wants_table(handler: _Handler) -> bool:
    return "as=Table" in (handler.request.headers.get("Accept") or "")


def _human_age(created: str | None) -> str:
    if not created:
        return "<unknown>"
    then = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    return f"{hours}h" if hours < 48 else f"{hours // 24}d"


def _pod_status_text(pod: dict[str, Any]) -> str:
    """The STATUS column as kubectl's printPod computes it."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    initializing = False
    inits = status.get("initContainerStatuses") or []
    for i, c in enumerate(inits):
        state = c.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        if term:
            reason = "Init:" + (term.get("reason") or f"ExitCode:{term.get('exitCode')}")
        elif wait and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(pod['spec'].get('initContainers') or [])}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for c in reversed(status.get("containerStatuses") or []):
            state = c.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                reason = term.get("reason") or f"ExitCode:{term.get('exitCode')}"
            elif state.get("running") and c.get("ready"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _table(items: list[dict[str, Any]], metadata: dict[str, Any], include: str) -> dict[str, Any]:
    columns = [
        ("Name", "string", "name", 0),
        ("Ready", "string", "", 0),
        ("Status", "string", "", 0),
        ("Restarts", "string", "", 0),
        ("Age", "string", "", 0),
        ("IP", "string", "", 1),
        ("Node", "string", "", 1),
        ("Nominated Node", "string", "", 1),
        ("Readiness Gates", "string", "", 1),
    ]
    rows = []
    for pod in items:
        status = pod.get("status") or {}
        statuses = status.get("containerStatuses") or []
        total = len(pod["spec"].get("containers") or [])
        ready = sum(1 for c in statuses if c.get("ready"))
        restarts = sum(c.get("restartCount", 0) for c in statuses)
        row: dict[str, Any] = {
            "cells": [
                pod["metadata"]["name"],
                f"{ready}/{total}",
                _pod_status_text(pod),
                str(restarts),
                _human_age(pod["metadata"].get("creationTimestamp")),
                status.get("podIP") or "<none>",
                pod["spec"].get("nodeName") or "<none>",
                "<none>",
                "<none>",
            ]
        }
        if include == "Object":
            row["object"] = pod
        elif include == "Metadata":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": pod["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [
            {"name": n, "type": t, "format": f, "description": n, "priority": p} for n, t, f, p in columns
        ],
        "rows": rows,
    }


async def _serve_watch(
    handler: _Handler, namespace: str | None, labels: list[Requirement], fields: list[FieldRequirement]
) -> None:
    server = handler.server
    watcher = _Watcher(namespace, labels, fields)
    watcher.handler = handler
    # Go's net package (so the real apiserver) disables Nagle's algorithm on every TCP connection;
    # without this each small event waits for the client's delayed ACK (~40 ms per event).
    if handler.request.connection.stream is not None:  # type: ignore[attr-defined]
        handler.request.connection.stream.set_nodelay(True)  # type: ignore[attr-defined]
    handler.set_header("Content-Type", "application/json")
    rv_arg = handler.arg("resourceVersion") or ""
    bookmarks = handler.flag("allowWatchBookmarks")
    timeout = float(handler.arg("timeoutSeconds") or server.default_watch_timeout)
    backlog: list[tuple[str, dict[str, Any]]] = []
    initial_end = False
    # Registering and taking the backlog happen without an await in between: no event is lost.
    if handler.flag("sendInitialEvents"):
        backlog = [("ADDED", copy.deepcopy(p)) for p in server.select(namespace, labels, fields)]
        initial_end = True
    elif rv_arg in ("", "0"):
        backlog = [("ADDED", copy.deepcopy(p)) for p in server.select(namespace, labels, fields)]
    else:
        try:
            since = int(rv_arg)
        except ValueError:
            raise bad_request(f'invalid resource version "{rv_arg}"') from None
        if since < server._compacted_rv:
            error = gone(f"too old resource version: {since} ({server._compacted_rv})").body()
            handler.write(_dumps({"type": "ERROR", "object": error}) + "\n")
            handler.finish()
            return
        for event in server.history:
            if event.rv > since:
                seen = watcher.translate(event)
                if seen:
                    backlog.append(seen)
    server._watchers.add(watcher)
    close_waiter = asyncio.get_running_loop().create_future()
    handler.on_connection_close = lambda: close_waiter.done() or close_waiter.set_result(None)  # type: ignore[method-assign]
    try:
        handler.set_status(200)
        for type_, obj in backlog:
            handler.write(_dumps({"type": type_, "object": obj}) + "\n")
        if initial_end:
            handler.write(_dumps(_bookmark(server._rv, initial_end=True)) + "\n")
        await handler.flush()
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + server.bookmark_interval
        while not server._stopping and not close_waiter.done():
            now = time.monotonic()
            if now >= deadline:
                break
            wait = min(deadline, next_bookmark if bookmarks else deadline) - now
            getter = asyncio.ensure_future(watcher.queue.get())
            done, _ = await asyncio.wait(
                {getter, close_waiter}, timeout=max(wait, 0), return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                if bookmarks and time.monotonic() >= next_bookmark:
                    handler.write(_dumps(_bookmark(server._rv)) + "\n")
                    await handler.flush()
                    next_bookmark = time.monotonic() + server.bookmark_interval
                continue
            event = getter.result()
            if event is None:
                break
            seen = watcher.translate(event)
            if seen:
                handler.write(_dumps({"type": seen[0], "object": seen[1]}) + "\n")
                await handler.flush()
        if not close_waiter.done():
            handler.finish()
    except tornado.iostream.StreamClosedError:
        pass
    finally:
        server._watchers.discard(watcher)


def _bookmark(rv: int, initial_end: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(rv), "creationTimestamp": None}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": meta}}


async def _serve_log(handler: _Handler, pod: dict[str, Any]) -> None:
    server = handler.server
    name = pod["metadata"]["name"]
    spec = pod["spec"]
    containers = [c["name"] for c in spec["containers"]]
    inits = [c["name"] for c in spec.get("initContainers") or []]
    container = handler.arg("container")
    if not container:
        if len(containers) != 1:
            message = (
                f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
            )
            if inits:
                message += f" or one of the init containers: [{' '.join(inits)}]"
            raise bad_request(message)
        container = containers[0]
    if container not in containers + inits:
        raise bad_request(f"container {container} is not valid for pod {name}")
    if not spec.get("nodeName"):
        raise bad_request(f"pod {name} does not have a host assigned")
    assert server.kubelet is not None
    rt = server.kubelet.logs((pod["metadata"]["namespace"], name))
    if rt is None or container not in rt.containers:
        raise bad_request(f'container "{container}" in pod "{name}" is not available')
    c = rt.containers[container]
    if handler.flag("previous"):
        if c.previous_log is None:
            raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        log = c.previous_log
    else:
        waiting = (c.state.get("waiting") or {}).get("reason")
        if not c.log.entries and not c.started and waiting:
            why = {
                "ImagePullBackOff": "trying and failing to pull image",
                "ErrImagePull": "trying and failing to pull image",
                "RegistryUnavailable": "trying and failing to pull image",
                "SignatureValidationFailed": "trying and failing to pull image",
                "InvalidImageName": "image can't be pulled",
            }.get(waiting, waiting)
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {why}')
        log = c.log
    tail = handler.arg("tailLines")
    limit = handler.arg("limitBytes")
    since_seconds = handler.arg("sinceSeconds")
    since_time = handler.arg("sinceTime")
    stream = handler.arg("stream") or "All"
    timestamps = handler.flag("timestamps")
    since: datetime.datetime | None = None
    if since_seconds:
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=int(since_seconds))
    elif since_time:
        since = datetime.datetime.strptime(since_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    remaining = int(limit) if limit else None

    def render(entries: list[tuple[datetime.datetime, str, bytes]]) -> bytes:
        nonlocal remaining
        chosen = [
            e
            for e in entries
            if (stream == "All" or e[1] == stream.lower()) and (since is None or e[0] >= since)
        ]
        data = b"".join((rfc3339_nano(t).encode() + b" " if timestamps else b"") + d for t, _, d in chosen)
        if remaining is not None:
            data = data[:remaining]
            remaining -= len(data)
        return data

    handler.set_status(200)
    handler.set_header("Content-Type", "text/plain")
    entries = list(log.entries)
    if tail is not None:
        entries = entries[-int(tail) :] if int(tail) > 0 else []
    handler.write(render(entries))
    if not handler.flag("follow"):
        handler.finish()
        return
    sent = len(log.entries)
    try:
        await handler.flush()
        while not log.closed and not server._stopping and (remaining is None or remaining > 0):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(log.changed.wait(), 0.5)
            new = log.entries[sent:]
            sent += len(new)
            if new:
                handler.write(render(new))
                await handler.flush()
            if server.kubelet.logs(rt.key) is not rt:
                break
        handler.write(render(log.entries[sent:]))
        handler.finish()
    except tornado.iostream.StreamClosedError:
        pass


def _make_app(server: FakeKubeAPIServer) -> tornado.web.Application:
    kw = {"server": server}
    ns, name = r"([a-z0-9][-a-z0-9.]*)", r"([^/]+)"
    return tornado.web.Application(
        [
            (r"/version/?", _VersionHandler, kw),
            (r"/(healthz|readyz|livez)/?", _HealthHandler, kw),
            (r"/(api|apis)/?", _DiscoveryHandler, kw),
            (r"/api/(v1)/?", _DiscoveryHandler, kw),
            (r"/api/v1/namespaces/?", _NamespaceHandler, kw),
            (rf"/api/v1/namespaces/{ns}/?", _NamespaceHandler, kw),
            (r"/api/v1/pods/?", _PodCollectionHandler, kw),
            (rf"/api/v1/namespaces/{ns}/pods/?", _PodCollectionHandler, kw),
            (rf"/api/v1/namespaces/{ns}/pods/{name}/?", _PodHandler, kw),
            (rf"/api/v1/namespaces/{ns}/pods/{name}/(log|status)/?", _PodSubresourceHandler, kw),
            (r".*", _NotFoundHandler, kw),
        ]
    )


# ------------------------------------------------------------------------------------------------
# manual use: python -m tests.kube.fake_apiserver --pvc claim=/some/dir
# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the fake Kubernetes apiserver until interrupted.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    parser.add_argument("--namespace", action="append", default=[])
    parser.add_argument("--pvc", action="append", default=[], metavar="CLAIM=DIR")
    parser.add_argument("--kubeconfig", type=Path, help="also write the admin kubeconfig here")
    args = parser.parse_args(argv)
    pvcs = dict(item.split("=", 1) for item in args.pvc)
    with FakeKubeAPIServer(
        tls=not args.http,
        port=args.port,
        namespaces=args.namespace,
        pvc_dirs={k: Path(v) for k, v in pvcs.items()},
    ) as server:
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig)
        print(
            f"fake apiserver at {server.url}; KUBECONFIG={args.kubeconfig or server.kubeconfig}", flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
