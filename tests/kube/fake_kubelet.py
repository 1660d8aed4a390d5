"""A simulated scheduler + kubelet: runs each pod's containers as local processes.

The executor under test only sees pod objects change through the API, so what matters is that
they change the way a real node changes them: ``Pending`` (``PodScheduled=False/Unschedulable`` when
no node fits, ``ContainerCreating``, ``ErrImagePull`` → ``ImagePullBackOff``), ``Running``, then
``Succeeded``/``Failed`` with the container's real exit code and reason (``Completed``, ``Error``,
``OOMKilled``), ``DeadlineExceeded`` for ``activeDeadlineSeconds``, graceful deletion with SIGTERM
then SIGKILL after the grace period.

Each container runs under bubblewrap (``bwrap``) so that the filesystem a command sees is the pod's:
the host's OS directories read-only (the "image"), a fresh ``/tmp`` and root (read-only under
``readOnlyRootFilesystem``), every ``volumeMount`` bind-mounted at its ``mountPath`` (only the
``subPath`` of a PVC is visible), its own PID namespace, and the ``runAsUser`` uid via a user
namespace. PID 1 of that namespace is bwrap's reaper, not the command: the reaper never execs, so
its "die with parent" setting reliably takes the whole sandbox down when the test process dies.
What a container's PID 1 sees is emulated instead: the kubelet sends SIGTERM only if the command
has a handler for it (the kernel drops it otherwise), so an unprepared command keeps running until
SIGKILL at the end of the grace period, as on a node. Without bwrap the container runs as a plain
process group; see ``SandboxMode``.

Not simulated: CPU limits (no throttling), probes, ephemeral/sidecar containers, pod networking
(processes share the host network; pod IP = 127.0.0.1), configMap/secret volumes and env sources
(the fake stores no ConfigMaps/Secrets, so such pods fail as on a cluster where they are missing).
Memory limits are enforced like the kernel OOM killer would: the container's processes are polled
and the whole container is SIGKILLed (reason ``OOMKilled``, exit code 137) once their total RSS
exceeds ``resources.limits.memory``. Local storage is enforced like the kubelet's eviction manager
does it, every ``storage_poll_interval`` seconds (10 s on a node): an emptyDir (not in memory) over
its ``sizeLimit``, or the pod's emptyDirs and container logs over the sum of its containers'
``ephemeral-storage`` limits, gets the pod evicted: its containers killed, phase ``Failed``, reason
``Evicted``, the kubelet's message, and a ``DisruptionTarget`` condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fake_schema import parse_quantity

if TYPE_CHECKING:
    from .fake_apiserver import FakeKubeAPIServer

PodKey = tuple[str, str]

# The OCI reference grammar (github.com/distribution/reference), as the kubelet checks it.
_IMAGE_REF = re.compile(
    r"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
# The OS directories of the host that make up the "image" every container runs in.
_IMAGE_DIRS = (
    "bin",
    "sbin",
    "lib",
    "lib32",
    "lib64",
    "libx32",
    "usr",
    "etc",
    "opt",
    "var",
    "srv",
    "home",
    "root",
)


@dataclass(frozen=True)
class PullFailure:
    """How pulls of one image fail: the waiting reason, the runtime's message, for how many pulls.

    ``message`` may use ``{image}``; ``times`` None means every pull fails.
    """

    message: str
    reason: str = "ErrImagePull"
    times: int | None = None


# What containerd (through the kubelet) says for the common cases, for PullFailure(message=...).
PULL_ERRORS = {
    "not found": 'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to '
    'resolve reference "{image}": {image}: not found',
    "unauthorized": 'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed to '
    'resolve reference "{image}": pull access denied, repository does not exist or may require '
    "authorization: server message: insufficient_scope: authorization failed",
    "manifest unknown": 'rpc error: code = Unknown desc = reading manifest in "{image}": manifest unknown: '
    "manifest unknown",
    "timeout": 'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed to '
    'resolve reference "{image}": failed to do request: Head "https://registry.example/v2/grading/'
    'manifests/test": dial tcp 10.0.0.7:443: i/o timeout',
    "server error": 'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed to '
    "copy: httpReadSeeker: failed open: unexpected status code https://registry.example/v2/grading/blobs/"
    "sha256:4f1e: 503 Service Unavailable",
}


class SandboxMode(Enum):
    """How containers are isolated.

    ``BWRAP``: mount/PID/IPC/UTS (+user) namespaces via bubblewrap — mounts are real.
    ``PROCESS``: no isolation. Mount paths cannot exist, so the kubelet rewrites them: ``workingDir``
    and every argument that starts with a ``mountPath`` are translated to the host directory, and
    ``FAKE_KUBE_MOUNTS`` (JSON ``{mountPath: hostPath}``) is added to the environment. The command
    is not PID 1 there, so SIGTERM kills it even without a handler, and nothing hides the host.
    """

    BWRAP = "bwrap"
    PROCESS = "process"


def rfc3339(moment: datetime.datetime | None = None) -> str:
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def bwrap_available() -> bool:
    """True when bubblewrap exists and can build a sandbox here (namespaces allowed)."""
    path = shutil.which("bwrap")
    if not path:
        return False
    import subprocess

    probe = subprocess.run(
        [path, "--unshare-pid", "--unshare-user", "--uid", "1000", "--ro-bind", "/", "/", "true"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


@dataclass
class Node:
    """A node the fake scheduler may place pods on."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def default(cls, name: str = "fake-node", arch: str = "amd64") -> Node:
        return cls(
            name,
            {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch,
            },
        )


class LogBuffer:
    """One container instance's output, line by line with timestamps, as the CRI stores it."""

    def __init__(self) -> None:
        self.entries: list[tuple[datetime.datetime, str, bytes]] = []
        self._partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self.closed = False
        self.changed = asyncio.Event()

    def feed(self, stream: str, data: bytes) -> None:
        now = datetime.datetime.now(datetime.UTC)
        buffer = self._partial[stream] + data
        *lines, rest = buffer.split(b"\n")
        for line in lines:
            self.entries.append((now, stream, line + b"\n"))
        self._partial[stream] = rest
        self._notify()

    def close(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        for stream, rest in self._partial.items():
            if rest:
                self.entries.append((now, stream, rest))
        self._partial = {"stdout": b"", "stderr": b""}
        self.closed = True
        self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def text(self) -> bytes:
        return b"".join(data for _, _, data in self.entries)


@dataclass(eq=False)
class ContainerRuntime:
    """The kubelet's view of one container: its status fields, process and logs."""

    name: str
    image: str
    init: bool
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str | None = None
    log: LogBuffer = field(default_factory=LogBuffer)
    previous_log: LogBuffer | None = None
    process: asyncio.subprocess.Process | None = None
    signal_pid: int | None = None  # the container's command (gets SIGTERM)
    group_pid: int | None = None  # process group of everything started for it (gets SIGKILL)
    oom_killed: bool = False
    image_pulled: bool = False
    status_drain: asyncio.Task[None] | None = None

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": _image_id(self.image) if self.image_pulled else "",
            "started": self.started,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


@dataclass(eq=False)
class PodRuntime:
    key: PodKey
    uid: str
    directory: Path
    containers: dict[str, ContainerRuntime] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    deleting: bool = False
    deadline_exceeded: bool = False
    evicted: bool = False
    done: bool = False
    start_time: datetime.datetime | None = None
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    volumes: dict[str, tuple[Path, bool]] | None = None
    kill_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()


def _image_id(image: str) -> str:
    name = (
        image.split("@", 1)[0].rsplit(":", 1)[0]
        if ":" in image.rsplit("/", 1)[-1]
        else image.split("@", 1)[0]
    )
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in name.split("/", 1)[0] and ":" not in name.split("/", 1)[0]:
        name = f"docker.io/{name}"
    return f"{name}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined vars replaced, ``$$`` escapes, the rest kept."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)


class _ConfigError(Exception):
    """CreateContainerConfigError: the container cannot be started as specified."""


class FakeKubelet:
    """Scheduler and kubelet for every pod of one fake apiserver; runs on the server's loop."""

    def __init__(self, api: FakeKubeAPIServer) -> None:
        self.api = api
        self.pods: dict[PodKey, PodRuntime] = {}
        self._dying: set[PodRuntime] = set()
        self._cluster_changed = asyncio.Event()

    # -- entry points called by the apiserver (on its loop) -----------------------------------
    def pod_created(self, pod: dict[str, Any]) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        directory = self.api.state_dir / "pods" / pod["metadata"]["uid"]
        directory.mkdir(parents=True)
        rt = PodRuntime(key, pod["metadata"]["uid"], directory)
        spec = pod["spec"]
        for c in spec.get("initContainers") or []:
            rt.containers[c["name"]] = ContainerRuntime(c["name"], c["image"], init=True)
        for c in spec["containers"]:
            rt.containers[c["name"]] = ContainerRuntime(c["name"], c["image"], init=False)
        self.pods[key] = rt
        rt.task = asyncio.get_running_loop().create_task(self._lifecycle(rt))

    def cluster_changed(self) -> None:
        """Nodes or PVCs changed: pending pods try to schedule again."""
        self._cluster_changed.set()
        self._cluster_changed = asyncio.Event()

    def delete_requested(self, key: PodKey, grace: float) -> None:
        """A graceful delete: stop the containers; the pod is removed once they are gone."""
        rt = self.pods.get(key)
        if rt is None:
            return
        rt.deleting = True
        if rt.done:
            asyncio.get_running_loop().call_soon(self._finish_delete, rt)
            return
        self._stop(rt, grace)

    def forget(self, key: PodKey) -> None:
        """The pod object is gone (immediate deletion): SIGKILL everything, no status updates.

        The pod's lifecycle task then ends by itself (its processes exit, its pipes close), so
        nothing is left half-open; ``drain()`` waits for that.
        """
        rt = self.pods.pop(key, None)
        if rt is None:
            return
        rt.deleting = True
        rt.stop_event.set()
        for c in rt.containers.values():
            self._signal_group(c, signal.SIGKILL)
        if rt.task and not rt.task.done():
            self._dying.add(rt)

            def gone(_: object, rt: PodRuntime = rt) -> None:
                self._dying.discard(rt)
                shutil.rmtree(rt.directory, ignore_errors=True)

            rt.task.add_done_callback(gone)
        else:
            shutil.rmtree(rt.directory, ignore_errors=True)

    def logs(self, key: PodKey) -> PodRuntime | None:
        return self.pods.get(key)

    async def drain(self, timeout: float = 10) -> None:
        """Wait until forgotten pods' processes are gone and their tasks ended."""
        tasks = [rt.task for rt in self._dying if rt.task]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def shutdown(self) -> None:
        for key in list(self.pods):
            self.forget(key)
        await self.drain()
        for rt in list(self._dying):
            if rt.task:
                rt.task.cancel()

    def running_processes(self) -> int:
        runtimes = [*self.pods.values(), *self._dying]
        return sum(1 for rt in runtimes for c in rt.containers.values() if c.running)

    # -- the pod lifecycle --------------------------------------------------------------------
    async def _lifecycle(self, rt: PodRuntime) -> None:
        try:
            if await self._schedule(rt):
                await self._run_pod(rt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the fake must be loud, not a hanging pod
            self.api.record_internal_error(f"kubelet {rt.key}: {exc!r}")
            raise
        finally:
            rt.done = True
            for c in rt.containers.values():
                self._signal_group(c, signal.SIGKILL)
        if rt.deleting:
            self._finish_delete(rt)

    def _finish_delete(self, rt: PodRuntime) -> None:
        if self.pods.get(rt.key) is rt:
            del self.pods[rt.key]
            shutil.rmtree(rt.directory, ignore_errors=True)
            self.api.finalize_deletion(rt.key, rt.uid)

    async def _sleep(self, rt: PodRuntime, seconds: float) -> bool:
        """Sleep unless the pod is being stopped; True when stopped."""
        if seconds <= 0:
            return rt.stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.stop_event.wait(), seconds)
        return rt.stopping

    def _pod(self, rt: PodRuntime) -> dict[str, Any] | None:
        pod = self.api.pods.get(rt.key)
        if pod is None or pod["metadata"]["uid"] != rt.uid:
            return None
        return pod

    def _set_condition(
        self, rt: PodRuntime, kind: str, status: bool, reason: str | None = None, message: str | None = None
    ) -> None:
        value = "True" if status else "False"
        current = rt.conditions.get(kind)
        condition: dict[str, Any] = {"type": kind, "status": value, "lastProbeTime": None}
        condition["lastTransitionTime"] = (
            current["lastTransitionTime"] if current and current["status"] == value else rfc3339()
        )
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        rt.conditions[kind] = condition

    def _publish(self, rt: PodRuntime, bind_to: str | None = None) -> None:
        """Write the kubelet's view into the pod's status (one MODIFIED event).

        With ``bind_to``, this is the scheduler's binding: ``spec.nodeName`` and ``PodScheduled``
        change in the same write, as through the ``pods/binding`` subresource.
        """
        order = [
            "DisruptionTarget",
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ]

        def mutate(pod: dict[str, Any]) -> None:
            if bind_to:
                pod["spec"]["nodeName"] = bind_to
            status = pod["status"]
            status["phase"] = rt.phase
            status["conditions"] = [rt.conditions[k] for k in order if k in rt.conditions]
            for key, value in (("reason", rt.reason), ("message", rt.message)):
                if value:
                    status[key] = value
                else:
                    status.pop(key, None)
            if rt.start_time:
                status["startTime"] = rfc3339(rt.start_time)
                status["hostIP"] = status["podIP"] = "127.0.0.1"
                status["hostIPs"] = status["podIPs"] = [{"ip": "127.0.0.1"}]
                inits = [c.status() for c in rt.containers.values() if c.init]
                if inits:
                    status["initContainerStatuses"] = inits
                status["containerStatuses"] = [c.status() for c in rt.containers.values() if not c.init]

        self.api.update_pod(rt.key, rt.uid, mutate)

    async def _schedule(self, rt: PodRuntime) -> bool:
        if await self._sleep(rt, self.api.schedule_delay):
            return False
        last_message = None
        while not rt.stopping:
            pod = self._pod(rt)
            if pod is None:
                return False
            node, message = self._pick_node(pod)
            if node is not None:
                self._set_condition(rt, "PodScheduled", True)
                self._publish(rt, bind_to=node)
                return True
            if message != last_message:
                self._set_condition(rt, "PodScheduled", False, "Unschedulable", message)
                self._publish(rt)
                last_message = message
            changed = self._cluster_changed
            waiter = asyncio.ensure_future(changed.wait())
            stopper = asyncio.ensure_future(rt.stop_event.wait())
            try:
                await asyncio.wait({waiter, stopper}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
        return False

    def _pick_node(self, pod: dict[str, Any]) -> tuple[str | None, str]:
        spec = pod["spec"]
        namespace = pod["metadata"]["namespace"]
        for volume in spec.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and self.api.pvc_dir(namespace, claim) is None:
                return None, (
                    f'0/{len(self.api.nodes)} nodes are available: persistentvolumeclaim "{claim}" not found. '
                    f"preemption: 0/{len(self.api.nodes)} nodes are available: "
                    f"{len(self.api.nodes)} Preemption is not helpful for scheduling."
                )
        if spec.get("nodeName"):
            return spec["nodeName"], ""
        reasons: dict[str, int] = {}
        for node in self.api.nodes:
            why = _node_mismatch(spec, node)
            if why is None:
                return node.name, ""
            reasons[why] = reasons.get(why, 0) + 1
        total = len(self.api.nodes)
        parts = "".join(f" {count} {why}." for why, count in sorted(reasons.items()))
        return None, (
            f"0/{total} nodes are available:{parts} preemption: 0/{total} nodes are available: "
            f"{total} Preemption is not helpful for scheduling."
        )

    async def _run_pod(self, rt: PodRuntime) -> None:
        pod = self._pod(rt)
        if pod is None:
            return
        spec = pod["spec"]
        rt.start_time = datetime.datetime.now(datetime.UTC)
        inits = [c for c in rt.containers.values() if c.init]
        mains = [c for c in rt.containers.values() if not c.init]
        self._set_condition(rt, "PodReadyToStartContainers", False)
        if inits:
            self._set_condition(
                rt,
                "Initialized",
                False,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(c.name for c in inits)}]",
            )
        else:
            self._set_condition(rt, "Initialized", True)
        self._set_ready(rt)
        self._publish(rt)
        deadline = asyncio.get_running_loop().create_task(self._watch_deadline(rt))
        storage = asyncio.get_running_loop().create_task(self._enforce_local_storage(rt, spec))
        try:
            rt.volumes = self._prepare_volumes(rt, spec)
            if rt.volumes is None:
                await rt.stop_event.wait()
            elif not await self._sleep(rt, self.api.start_delay):
                self._set_condition(rt, "PodReadyToStartContainers", True)
                self._publish(rt)
                init_ok = True
                for c in inits:
                    code = await self._run_container(rt, c, spec)
                    if code != 0:
                        init_ok = False
                        break
                if init_ok and not rt.stopping:
                    if inits:
                        self._set_condition(rt, "Initialized", True)
                    await asyncio.gather(*(self._run_container(rt, c, spec) for c in mains))
        finally:
            deadline.cancel()
            storage.cancel()
        for task in rt.kill_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finish_status(rt)

    def _finish_status(self, rt: PodRuntime) -> None:
        for c in rt.containers.values():
            c.ready = False
            if "terminated" not in c.state:
                c.state = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                        "startedAt": None,
                        "finishedAt": None,
                    }
                }
        codes = [c.state["terminated"]["exitCode"] for c in rt.containers.values() if not c.init]
        succeeded = (
            not rt.deadline_exceeded
            and not rt.evicted
            and all(code == 0 for code in codes)
            and all(c.state["terminated"]["exitCode"] == 0 for c in rt.containers.values() if c.init)
        )
        rt.phase = "Succeeded" if succeeded else "Failed"
        if rt.deadline_exceeded:
            rt.reason = "DeadlineExceeded"
            rt.message = "Pod was active on the node longer than the specified deadline"
        self._set_condition(rt, "PodReadyToStartContainers", False)
        reason = "PodCompleted" if succeeded else "PodFailed"
        self._set_condition(rt, "Ready", False, reason)
        self._set_condition(rt, "ContainersReady", False, reason)
        self._publish(rt)

    def _set_ready(self, rt: PodRuntime) -> None:
        mains = [c for c in rt.containers.values() if not c.init]
        unready = [c.name for c in mains if not c.ready]
        if unready:
            message = f"containers with unready status: [{' '.join(unready)}]"
            self._set_condition(rt, "Ready", False, "ContainersNotReady", message)
            self._set_condition(rt, "ContainersReady", False, "ContainersNotReady", message)
        else:
            self._set_condition(rt, "Ready", True)
            self._set_condition(rt, "ContainersReady", True)
        if any(c.running or "running" in c.state for c in mains):
            rt.phase = "Running"

    async def _enforce_local_storage(self, rt: PodRuntime, spec: dict[str, Any]) -> None:
        """The eviction manager's local-storage checks, in its order: emptyDirs, then the pod's total."""
        while not rt.stopping:
            await asyncio.sleep(self.api.storage_poll_interval)
            if rt.volumes is None or rt.stopping:
                continue
            message = await asyncio.to_thread(self._storage_violation, rt, spec)
            if message and not rt.stopping:
                rt.evicted = True
                rt.reason, rt.message = "Evicted", message
                self._set_condition(rt, "DisruptionTarget", True, "TerminationByKubelet", message)
                self.api.record_event(rt.key, "Evicted", message)
                self._stop(rt, 1)  # local-storage evictions give the pod one second
                return

    def _storage_violation(self, rt: PodRuntime, spec: dict[str, Any]) -> str | None:
        assert rt.volumes is not None
        used = 0
        for volume in spec.get("volumes") or []:
            empty = volume.get("emptyDir")
            if empty is None or empty.get("medium") == "Memory" or volume["name"] not in rt.volumes:
                continue  # a memory-backed emptyDir counts as the containers' memory
            usage = _disk_usage(rt.volumes[volume["name"]][0])
            limit = empty.get("sizeLimit")
            if limit and usage > parse_quantity(limit):
                return f'Usage of EmptyDir volume "{volume["name"]}" exceeds the limit "{limit}". '
            used += usage
        limits = [
            ((c.get("resources") or {}).get("limits") or {}).get("ephemeral-storage")
            for c in spec["containers"]
        ]
        if limits and all(limits):
            used += sum(len(c.log.text()) for c in rt.containers.values())
            total = sum(parse_quantity(limit) for limit in limits)
            if used > total:
                shown = limits[0] if len(limits) == 1 else str(int(total))
                return f"Pod ephemeral local storage usage exceeds the total limit of containers {shown}. "
        return None

    async def _watch_deadline(self, rt: PodRuntime) -> None:
        """activeDeadlineSeconds counts from startTime and may be lowered while the pod runs."""
        while not rt.stopping:
            await asyncio.sleep(0.05)
            pod = self._pod(rt)
            if pod is None:
                return
            limit = pod["spec"].get("activeDeadlineSeconds")
            if limit and rt.start_time:
                elapsed = (datetime.datetime.now(datetime.UTC) - rt.start_time).total_seconds()
                if elapsed >= limit:
                    rt.deadline_exceeded = True
                    self._stop(rt, pod["spec"].get("terminationGracePeriodSeconds", 30))
                    return

    def _stop(self, rt: PodRuntime, grace: float) -> None:
        rt.stop_event.set()
        rt.kill_tasks.append(asyncio.get_running_loop().create_task(self._kill_containers(rt, grace)))

    async def _kill_containers(self, rt: PodRuntime, grace: float) -> None:
        running = [c for c in rt.containers.values() if c.running]
        for c in running:
            # In a container the command is PID 1, and the kernel drops signals to PID 1 that it
            # has no handler for: SIGTERM only counts if the program handles it.
            pid1 = self.api.sandbox is SandboxMode.BWRAP
            if c.signal_pid and (not pid1 or _handles_signal(c.signal_pid, signal.SIGTERM)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.signal_pid, signal.SIGTERM)
        waits = [asyncio.ensure_future(c.process.wait()) for c in running if c.process]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=max(grace, 0))
            for task in pending:
                task.cancel()
        for c in running:
            self._signal_group(c, signal.SIGKILL)

    @staticmethod
    def _signal_group(c: ContainerRuntime, sig: signal.Signals) -> None:
        if c.group_pid and c.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.group_pid, sig)

    # -- volumes --------------------------------------------------------------------------------
    def _prepare_volumes(self, rt: PodRuntime, spec: dict[str, Any]) -> dict[str, tuple[Path, bool]] | None:
        """Host directory (and read-only flag) per volume; None = a volume cannot be mounted."""
        volumes: dict[str, tuple[Path, bool]] = {}
        namespace, name = rt.key
        for volume in spec.get("volumes") or []:
            vname = volume["name"]
            if "emptyDir" in volume:
                path = rt.directory / "volumes" / vname
                path.mkdir(parents=True)
                path.chmod(0o777)
                volumes[vname] = (path, False)
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]
                path = self.api.pvc_dir(namespace, claim["claimName"])
                if path is None:
                    return self._mount_failed(rt, f'persistentvolumeclaim "{claim["claimName"]}" not found')
                volumes[vname] = (path, bool(claim.get("readOnly")))
            elif "hostPath" in volume:
                path = Path(volume["hostPath"]["path"])
                if volume["hostPath"].get("type") == "DirectoryOrCreate":
                    path.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    return self._mount_failed(rt, f"hostPath type check failed: {path} is not a directory")
                volumes[vname] = (path, False)
            elif "projected" in volume and _is_token_volume(volume["projected"]):
                path = rt.directory / "volumes" / vname
                path.mkdir(parents=True)
                (path / "token").write_text(f"fake-projected-token-for-{namespace}-{name}")
                (path / "namespace").write_text(namespace)
                (path / "ca.crt").write_text(self.api.ca_pem())
                volumes[vname] = (path, True)
            else:
                kind = next((k for k in volume if k != "name"), "unknown")
                return self._mount_failed(rt, f'{kind} volume "{vname}" is not available in the fake cluster')
        return volumes

    def _mount_failed(self, rt: PodRuntime, message: str) -> None:
        # As on a node: FailedMount events, and the containers stay ContainerCreating.
        self.api.record_event(rt.key, "FailedMount", f"MountVolume.SetUp failed: {message}")
        return None

    def _mounts(
        self, rt: PodRuntime, container: dict[str, Any], env: dict[str, str]
    ) -> list[tuple[str, Path, bool]]:
        """(mountPath, host path, read-only) for a container; creates subPath dirs like the kubelet."""
        assert rt.volumes is not None
        mounts = []
        for m in container.get("volumeMounts") or []:
            root, read_only = rt.volumes[m["name"]]
            sub = m.get("subPath") or _expand(m.get("subPathExpr", ""), env)
            host = root
            if sub:
                host = root / sub
                # Checked before creating anything: a symlink in the volume must not lead out of it.
                real_root, real_host = os.path.realpath(root), os.path.realpath(host)
                if real_host != real_root and not real_host.startswith(real_root + os.sep):
                    raise _ConfigError(
                        f'failed to prepare subPath for volumeMount "{m["name"]}" of container "{container["name"]}"'
                    )
                host.mkdir(parents=True, exist_ok=True)
            mounts.append((m["mountPath"], host, read_only or bool(m.get("readOnly"))))
        return sorted(mounts, key=lambda item: item[0].count("/"))

    # -- containers -------------------------------------------------------------------------------
    async def _run_container(self, rt: PodRuntime, c: ContainerRuntime, spec: dict[str, Any]) -> int | None:
        """Run one container to completion, with restarts per restartPolicy; its last exit code."""
        policy = spec.get("restartPolicy", "Always")
        while True:
            code = await self._run_once(rt, c, spec)
            if code is None or rt.stopping:
                return code
            if policy == "Never" or (policy == "OnFailure" and code == 0) or (c.init and code == 0):
                return code
            c.last_state = {"terminated": c.state["terminated"]}
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {self.api.restart_backoff:g}s restarting failed container={c.name} "
                    f"pod={rt.key[1]}_{rt.key[0]}({rt.uid})",
                }
            }
            self._publish(rt)
            if await self._sleep(rt, self.api.restart_backoff):
                return code
            c.restart_count += 1

    def _wait_state(self, rt: PodRuntime, c: ContainerRuntime, reason: str, message: str) -> None:
        c.state = {"waiting": {"reason": reason, "message": message}}
        self._publish(rt)

    async def _pull(self, rt: PodRuntime, c: ContainerRuntime) -> bool:
        """Pull the container's image as the kubelet does; False if the pod stopped first.

        Each failed pull shows the runtime's error (reason ErrImagePull, or RegistryUnavailable /
        SignatureValidationFailed as evalCRIPullErr maps them), then ``ImagePullBackOff`` for the
        back-off, which doubles per failure up to ``image_pull_backoff_max``. Since 1.32 the
        back-off message repeats the error (``backoff_message_has_error``; older kubelets: no).
        """
        backoff = self.api.image_pull_backoff
        attempt = 0
        while (failure := self.api.pull_failure(c.image, attempt)) is not None:
            reason, message = failure
            self.api.record_event(rt.key, "Failed", f'Failed to pull image "{c.image}": {message}')
            self._wait_state(rt, c, reason, message)
            if await self._sleep(rt, self.api.image_pull_backoff):
                return False
            back_off = f'Back-off pulling image "{c.image}"'
            if self.api.backoff_message_has_error:
                back_off += f": {reason}: {message}"
            self.api.record_event(rt.key, "BackOff", back_off)
            self._wait_state(rt, c, "ImagePullBackOff", back_off)
            if await self._sleep(rt, backoff):
                return False
            backoff = min(backoff * 2, self.api.image_pull_backoff_max)
            attempt += 1
        return not rt.stopping

    async def _run_once(self, rt: PodRuntime, c: ContainerRuntime, spec: dict[str, Any]) -> int | None:
        pod = self._pod(rt)
        if pod is None:
            return None
        container = next(
            x for x in (spec.get("initContainers") or []) + spec["containers"] if x["name"] == c.name
        )
        # Image pull.
        if not c.image_pulled:
            if not _IMAGE_REF.match(c.image):
                self._wait_state(
                    rt,
                    c,
                    "InvalidImageName",
                    f'Failed to apply default image tag "{c.image}": couldn\'t parse image name '
                    f'"{c.image}": invalid reference format',
                )
                await rt.stop_event.wait()
                return None
            if not await self._pull(rt, c):
                return None
            c.image_pulled = True
        if rt.stopping:
            return None
        # Container config.
        try:
            env = self._environment(pod, container)
            self._check_user(pod, container)
            mounts = self._mounts(rt, container, env)
            argv = self._argv(container, env)
        except _ConfigError as exc:
            self._wait_state(rt, c, "CreateContainerConfigError", str(exc))
            await rt.stop_event.wait()
            return None
        if c.restart_count or "terminated" in c.last_state:
            c.previous_log, c.log = c.log, LogBuffer()
        c.container_id = "containerd://" + os.urandom(32).hex()
        started = datetime.datetime.now(datetime.UTC)
        termination_log = rt.directory / f"termination-{c.name}-{c.restart_count}"
        termination_log.touch()
        termination_log.chmod(0o666)
        missing = self._missing_executable(argv, mounts, env, container)
        if missing:
            return self._terminated(
                rt,
                c,
                128,
                "StartError",
                started,
                message=(
                    "failed to create containerd task: failed to create shim task: OCI runtime create failed: "
                    "runc create failed: unable to start container process: error during container init: "
                    f'exec: "{missing}": executable file not found in $PATH: unknown'
                ),
            )
        try:
            await self._spawn(rt, c, pod, container, argv, env, mounts, termination_log)
        except _ConfigError as exc:
            return self._terminated(rt, c, 128, "StartError", started, message=str(exc))
        if rt.stopping:  # stopped while starting: nobody will signal this process otherwise
            self._signal_group(c, signal.SIGKILL)
        c.state = {"running": {"startedAt": rfc3339(started)}}
        c.started = c.ready = True
        self._set_ready(rt)
        self._publish(rt)
        assert c.process is not None
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        monitor = (
            asyncio.get_running_loop().create_task(self._enforce_memory(c, int(parse_quantity(limit))))
            if limit
            else None
        )
        readers = [
            asyncio.ensure_future(self._pump(c.process.stdout, c.log, "stdout")),
            asyncio.ensure_future(self._pump(c.process.stderr, c.log, "stderr")),
        ]
        returncode = await c.process.wait()
        self.api.container_exits[rt.key] = time.time()
        # Orphans of PID 1 die with its namespace; without bwrap, end the group like a runtime would.
        if c.group_pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.group_pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*readers), 5)
        c.log.close()
        if monitor:
            monitor.cancel()
        code = returncode if returncode >= 0 else 128 - returncode
        c.ready = False
        if c.oom_killed:
            reason, code = "OOMKilled", 137
        else:
            reason = "Completed" if code == 0 else "Error"
        message = termination_log.read_text(errors="replace")[:4096] or None
        if not message and code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = b"".join(d for _, _, d in c.log.entries[-80:]).decode(errors="replace")[-2048:] or None
        return self._terminated(rt, c, code, reason, started, message=message)

    def _terminated(
        self,
        rt: PodRuntime,
        c: ContainerRuntime,
        code: int,
        reason: str,
        started: datetime.datetime,
        message: str | None = None,
    ) -> int:
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": rfc3339(started),
            "finishedAt": rfc3339(),
            "containerID": c.container_id,
        }
        if message:
            terminated["message"] = message
        c.state = {"terminated": terminated}
        c.ready = False
        c.process = None
        self._set_ready(rt)
        # The last container of a pod that will not restart it: the kubelet writes the terminal
        # phase together with this status (see _finish_status), never "Running" with all exited.
        policy = (self._pod(rt) or {}).get("spec", {}).get("restartPolicy", "Always")
        restarts = policy == "Always" or (policy == "OnFailure" and code != 0)
        others_active = any(
            "terminated" not in o.state for o in rt.containers.values() if not o.init and o is not c
        )
        if c.init or restarts or others_active:
            self._publish(rt)
        return code

    @staticmethod
    async def _pump(stream: asyncio.StreamReader | None, log: LogBuffer, name: str) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            log.feed(name, chunk)

    async def _enforce_memory(self, c: ContainerRuntime, limit: int) -> None:
        """The OOM killer's job: SIGKILL the whole container once its RSS exceeds the limit."""
        page = os.sysconf("SC_PAGE_SIZE")
        while c.running and c.group_pid:
            if _group_rss(c.group_pid, page) > limit:
                c.oom_killed = True
                self._signal_group(c, signal.SIGKILL)
                return
            await asyncio.sleep(self.api.memory_poll_interval)

    # -- container configuration -----------------------------------------------------------------
    def _environment(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        meta = pod["metadata"]
        env: dict[str, str] = dict(self.api.image_env.get(container["image"], self.api.default_image_env))
        env.setdefault("HOME", "/")
        env["HOSTNAME"] = meta["name"][:63]
        env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
        env["KUBERNETES_SERVICE_PORT"] = env["KUBERNETES_SERVICE_PORT_HTTPS"] = str(self.api.port)
        for source in container.get("envFrom") or []:
            ref = source.get("configMapRef") or source.get("secretRef") or {}
            if not ref.get("optional"):
                kind = "configmap" if "configMapRef" in source else "secret"
                raise _ConfigError(f'{kind} "{ref.get("name", "")}" not found')
        for item in container.get("env") or []:
            name = item["name"]
            if "valueFrom" not in item:
                env[name] = _expand(item.get("value", ""), env)
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                env[name] = _field_ref(pod, source["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in source:
                ref = source["resourceFieldRef"]
                kind, _, resource = ref["resource"].partition(".")
                value = ((container.get("resources") or {}).get(kind) or {}).get(resource, "0")
                divisor = parse_quantity(ref.get("divisor", "1"))
                env[name] = str(int(-(-parse_quantity(value) // divisor)))
            else:
                ref = source.get("secretKeyRef") or source.get("configMapKeyRef") or {}
                if ref.get("optional"):
                    continue
                kind = "secret" if "secretKeyRef" in source else "configmap"
                raise _ConfigError(f'{kind} "{ref.get("name", "")}" not found')
        return env

    def _check_user(self, pod: dict[str, Any], container: dict[str, Any]) -> None:
        pod_sc = pod["spec"].get("securityContext") or {}
        sc = container.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser", self.api.image_users.get(container["image"], 0)))
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False))
        if non_root and uid == 0:
            namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            raise _ConfigError(
                f'container has runAsNonRoot and image will run as root (pod: "{name}_{namespace}'
                f'({pod["metadata"]["uid"]})", container: {container["name"]})'
            )

    def _argv(self, container: dict[str, Any], env: dict[str, str]) -> list[str]:
        command = container.get("command")
        if not command:
            command = self.api.image_commands.get(container["image"])
        if not command:
            raise _ConfigError(
                f'no command specified for container "{container["name"]}" and the fake image '
                f'"{container["image"]}" has no entrypoint'
            )
        return [_expand(part, env) for part in list(command) + list(container.get("args") or [])]

    def _missing_executable(
        self,
        argv: list[str],
        mounts: list[tuple[str, Path, bool]],
        env: dict[str, str],
        container: dict[str, Any],
    ) -> str | None:
        program = argv[0]
        if "/" in program:
            path = (
                program
                if program.startswith("/")
                else os.path.join(container.get("workingDir", "/"), program)
            )
            return None if _is_executable(self._host_path(path, mounts)) else program
        for directory in env.get("PATH", "").split(":"):
            if directory and _is_executable(self._host_path(os.path.join(directory, program), mounts)):
                return None
        return program

    def _host_path(self, path: str, mounts: list[tuple[str, Path, bool]]) -> Path | None:
        """Where a path inside the container lives on the host (None: only in the container's tmpfs)."""
        path = os.path.normpath(path)
        if any(path == d or path.startswith(d + "/") for d in self.api.python_dirs()):
            return Path(path)
        for mount_path, host, _ in sorted(mounts, key=lambda m: -len(m[0])):
            if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
                return host / os.path.relpath(path, mount_path)
        top = path.strip("/").split("/", 1)[0]
        if top in self.api.image_dirs():
            return Path(path)
        return None

    # -- processes -------------------------------------------------------------------------------
    async def _spawn(
        self,
        rt: PodRuntime,
        c: ContainerRuntime,
        pod: dict[str, Any],
        container: dict[str, Any],
        argv: list[str],
        env: dict[str, str],
        mounts: list[tuple[str, Path, bool]],
        termination_log: Path,
    ) -> None:
        sc = {**(pod["spec"].get("securityContext") or {}), **(container.get("securityContext") or {})}
        uid = sc.get("runAsUser", self.api.image_users.get(container["image"], 0))
        gid = sc.get("runAsGroup", 0)  # without runAsGroup: the image's group, root here
        workdir = container.get("workingDir") or "/"
        if self.api.sandbox is SandboxMode.PROCESS:
            translated = {m: str(h) for m, h, _ in mounts}
            env = {**env, "FAKE_KUBE_MOUNTS": json.dumps(translated)}
            argv = [self._translate(a, mounts) for a in argv]
            host_workdir = self._host_path(workdir, mounts)
            c.process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=str(host_workdir or "/"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            c.signal_pid = c.group_pid = c.process.pid
            return
        args = [
            self.api.bwrap_path,
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname",
            pod["metadata"]["name"][:63],
        ]
        if uid != 0:
            args += ["--unshare-user", "--uid", str(uid), "--gid", str(gid)]
        args += ["--tmpfs", "/"]
        for name in sorted(self.api.image_dirs()):
            host = Path("/") / name
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), f"/{name}"]
            elif host.is_dir():
                args += ["--ro-bind", str(host), f"/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--dir", "/tmp", "--dir", "/run"]
        for hidden in self.api.hidden_paths():
            if self._host_path(str(hidden), []) is not None and hidden.exists():
                args += ["--tmpfs", str(hidden)]
        for mount_path, host, read_only in mounts:
            args += ["--ro-bind" if read_only else "--bind", str(host), self._through_symlinks(mount_path)]
        # The Python (and the project) may live under a directory the image leaves out, e.g. a CI clone in
        # /tmp: bind exactly those directories, last, so an emptyDir at /tmp does not hide the interpreter.
        for path in self.api.python_dirs():
            args += ["--ro-bind", path, path]
        message_path = container.get("terminationMessagePath") or "/dev/termination-log"
        args += ["--bind", str(termination_log), message_path]
        if workdir != "/" and self._host_path(workdir, mounts) is None:
            args += ["--dir", workdir]
        if sc.get("readOnlyRootFilesystem"):
            args += ["--remount-ro", "/"]
        caps = (sc.get("capabilities") or {}).get("drop") or []
        if uid == 0 and "ALL" in caps:
            args += ["--cap-drop", "ALL"]
        read_fd, write_fd = os.pipe()
        args += ["--chdir", workdir, "--json-status-fd", str(write_fd), "--", *argv]
        try:
            c.process = await asyncio.create_subprocess_exec(
                *args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        c.group_pid = c.process.pid
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        line = (await reader.readline()).decode()
        # Keep draining: bwrap writes the exit code here at the end and must not get SIGPIPE.
        c.status_drain = loop.create_task(_drain_and_close(reader, transport))
        if not line:
            _, stderr = await c.process.communicate()
            c.process = None
            raise _ConfigError(
                "failed to create containerd task: OCI runtime create failed: "
                + stderr.decode(errors="replace").strip()
            )
        c.signal_pid = await _command_pid(json.loads(line)["child-pid"])

    def _through_symlinks(self, path: str) -> str:
        """Resolve symlinks of the image in a mount path (``/var/run`` → ``/run``), as runc does."""
        parts = Path(path).parts[1:]
        resolved = Path("/")
        for i, part in enumerate(parts):
            candidate = resolved / part
            if resolved.parts[1:2] and resolved.parts[1] not in self.api.image_dirs():
                return str(Path(resolved, *parts[i:]))
            if candidate.is_symlink() and (len(candidate.parts) > 2 or part in self.api.image_dirs()):
                target = Path(os.readlink(candidate))
                candidate = Path(os.path.normpath(target if target.is_absolute() else resolved / target))
            resolved = candidate
        return str(resolved)

    @staticmethod
    def _translate(arg: str, mounts: list[tuple[str, Path, bool]]) -> str:
        for mount_path, host, _ in sorted(mounts, key=lambda m: -len(m[0])):
            if arg == mount_path or arg.startswith(mount_path.rstrip("/") + "/"):
                return str(host) + arg[len(mount_path.rstrip("/")) :]
        return arg


async def _command_pid(reaper: int, timeout: float = 5.0) -> int | None:
    """The host PID of the command: the only child of bwrap's PID-1 reaper in the sandbox."""
    deadline = asyncio.get_running_loop().time() + timeout
    children = Path(f"/proc/{reaper}/task/{reaper}/children")
    while asyncio.get_running_loop().time() < deadline:
        # Fast path (kernels with CONFIG_PROC_CHILDREN): scanning all of /proc for every starting
        # container stalls the server's loop when many pods start at once.
        try:
            found = children.read_text().split()
        except FileNotFoundError:
            found = None if children.parent.exists() else []
        except OSError:
            found = []
        if found:
            return int(found[0])
        if found is not None:
            if not os.path.exists(f"/proc/{reaper}"):
                return None
            await asyncio.sleep(0.01)
            continue
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as f:
                        stat = f.read()
                except OSError:
                    continue
                if int(stat[stat.rindex(b")") + 2 :].split()[1]) == reaper:
                    return int(entry.name)
        if not os.path.exists(f"/proc/{reaper}"):
            return None
        await asyncio.sleep(0.01)
    return None


def _handles_signal(pid: int, sig: int) -> bool:
    """Whether ``pid`` installed a handler for ``sig`` (``SigCgt`` in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    except OSError:
        pass
    return False


async def _drain_and_close(reader: asyncio.StreamReader, transport: asyncio.BaseTransport) -> None:
    try:
        await reader.read()
    finally:
        transport.close()


def _is_executable(path: Path | None) -> bool:
    return path is not None and path.is_file() and os.access(path, os.X_OK)


def _is_token_volume(projected: dict[str, Any]) -> bool:
    return any("serviceAccountToken" in s for s in projected.get("sources") or [])


def _disk_usage(root: Path) -> int:
    """Bytes the files under `root` occupy on disk, as `du` counts them."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                total += entry.stat(follow_symlinks=False).st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
            except OSError:
                pass
    return total


def _group_rss(pgid: int, page: int) -> int:
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[2]) != pgid:
                continue
            with open(f"/proc/{entry.name}/statm", "rb") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError):
            continue
    return total


def _field_ref(pod: dict[str, Any], path: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: meta["name"],
        "metadata.namespace": lambda: meta["namespace"],
        "metadata.uid": lambda: meta["uid"],
        "spec.nodeName": lambda: spec.get("nodeName", ""),
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName", ""),
        "status.podIP": lambda: "127.0.0.1",
        "status.hostIP": lambda: "127.0.0.1",
    }
    if path in simple:
        return str(simple[path]())
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    return ""


def _tolerated(taint: dict[str, str], tolerations: list[dict[str, Any]]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t["key"] == taint["key"]:
                return True
        elif t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expression_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels:
        try:
            have, want = int(labels[key]), int(values[0])
        except (ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def _node_mismatch(spec: dict[str, Any], node: Node) -> str | None:
    """Why the scheduler rejects ``node`` for the pod (its wording), or None if it fits."""
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != value:
            return "node(s) didn't match Pod's node affinity/selector"
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(
        all(_expression_matches(e, node.labels) for e in term.get("matchExpressions") or [])
        and all(_expression_matches(e, {"metadata.name": node.name}) for e in term.get("matchFields") or [])
        for term in terms
    ):
        return "node(s) didn't match Pod's node affinity/selector"
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(
            taint, spec.get("tolerations") or []
        ):
            value = f": {taint['value']}" if taint.get("value") else ""
            return f"node(s) had untolerated taint {{{taint['key']}{value}}}"
    return None
