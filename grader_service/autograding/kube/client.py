"""The few Kubernetes API calls of the kube executor: in worker threads, retried, clearly worded.

The official client is synchronous, so every call runs in a small thread pool of its own and the
event loop never waits on the network. Transient failures (5xx, 429, connection resets, an
apiserver restarting) are retried with exponential backoff for up to ``retry_seconds``; a create
whose answer was lost surfaces as a 409 on the retry, which the executor resolves by adoption.
Permission errors are turned into a sentence that names the missing RBAC rule, because
"403 Forbidden" alone sends an admin searching.

Objects travel as plain JSON dicts (``_preload_content=False``): the executor reads a handful of
fields, and skipping the client's model deserialization keeps the service cheap under load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# (connect, read) seconds for ordinary calls; watches set their own read timeout.
REQUEST_TIMEOUT = (10.0, 60.0)
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Operation:
    """What a call does, in RBAC terms: ``verb`` on ``resource`` in ``namespace``."""

    verb: str
    resource: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}"


class KubeError(Exception):
    """A Kubernetes API call failed; ``message`` is meant for an administrator or instructor."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "", retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.retryable = retryable


class PermissionDenied(KubeError):
    """401 or 403: credentials or RBAC are wrong; retrying without a fix cannot help."""


def describe_status(exc: ApiException) -> tuple[str, str]:
    """The (reason, message) of a ``kind: Status`` error body, falling back to the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict):
        return str(body.get("reason") or exc.reason or ""), str(body.get("message") or exc.reason or "")
    return str(exc.reason or ""), str(exc.body or exc.reason or "")


def translate_error(exc: BaseException, op: Operation) -> KubeError:
    """A :class:`KubeError` that says what failed and, for 401/403, what to grant."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        reason, message = describe_status(exc)
        if exc.status == 403:
            return PermissionDenied(
                f"the service account lacks permission to {op.verb} {op.resource} in namespace "
                f'"{op.namespace}" (RBAC: verb "{op.verb}" on resource "{op.resource}" in API group "" is '
                f"missing from the service's Role; the API server said: {message})",
                status=403,
                reason=reason,
            )
        if exc.status == 401:
            return PermissionDenied(
                f"the Kubernetes API rejected the service's credentials while trying to {op} (401 "
                "Unauthorized): check the kubeconfig or the mounted service account token",
                status=401,
                reason=reason,
            )
        return KubeError(
            f'the Kubernetes API refused to {op} in namespace "{op.namespace}" ({exc.status} {reason}: {message})',
            status=exc.status,
            reason=reason,
            retryable=exc.status in TRANSIENT_STATUS,
        )
    return KubeError(
        f"the Kubernetes API could not be reached to {op} ({type(exc).__name__}: {exc})", retryable=True
    )


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the apiserver is busy, restarting, or the connection broke."""
    if isinstance(exc, ApiException):
        # status 0: the client's own wrapper around TLS/connection errors
        return exc.status in TRANSIENT_STATUS or exc.status == 0
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (429/503 ``Retry-After``), if it did."""
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return min(float(value), 30.0) if value is not None else None
    except ValueError:
        return None


def backoff_delay(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter: many waiters never retry in lockstep."""
    return random.uniform(0, min(cap, base * 2**attempt)) + base / 2


def own_namespace(default: str = "default") -> str:
    """The namespace of the pod the service runs in, when it runs in one."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or default
    except OSError:
        return default


def make_api_client(kubeconfig: str, context: str | None, pool_size: int) -> client.ApiClient:
    """An ``ApiClient`` of its own (no global configuration is touched).

    Inside a cluster (``KUBERNETES_SERVICE_HOST`` set) and without an explicit kubeconfig, the
    mounted service account is used; otherwise the kubeconfig file (and ``context``, if given).
    The client's own urllib3 retries are off: :class:`KubeClient` retries what is worth retrying
    and knows which calls are safe to repeat.
    """
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=kubeconfig or None,
            context=context or None,
            client_configuration=configuration,
            persist_config=False,
        )
    configuration.retries = False
    configuration.connection_pool_maxsize = pool_size
    api_client = client.ApiClient(configuration)
    api_client.user_agent = "grader-service/kube-executor"
    return api_client


class KubeClient:
    """Pod calls for one namespace, each run in the client's thread pool with retries."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        *,
        log: logging.Logger | logging.LoggerAdapter[Any],
        retry_seconds: float = 30.0,
        threads: int = 8,
    ):
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.log = log
        self.retry_seconds = retry_seconds
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube-api")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()

    def op(self, verb: str, resource: str = "pods") -> Operation:
        return Operation(verb, resource, self.namespace)

    async def call(self, op: Operation, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
        """The body of ``fn(*args, **kwargs, _preload_content=False)``, called in a worker thread.

        The body is read in the thread too (reading it on the loop would block it), which also
        hands the connection back to the pool. Transient failures are retried; 401/403/404/409
        are raised as the client's ``ApiException`` for the caller to interpret; anything else
        becomes a :class:`KubeError`.
        """
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0

        def request() -> bytes:
            response = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
            try:
                return response.data
            finally:
                response.release_conn()

        while True:
            try:
                return await loop.run_in_executor(self._pool, request)
            except Exception as exc:
                if isinstance(exc, ApiException) and exc.status in (401, 403, 404, 409):
                    raise  # the caller decides what a 404/409 means; 401/403 are translated there
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise translate_error(exc, op) from exc
                delay = retry_after(exc) or backoff_delay(attempt)
                attempt += 1
                self.log.warning(
                    "Kubernetes API: %s failed (%s), retry %d in %.2f s", op, _short(exc), attempt, delay
                )
                await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))

    # --- the calls --------------------------------------------------------------------------

    async def create_pod(self, pod: client.V1Pod) -> dict[str, Any]:
        """Create the pod; raises the client's ``ApiException`` for 409 (the caller adopts)."""
        op = self.op("create")
        try:
            data = await self.call(op, self.core.create_namespaced_pod, self.namespace, pod)
        except ApiException as exc:
            if exc.status == 409:
                raise
            raise translate_error(exc, op) from exc
        return json.loads(data)

    async def get_pod(self, name: str) -> dict[str, Any] | None:
        op = self.op("get")
        try:
            data = await self.call(op, self.core.read_namespaced_pod, name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise translate_error(exc, op) from exc
        return json.loads(data)

    async def delete_pod(self, name: str, uid: str | None = None, grace_seconds: int | None = None) -> bool:
        """Delete the pod (only the one with ``uid``, if given); False when it was already gone."""
        op = self.op("delete")
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid) if uid else None,
            grace_period_seconds=grace_seconds,
        )
        try:
            await self.call(op, self.core.delete_namespaced_pod, name, self.namespace, body=options)
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 409:  # the uid precondition failed: a different pod has that name now
                return False
            raise translate_error(exc, op) from exc
        return True

    async def read_log(
        self, name: str, container: str, limit_bytes: int, tail_lines: int | None = None
    ) -> bytes:
        """At most ``limit_bytes`` of the container's log (of the last ``tail_lines`` lines, if given)."""
        op = self.op("get", "pods/log")
        kwargs: dict[str, Any] = {"container": container, "limit_bytes": limit_bytes}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        try:
            return await self.call(op, self.core.read_namespaced_pod_log, name, self.namespace, **kwargs)
        except ApiException as exc:
            raise translate_error(exc, op) from exc


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:200]


__all__ = [
    "KubeClient",
    "KubeError",
    "Operation",
    "PermissionDenied",
    "backoff_delay",
    "describe_status",
    "is_transient",
    "make_api_client",
    "own_namespace",
    "translate_error",
]
