"""KubeAutogradeExecutor: one pod per grading job, the job directory shared through a PVC.

The service's data directory is a PersistentVolumeClaim (mounted in the service at
``data_mount_path``). The scheduler stages ``<data>/jobs/<job id>/{submission,source,output}``
there; the job's pod mounts only that directory (``subPath``) at ``job_mount_path`` and runs
``grader-convert autograde`` on it, so the gradebook appears in the service's data directory
without copying anything. A command assignment's pod runs grader.yaml's stages instead, one
container each (`objects.make_command_pod`); the stages' timeouts are enforced from the watch,
and once the pod has ended each stage's outcome is read from its status and judged by the
pipeline the local executor uses (`autograding/pipeline.py`).

One :class:`~.reflector.PodReflector` watches every grading pod; each job waits on its own pod's
entry, woken by watch events, never polling. A job costs three API requests when all goes well:
create, read the log, delete.

Restart safety rests on the pod's name, derived from the job (``pod_name_for_job``): after a crash
``reconcile`` finds the job's pod and collects or awaits it; a create that meets an existing pod
(409) adopts it when it is this very attempt's pod (our create succeeded but its answer was lost),
and replaces it when it is a leftover of an earlier attempt (the job directory has been staged
afresh since, so that pod's output would be lost or wrong).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import os
import shutil
import time
import uuid
from collections import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from kubernetes.client import V1Pod
from kubernetes.client.rest import ApiException
from traitlets import Bool, Callable, Dict, Float, Integer, List, Unicode, default

from ... import __version__
from ...command import spec as command_spec
from ...states import AssignmentKind
from ..executor import (
    EXIT_DISK_LIMIT,
    EXIT_GRADED,
    MAX_LOG_BYTES,
    WORK_DIR,
    AutogradeExecutor,
    GradingOutcome,
    GradingTask,
    cap_text,
    disk_limit_reason,
    job_paths,
    parse_quantity,
    read_gradebook,
)
from ..pipeline import StageRun, prepare_stage, run_pipeline
from .client import KubeClient, KubeError, PermissionDenied, make_api_client, own_namespace
from .image_pull import PULL_REASONS, pull_error, pull_verdict
from .objects import (
    APP_NAME,
    COMPONENT,
    CONTAINER_NAME,
    LABEL_PREFIX,
    NETWORK_LABEL,
    StageContainer,
    component_selector,
    make_command_pod,
    make_grading_pod,
    make_labels,
    pod_name_for_job,
    stage_container_name,
)
from .reflector import PodReflector, PodState
from .stages import recorded_run, stage_overrun, stage_ran

Pod = dict[str, Any]


class PodResources(TypedDict):
    """A grading pod's requests and limits, as quantities (None: not set)."""

    cpu_request: str | None
    cpu_limit: str | None
    memory_request: str | None
    memory_limit: str | None
    disk_limit: str | None


JOB_LABEL = f"{LABEL_PREFIX}job-id"
ATTEMPT_ANNOTATION = f"{LABEL_PREFIX}attempt"
TERMINAL_PHASES = ("Succeeded", "Failed")
# Waiting reasons that mean "this container is not going to start by itself soon" (image pulls: see
# image_pull.PULL_REASONS).
CONFIG_PROBLEMS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
# Seconds, beyond every deadline the pod has, after which the executor stops waiting for it.
FOLLOW_MARGIN = 60.0


class PodConflict(Exception):
    """A pod with the job's name exists and belongs to something else."""


class KubeAutogradeExecutor(AutogradeExecutor):
    """Grades each job in a Kubernetes pod of its own."""

    name = "kube"
    sandbox = "pod"

    # --- connection -----------------------------------------------------------------------------
    kubeconfig = Unicode(
        help="Kubeconfig file. Default: $KUBECONFIG, else ~/.kube/config. Inside a cluster "
        "(KUBERNETES_SERVICE_HOST set) the pod's service account is used unless this is set.",
    ).tag(config=True)
    context = Unicode(None, allow_none=True, help="Kubeconfig context; None: the current one.").tag(
        config=True
    )
    namespace = Unicode(
        help="Namespace of the grading pods. Default: the service's own namespace in a cluster, else "
        "'default'.",
    ).tag(config=True)
    api_retry_seconds = Float(
        30.0, help="How long transient Kubernetes API errors (5xx, 429, lost connections) are retried."
    ).tag(config=True)

    # --- storage --------------------------------------------------------------------------------
    pvc_name = Unicode("", help="PersistentVolumeClaim holding the service's data directory (required).").tag(
        config=True
    )
    data_mount_path = Unicode(
        help="Where the service itself mounts that claim: its data directory. Job directories below it "
        "are mounted into grading pods by subPath. Default: the service's data_dir.",
    ).tag(config=True)
    job_mount_path = Unicode("/job", help="Where a grading pod sees its job directory.").tag(config=True)

    # --- the pod --------------------------------------------------------------------------------
    image = Unicode(
        f"ghcr.io/grader-service/grading:{__version__}",
        help="Grading image: Python with grader_service and ipykernel. An assignment's 'image' setting "
        "overrides it, and image_for, when set, overrides both.",
    ).tag(config=True)
    image_for = Callable(
        None,
        allow_none=True,
        help="Optional callable image_for(task) -> str | None choosing a job's image (e.g. by lecture); "
        "a falsy result falls back to the assignment's setting, then to image.",
    ).tag(config=True)
    image_pull_policy = Unicode(
        None, allow_none=True, help="imagePullPolicy of grading pods (None: the cluster's default)."
    ).tag(config=True)
    image_pull_secrets = List(Unicode(), help="Names of Secrets to pull the grading image with.").tag(
        config=True
    )
    python = Unicode("python", help="The Python of the grading image that runs grader-convert.").tag(
        config=True
    )
    node_selector = Dict(help="nodeSelector of grading pods.").tag(config=True)
    tolerations = List(Dict(), help="Tolerations of grading pods (API form, camelCase).").tag(config=True)
    affinity = Dict(help="Affinity of grading pods (API form, camelCase).").tag(config=True)
    cpu_request = Float(None, allow_none=True, help="CPU request of a grading pod, in cores.").tag(
        config=True
    )
    cpu_limit = Float(  # type: ignore[assignment]  # unlike a local job, a pod may have no limit (None)
        1.0, allow_none=True, help="Default CPU limit of a grading pod, in cores (None: no limit)."
    ).tag(config=True)
    memory_request = Unicode(
        None, allow_none=True, help="Memory request of a grading pod, a quantity like '256Mi'."
    ).tag(config=True)
    memory_limit = Unicode(  # type: ignore[assignment]  # unlike a local job, a pod may have no limit (None)
        "2Gi", allow_none=True, help="Default memory limit of a grading pod, a quantity like '1Gi'."
    ).tag(config=True)
    run_as_user = Integer(1000, help="uid grading pods run as (never root).").tag(config=True)
    run_as_group = Integer(1000, help="gid grading pods run as.").tag(config=True)
    fs_group = Integer(
        None, allow_none=True, help="fsGroup of grading pods, if the volume needs one to be writable."
    ).tag(config=True)
    service_account_name = Unicode(
        None, allow_none=True, help="ServiceAccount of grading pods. None: no API token in the pod."
    ).tag(config=True)
    extra_pod_config = Dict(
        help="Merged last into every grading pod's spec (camelCase), e.g. {'runtimeClassName': 'gvisor'}."
    ).tag(config=True)
    deadline_grace = Integer(
        30,
        help="activeDeadlineSeconds of a pod is the job's total timeout plus this (the grader stops "
        "itself at its timeout; the cluster kills the pod at the deadline). Image pulls count too.",
    ).tag(config=True)

    # --- behaviour ------------------------------------------------------------------------------
    start_timeout = Integer(
        300,
        help="Seconds a grading pod may take to start (scheduling and image pull included); then the "
        "job fails with the reason (ImagePullBackOff, Unschedulable, ...).",
    ).tag(config=True)
    image_pull_timeout = Integer(
        120,
        help="Seconds a transient image-pull failure (registry timeout, 5xx, rate limit) is waited out "
        "while the kubelet retries the pull; then the attempt fails and the job is queued again, up to "
        "c.Scheduler.max_attempts. Permanent failures (image or tag not found, access denied, invalid "
        "name) fail the job at once, without retries. At most start_timeout.",
    ).tag(config=True)
    keep_failed_pods = Bool(False, help="Keep the pods of failed jobs for debugging.").tag(config=True)
    max_concurrent_pods = Integer(
        4, help="Most grading pods this service process runs at once (jobs beyond wait their turn)."
    ).tag(config=True)
    orphan_min_age = Float(
        60.0,
        help="cleanup_orphans leaves pods younger than this alone: another replica may have created "
        "them for a job it claimed after the live jobs were read.",
    ).tag(config=True)
    watch_timeout = Integer(
        300, help="Seconds each watch request lasts before it is renewed (resuming where it left off)."
    ).tag(config=True)

    @default("kubeconfig")
    def _default_kubeconfig(self) -> str:
        return os.environ.get("KUBECONFIG", "")

    @default("namespace")
    def _default_namespace(self) -> str:
        return own_namespace()

    @default("data_mount_path")
    def _default_data_mount_path(self) -> str:
        data_dir = getattr(self.parent, "data_dir", None)
        return str(Path(data_dir).resolve()) if data_dir else "/srv/grader"

    kube: KubeClient | None = None
    reflector: PodReflector | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.pvc_name:
            raise KubeError("c.KubeAutogradeExecutor.pvc_name is not set: grading pods need the data PVC")
        threads = min(max(self.max_concurrent_pods, 2), 16)
        api_client = await asyncio.to_thread(make_api_client, self.kubeconfig, self.context, threads + 4)
        self.kube = KubeClient(
            api_client, self.namespace, log=self.log, retry_seconds=self.api_retry_seconds, threads=threads
        )
        self.reflector = PodReflector(
            self.kube.core,
            self.namespace,
            component_selector(),
            log=self.log,
            watch_timeout=self.watch_timeout,
        )
        try:
            await self.reflector.start()
        except BaseException:
            self.kube.close()
            raise
        self._slots = asyncio.Semaphore(max(self.max_concurrent_pods, 1))
        self._active: dict[str, str | None] = {}
        self.log.info(
            "Kubernetes executor: namespace %s, image %s, PVC %s (service mount %s, pods mount %s); "
            "%d grading pod(s) found",
            self.namespace,
            self.image,
            self.pvc_name,
            self.data_mount_path,
            self.job_mount_path,
            len(self.reflector.pods),
        )

    async def stop(self) -> None:
        """Delete the pods of jobs interrupted by the shutdown (they go back to the queue)."""
        if self.kube is None or self.reflector is None:
            return
        leftovers = list(self._active.items())
        if leftovers:
            self.log.info("Deleting %d grading pod(s) of interrupted jobs", len(leftovers))
            deletes = asyncio.gather(
                *(self.kube.delete_pod(name, uid) for name, uid in leftovers), return_exceptions=True
            )
            try:
                results = await asyncio.wait_for(deletes, 15)
            except TimeoutError:
                results = [TimeoutError("the Kubernetes API did not answer in time")] * len(leftovers)
            for (name, _), result in zip(leftovers, results, strict=True):
                if isinstance(result, BaseException):
                    self.log.warning("Could not delete grading pod %s: %s", name, result)
        self._active.clear()
        await self.reflector.stop()
        self.kube.close()

    # --- building the pod -----------------------------------------------------------------------

    def runner_name(self, task: GradingTask) -> str:
        return pod_name_for_job(task.commit_hash, task.job_id)

    def image_of(self, task: GradingTask) -> str:
        if self.image_for is not None:
            chosen = self.image_for(task)
            if chosen:
                return str(chosen)
        return str(task.limits.image or self.image)

    def job_subpath(self, task: GradingTask) -> str:
        """The job directory relative to the claim's root, as the pod's subPath."""
        root = Path(self.data_mount_path).resolve()
        job_dir = Path(task.job_dir).resolve()
        try:
            return job_dir.relative_to(root).as_posix()
        except ValueError:
            raise KubeError(
                f"the job directory {job_dir} is not inside data_mount_path {root}, so a grading pod "
                f"cannot see it: set c.KubeAutogradeExecutor.data_mount_path to where PVC {self.pvc_name} "
                "is mounted in the service (its data directory)"
            ) from None

    def grading_command(self, task: GradingTask) -> list[str]:
        """`grader-convert autograde` on the mounted job: the job's copy of the source is gone before
        the first kernel starts, kernels work in the /tmp emptyDir and (Landlock) cannot reach the
        job's volume, which is the service's data volume."""
        options = self.autograde_options(
            task, work_dir=Path(WORK_DIR), remove_source=True, confine_kernels=True
        )
        return options.command(self.python, job_paths(self.job_mount_path))

    def active_deadline(self, task: GradingTask) -> int:
        """The pod's activeDeadlineSeconds: the job's timeout (a command job's: the sum of its stages'
        timeouts, since they run one after the other) plus ``deadline_grace``."""
        if task.kind == AssignmentKind.COMMAND:
            return math.ceil(sum(self.stage_timeouts(task))) + max(self.deadline_grace, 0)
        return math.ceil(task.limits.timeout) + max(self.deadline_grace, 0)

    def resources(
        self, task: GradingTask, cpu: float | str | None = None, memory: str | int | None = None
    ) -> PodResources:
        """Requests and limits; a request above its limit is lowered to it (the API would refuse it).

        ``cpu`` and ``memory`` (a command stage's own limits) replace the job's limits."""
        cpu_limit = cpu if cpu is not None else task.limits.cpu
        memory_limit = memory if memory is not None else task.limits.memory
        cpu_request: float | str | None = self.cpu_request
        memory_request: str | int | None = self.memory_request
        if cpu_limit and cpu_request and cpu_cores(cpu_request) > cpu_cores(cpu_limit):
            cpu_request = cpu_limit
        if memory_limit and memory_request and parse_quantity(memory_request) > parse_quantity(memory_limit):
            memory_request = memory_limit
        disk_limit = task.limits.disk
        return {
            "cpu_request": cpu_quantity(cpu_request) if cpu_request else None,
            "cpu_limit": cpu_quantity(cpu_limit) if cpu_limit else None,
            "memory_request": memory_quantity(memory_request) if memory_request else None,
            "memory_limit": memory_quantity(memory_limit) if memory_limit else None,
            "disk_limit": memory_quantity(disk_limit) if disk_limit else None,
        }

    # --- command assignments --------------------------------------------------------------------

    def read_spec(self, task: GradingTask) -> command_spec.CommandSpec:
        """The job's grader.yaml (staged with its source; `SpecError` if it does not validate)."""
        return command_spec.read(Path(task.job_dir) / "source")

    def stage_timeouts(self, task: GradingTask) -> list[float]:
        return [stage.timeout or task.limits.timeout for stage in self.read_spec(task).stages]

    def pod_network(self, spec: command_spec.CommandSpec) -> bool:
        """Whether a command pod may reach the network: the admin allows it and EVERY stage asks.

        The containers of a pod share one network namespace, so egress is per pod. "Any stage"
        would give the network to stages that did not ask for it, typically the one running the
        student's code; "every stage" never does. A pipeline whose build step needs the network
        should have that in its image instead (or be graded by the local executor, per stage).
        """
        return self.allow_network and all(stage.network for stage in spec.stages)

    def make_command_pod(self, task: GradingTask, annotations: dict[str, str]) -> V1Pod:
        """A command job's pod: grader.yaml's stages as its containers (`objects.make_command_pod`)."""
        spec = self.read_spec(task)
        last = len(spec.stages) - 1
        stages = [
            StageContainer(
                image=stage.image or self.image_of(task),
                command=stage.command,
                resources=self.resources(task, cpu=stage.cpu, memory=stage.memory),
                keep_going=stage.continue_on_failure and index < last,
            )
            for index, stage in enumerate(spec.stages)
        ]
        labels = make_labels(task.lecture, task.assignment, task.submission_id, task.job_id)
        labels[NETWORK_LABEL] = "allowed" if self.pod_network(spec) else "denied"
        return make_command_pod(
            name=self.runner_name(task), namespace=self.namespace, stages=stages, labels=labels,
            annotations=annotations, env={k: str(v) for k, v in self.extra_env.items()},
            job_subpath=self.job_subpath(task), pvc_name=self.pvc_name,
            disk_limit=stages[0].resources.get("disk_limit"),
            active_deadline_seconds=self.active_deadline(task), node_selector=self.node_selector,
            tolerations=self.tolerations, affinity=self.affinity, image_pull_policy=self.image_pull_policy,
            image_pull_secrets=self.image_pull_secrets, service_account_name=self.service_account_name,
            run_as_user=self.run_as_user, run_as_group=self.run_as_group, fs_group=self.fs_group,
            extra_pod_config=self.extra_pod_config,
        )  # fmt: skip

    @staticmethod
    def prepare_stages(task: GradingTask, count: int) -> None:
        """Each stage's empty /job/results on the volume before the pod exists (see `make_command_pod`)."""
        shutil.rmtree(Path(task.job_dir) / "stages", ignore_errors=True)
        for index in range(count):
            prepare_stage(Path(task.job_dir), index)

    async def _collect_command(
        self, task: GradingTask, state: PodState, pod: Pod, timed_out: int | None = None
    ) -> GradingOutcome:
        """A command pod's outcome: each stage judged by the pipeline, as the local executor's are.

        The logs are read first (a stopped pod's go with it); a pod stopped for a stage's timeout is
        deleted and gone before any results are read, so nothing left running can change them.
        """
        try:
            spec = self.read_spec(task)
        except command_spec.SpecError as e:  # the job directory changed under the pod (a restart)
            return GradingOutcome(False, reason=f"Could not grade: {e}")
        logs = {
            index: await self._read_logs(state.name, stage_container_name(index))
            for index in range(len(spec.stages))
            if stage_ran(pod, index)
        }
        if timed_out is not None:
            await self._delete_and_wait(state, pod)
        elif (failure := pod_failure(pod)) is not None:
            return GradingOutcome(False, logs=cap_text("\n".join(logs.values()).encode()), reason=failure[0],
                                  retryable=failure[1])  # fmt: skip
        last = len(spec.stages) - 1

        async def recorded(stage: command_spec.Stage, index: int, timeout: float) -> StageRun:
            output = logs.get(index, "")
            keep_going = stage.continue_on_failure and index < last
            return recorded_run(pod, stage, index, timeout, output, timed_out, keep_going)

        return await run_pipeline(task, recorded, prepared=True)

    async def _delete_and_wait(self, state: PodState, pod: Pod) -> None:
        assert self.kube is not None
        try:
            await self.kube.delete_pod(state.name, state.uid)
        except KubeError as exc:
            self._log_api_error(exc)
            return
        if not await state.wait(lambda s: s.deleted, timeout=self._delete_wait(pod)):
            self.log.warning("Grading pod %s was deleted but is still there", state.name)

    def make_pod(self, task: GradingTask, attempt: str = "") -> V1Pod:
        """The job's pod (pure apart from reading traits); ``attempt`` marks this run's pod."""
        annotations = {
            f"{LABEL_PREFIX}commit": task.commit_hash,
            f"{LABEL_PREFIX}lecture": task.lecture,
            f"{LABEL_PREFIX}assignment": task.assignment,
        }
        if attempt:
            annotations[ATTEMPT_ANNOTATION] = attempt
        if task.kind == AssignmentKind.COMMAND:
            return self.make_command_pod(task, annotations)
        return make_grading_pod(
            name=self.runner_name(task),
            namespace=self.namespace,
            image=self.image_of(task),
            command=self.grading_command(task),
            labels=make_labels(task.lecture, task.assignment, task.submission_id, task.job_id),
            annotations=annotations,
            env={k: str(v) for k, v in self.extra_env.items()},
            job_subpath=self.job_subpath(task),
            pvc_name=self.pvc_name,
            mount_path=self.job_mount_path,
            active_deadline_seconds=self.active_deadline(task),
            node_selector=self.node_selector,
            tolerations=self.tolerations,
            affinity=self.affinity,
            image_pull_policy=self.image_pull_policy,
            image_pull_secrets=self.image_pull_secrets,
            service_account_name=self.service_account_name,
            run_as_user=self.run_as_user,
            run_as_group=self.run_as_group,
            fs_group=self.fs_group,
            extra_pod_config=self.extra_pod_config,
            **self.resources(task),
        )

    # --- running a job --------------------------------------------------------------------------

    async def run(self, task: GradingTask) -> GradingOutcome:
        assert self.kube is not None and self.reflector is not None, "start() was not called"
        async with self._slots:
            return await self._run(task)

    async def _run(self, task: GradingTask) -> GradingOutcome:
        assert self.reflector is not None
        name = self.runner_name(task)
        attempt = uuid.uuid4().hex
        try:
            pod = self.make_pod(task, attempt)
            if task.kind == AssignmentKind.COMMAND:
                await asyncio.to_thread(self.prepare_stages, task, len(self.read_spec(task).stages))
        except (KubeError, ValueError) as exc:  # configuration: retrying cannot help
            message = exc.message if isinstance(exc, KubeError) else str(exc)
            self.log.error("Kubernetes executor: cannot build the grading pod: %s", message)
            return GradingOutcome(False, reason=f"The grading pod could not be built: {message}")
        self._active[name] = None
        self.reflector.track(name)  # before the create: no event of the new pod is missed
        interrupted = True
        try:
            try:
                state = await self._create_or_adopt(task, name, attempt, pod)
            except PodConflict as exc:
                interrupted = False
                return GradingOutcome(False, reason=str(exc))
            except KubeError as exc:
                interrupted = False
                self._log_api_error(exc)
                return GradingOutcome(
                    False, reason=f"The grading pod could not be created: {exc.message}", retryable=True
                )
            self._active[name] = state.uid
            outcome = await self._follow_and_dispose(task, state, started=time.time())
            interrupted = False
            return outcome
        finally:
            # An interrupted run (the service is stopping) leaves its pod to stop() to delete.
            if not interrupted:
                self._active.pop(name, None)
            self.reflector.untrack(name)

    async def _follow_and_dispose(self, task: GradingTask, state: PodState, started: float) -> GradingOutcome:
        """Wait for the pod's outcome, then delete it (or keep it, if failed and so configured)."""
        try:
            outcome = await self._follow(task, state, started=started)
        except KubeError as exc:
            self._log_api_error(exc)
            outcome = GradingOutcome(False, reason=exc.message, retryable=True)
        await self._dispose(state, outcome)
        return outcome

    async def _create_or_adopt(self, task: GradingTask, name: str, attempt: str, pod: V1Pod) -> PodState:
        """Create the pod; on 409 adopt our own, replace a stale one, refuse a stranger's."""
        assert self.kube is not None and self.reflector is not None
        for _ in range(3):
            try:
                created = await self.kube.create_pod(pod)
                return self.reflector.bind(name, created)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            existing = self.reflector.pods.get(name) or await self.kube.get_pod(name)
            if existing is None:
                continue  # gone meanwhile: create again
            verdict = self._ownership(existing, task, attempt)
            if verdict == "ours":
                self.log.info(
                    "Grading pod %s already existed (our create's answer was lost); adopting it", name
                )
                return self.reflector.bind(name, existing)
            if verdict == "foreign":
                labels = existing.get("metadata", {}).get("labels") or {}
                raise PodConflict(
                    f"A pod named {name} already exists in namespace {self.namespace} and is not this job's "
                    f"(its labels: {json.dumps(labels, sort_keys=True)}); delete it or rename it to grade "
                    "this submission"
                )
            self.log.info(
                "Replacing grading pod %s left over from an earlier attempt of job %d", name, task.job_id
            )
            stale = self.reflector.bind(name, existing)
            await self.kube.delete_pod(name, stale.uid)
            if not await stale.wait(lambda s: s.deleted, timeout=self._delete_wait(existing)):
                raise KubeError(f"the leftover pod {name} of an earlier attempt was not deleted in time")
        raise KubeError(f"could not create pod {name}: it kept reappearing")

    def _ownership(self, pod: Pod, task: GradingTask, attempt: str) -> str:
        """'ours' (this attempt's pod), 'stale' (this job's, an earlier attempt) or 'foreign'."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        expected = make_labels(task.lecture, task.assignment, task.submission_id, task.job_id)
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/component", JOB_LABEL):
            if labels.get(key) != expected[key]:
                return "foreign"
        if attempt and (meta.get("annotations") or {}).get(ATTEMPT_ANNOTATION) == attempt:
            return "ours"
        return "stale"

    def _belongs_to(self, pod: Pod, task: GradingTask) -> bool:
        return self._ownership(pod, task, "") != "foreign"

    # --- following a pod ------------------------------------------------------------------------

    async def _follow(self, task: GradingTask, state: PodState, started: float) -> GradingOutcome:
        """Wait (on watch events) until the pod ends, fails to start, or disappears.

        While the container has not started, what it waits for is reported (``report_status``)
        whenever that changes, so instructors see why a submission is still running.
        """
        loop = asyncio.get_running_loop()
        now_wall, now_loop = time.time(), loop.time()
        start_by = now_loop + (started + self.start_timeout - now_wall)
        give_up = start_by + self.active_deadline(task) + FOLLOW_MARGIN
        waiting = _StartWait()
        timeouts = self.stage_timeouts(task) if task.kind == AssignmentKind.COMMAND else None
        while True:
            seen = state.version
            if state.deleted:
                last = state.last_pod or {}
                if _phase(last) in TERMINAL_PHASES:
                    return await self._collect(task, state, last)
                return GradingOutcome(
                    False,
                    reason="The grading pod was deleted before it finished (by an administrator, an "
                    "eviction or a node failure)",
                    retryable=True,
                )
            pod = state.pod or {}
            if _phase(pod) in TERMINAL_PHASES:
                return await self._collect(task, state, pod)
            wake = give_up
            if not _container_started(pod):
                failure = self._start_verdict(task, pod, waiting, loop.time(), start_by)
                if failure is not None:
                    return failure
                problem = start_problem(pod)
                self._report(task, waiting, self._waiting_text(task, problem, pod) if problem else None)
                if waiting.pull_since is not None:
                    wake = min(start_by, waiting.pull_since + self._pull_limit)
                else:
                    wake = start_by
            elif timeouts is not None:
                outcome, stage_wake = await self._watch_stages(task, state, pod, waiting, timeouts)
                if outcome is not None:
                    return outcome
                wake = min(wake, stage_wake)
            else:
                self._report(task, waiting, None)
            if loop.time() >= give_up:
                return GradingOutcome(
                    False,
                    reason=f"The grading pod did not finish within {give_up - now_loop:.0f} s of the "
                    "service waiting for it (no final status from the cluster)",
                    retryable=True,
                )
            await state.wait(_changed_since(seen), timeout=max(wake - loop.time(), 0.0))

    async def _watch_stages(
        self, task: GradingTask, state: PodState, pod: Pod, waiting: _StartWait, timeouts: list[float]
    ) -> tuple[GradingOutcome | None, float]:
        """A running command pod: (its outcome if it must stop now, else when to look again).

        It stops when a stage has run past its timeout, or when a later stage's image cannot be
        pulled: permanently at once, transiently after image_pull_timeout, as for the first stage
        (which `_follow` watches before anything has started). Otherwise the pod's deadline would
        be the first to notice, with a reason that does not name the image.
        """
        loop = asyncio.get_running_loop()
        overrun, left = stage_overrun(pod, timeouts, time.time())
        if overrun is not None:
            return await self._collect_command(task, state, pod, timed_out=overrun), loop.time()
        wake = loop.time() + left
        problem = start_problem(pod)
        if problem is None or problem[0] not in PULL_REASONS:
            waiting.pull_since = None  # each stage's image gets its own image_pull_timeout
            self._report(task, waiting, None)
            return None, wake
        self._report(task, waiting, self._waiting_text(task, problem, pod))
        failure = self._start_verdict(task, pod, waiting, loop.time(), math.inf)
        if failure is None and waiting.pull_since is not None:
            wake = min(wake, waiting.pull_since + self._pull_limit)
        return failure, wake

    def _report(self, task: GradingTask, waiting: _StartWait, text: str | None) -> None:
        if text != waiting.reported:
            waiting.reported = text
            self.report_status(task, text)

    def _start_verdict(
        self, task: GradingTask, pod: Pod, waiting: _StartWait, now: float, start_by: float
    ) -> GradingOutcome | None:
        """The outcome of a pod whose container has not started, if it is time to give up on it.

        Permanent image-pull failures end the job at once; transient ones are waited out (the
        kubelet retries the pull) for image_pull_timeout from the first failure; anything else
        that keeps the container from starting, for start_timeout.
        """
        problem = start_problem(pod)
        if problem is not None and problem[0] in PULL_REASONS:
            reason, message = problem
            error = pull_error(reason, message, waiting.last_pull_error)
            waiting.last_pull_error = error
            if pull_verdict(reason, error) == "permanent":
                return self._pull_failure(task, reason, error, permanent=True, pod=pod)
            waiting.pull_since = waiting.pull_since if waiting.pull_since is not None else now
            if now >= min(waiting.pull_since + self._pull_limit, start_by):
                return self._pull_failure(task, reason, error, permanent=False, pod=pod)
            return None
        if now < start_by:
            return None
        return self._start_failure(task, problem or ("NotStarted", _pending_reason(pod)))

    @property
    def _pull_limit(self) -> float:
        return float(min(self.image_pull_timeout, self.start_timeout))

    def _image(self, task: GradingTask, pod: Pod | None) -> str:
        """The image the pod waits for: its current container's (a command stage has its own)."""
        name = (_current_status(pod or {}) or {}).get("name")
        spec = (pod or {}).get("spec") or {}
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            if name and container.get("name") == name and container.get("image"):
                return str(container["image"])  # as written (a status may show it normalised)
        return self.image_of(task)

    def _waiting_text(self, task: GradingTask, problem: tuple[str, str], pod: Pod | None = None) -> str:
        """What a job whose pod has not started waits for, as instructors see it in its status."""
        reason, message = problem
        if reason in PULL_REASONS:
            return (
                f"Waiting for the grading image {self._image(task, pod)!r} ({reason}: {message}); the kubelet "
                f"retries the pull, the job gives up after {self._pull_limit:.0f} s"
            )
        if reason == "Unschedulable":
            return f"Waiting for a node to run the grading pod (Unschedulable: {message})"
        return f"Waiting for the grading container to start ({reason}: {message})"

    def _pull_failure(
        self, task: GradingTask, reason: str, error: str, permanent: bool, pod: Pod | None = None
    ) -> GradingOutcome:
        image = self._image(task, pod)
        if reason == "InvalidImageName":
            text = f"The grading image {image!r} is not a valid image name (InvalidImageName: {error})"
        elif permanent:
            text = (
                f"The grading image {image!r} cannot be pulled ({reason}: {error}). Not retried: correct the "
                "image name, tag or pull secret (the assignment's 'image' setting, or the executor's image "
                "and image_pull_secrets), then regrade"
            )
        else:
            text = f"The grading image {image!r} could not be pulled within {self._pull_limit:.0f} s ({reason}: {error})"
        # A registry outage may pass: the scheduler tries the job again, at most max_attempts times.
        return GradingOutcome(False, reason=text, retryable=not permanent)

    def _start_failure(self, task: GradingTask, problem: tuple[str, str]) -> GradingOutcome:
        reason, message = problem
        waited = f"within {self.start_timeout} s"
        if reason == "Unschedulable":
            text = f"The grading pod could not be scheduled {waited} (Unschedulable: {message})"
        elif reason in CONFIG_PROBLEMS:
            text = f"The grading container could not be created {waited} ({reason}: {message})"
        else:
            text = f"The grading pod did not start {waited} ({message})"
        # A malformed container config will not fix itself; the rest may (the cluster scaling up).
        return GradingOutcome(False, reason=text, retryable=reason != "CreateContainerConfigError")

    async def _collect(self, task: GradingTask, state: PodState, pod: Pod) -> GradingOutcome:
        """The outcome of a pod that ended: its exit, its log, and the gradebook on the PVC."""
        if task.kind == AssignmentKind.COMMAND:
            return await self._collect_command(task, state, pod)
        status = pod.get("status") or {}
        container = _container_status(pod)
        terminated = ((container or {}).get("state") or {}).get("terminated") or {}
        code = terminated.get("exitCode")
        runner_seconds = _seconds_between(terminated.get("startedAt"), terminated.get("finishedAt"))
        reading = asyncio.ensure_future(asyncio.to_thread(read_gradebook, Path(task.job_dir) / "output"))
        logs = ""
        if terminated.get("startedAt") or (container or {}).get("containerID"):
            logs = await self._read_logs(state.name)
        gradebook = await reading
        if _phase(pod) == "Succeeded" and code == EXIT_GRADED and gradebook is not None:
            return GradingOutcome(
                True, gradebook=gradebook, logs=logs, exit_code=0, runner_seconds=runner_seconds
            )

        retryable = False
        failure = pod_failure(pod)
        if failure is not None and status.get("reason") == "DeadlineExceeded":
            reason, retryable = failure
        elif terminated.get("reason") == "OOMKilled":
            reason = f"The grading pod ran out of memory (OOMKilled, limit {_memory_limit(pod)})"
        elif failure is not None:
            reason, retryable = failure
        elif code == EXIT_DISK_LIMIT:
            reason = disk_limit_reason(_disk_limit(pod))
        elif not terminated:
            why = status.get("reason") or _pending_reason(pod)
            reason = f"The grading pod failed before its container ran ({why})"
            retryable = True
        elif terminated.get("reason") in ("StartError", "ContainerCannotRun"):
            message = (terminated.get("message") or "").strip()
            reason = f"The grading container could not start (exit code {code}: {message[:500]})"
        elif code == EXIT_GRADED:
            reason = "The grading pod exited with code 0 but wrote no gradebook"
        else:
            last = last_log_line(logs)
            reason = (
                f"The grading pod exited with code {code}: {last}"
                if last
                else f"The grading pod exited with code {code}"
            )
            # Killed by a signal other than the OOM killer (node shutdown, ...): worth another try.
            retryable = code is not None and code > 128
        return GradingOutcome(
            False,
            gradebook=gradebook,
            logs=logs,
            reason=reason,
            exit_code=code,
            runner_seconds=runner_seconds,
            retryable=retryable,
        )

    async def _read_logs(self, name: str, container: str = CONTAINER_NAME) -> str:
        """The container's log, at most MAX_LOG_BYTES: its head, and its tail if it is longer."""
        assert self.kube is not None
        keep_tail = (3 * MAX_LOG_BYTES) // 4
        try:
            head = await self.kube.read_log(name, container, limit_bytes=MAX_LOG_BYTES)
            if len(head) < MAX_LOG_BYTES:
                return cap_text(head)
            # The API can only cut a log by lines from the end (tailLines) and by bytes from the
            # start of that (limitBytes): guess how many lines fit from the head's average line,
            # and ask for fewer if the guess was too generous.
            lines = max(1, int(keep_tail / (len(head) / max(head.count(b"\n"), 1))))
            for _ in range(4):
                tail = await self.kube.read_log(name, container, limit_bytes=MAX_LOG_BYTES, tail_lines=lines)
                if len(tail) < MAX_LOG_BYTES or lines == 1:
                    break
                lines = max(1, lines // 4)
        except KubeError as exc:
            self._log_api_error(exc)
            return f"[the grading pod's log could not be read: {exc.message}]"
        return (
            head[: MAX_LOG_BYTES // 4].decode(errors="replace")
            + "\n[... log truncated ...]\n"
            + tail[-keep_tail:].decode(errors="replace")
        )

    async def _dispose(self, state: PodState, outcome: GradingOutcome) -> None:
        """Delete the pod and wait until it is gone, or keep it when it failed and that is wanted."""
        assert self.kube is not None
        pod = state.pod or state.last_pod or {}
        if state.deleted:
            return
        if self.keep_failed_pods and not outcome.graded and _phase(pod) in TERMINAL_PHASES:
            self.log.info("Keeping failed grading pod %s (keep_failed_pods)", state.name)
            return
        try:
            deleted = await self.kube.delete_pod(state.name, state.uid)
        except KubeError as exc:
            self._log_api_error(exc)
            self.log.warning("Grading pod %s is left behind: delete it yourself", state.name)
            return
        if deleted and not await state.wait(lambda s: s.deleted, timeout=self._delete_wait(pod)):
            self.log.warning("Grading pod %s was deleted but is still there", state.name)

    def _delete_wait(self, pod: Pod) -> float:
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30
        return float(grace) + 30.0

    def _log_api_error(self, exc: KubeError) -> None:
        if isinstance(exc, PermissionDenied):
            self.log.error("Kubernetes executor: %s", exc.message)
        else:
            self.log.warning("Kubernetes executor: %s", exc.message)

    # --- restarts -------------------------------------------------------------------------------

    async def reconcile(self, task: GradingTask, runner_name: str | None) -> GradingOutcome | None:
        """The outcome of the job's pod from before a restart: collected, awaited, or None (re-run)."""
        assert self.kube is not None and self.reflector is not None, "start() was not called"
        name = runner_name or self.runner_name(task)
        pod = self.reflector.pods.get(name)
        if pod is None:
            return None
        if not self._belongs_to(pod, task):
            self.log.warning("Pod %s is not job %d's; the job is queued again", name, task.job_id)
            return None
        if (pod.get("metadata") or {}).get("deletionTimestamp") and _phase(pod) not in TERMINAL_PHASES:
            return None  # being deleted: it will not finish
        self.log.info("Adopting grading pod %s of job %d (%s)", name, task.job_id, _phase(pod))
        state = self.reflector.track(name)
        self._active[name] = state.uid
        interrupted = True
        try:
            created = _parse_time((pod.get("metadata") or {}).get("creationTimestamp")) or time.time()
            outcome = await self._follow_and_dispose(task, state, started=created)
            interrupted = False
            return outcome
        finally:
            if not interrupted:
                self._active.pop(name, None)
            self.reflector.untrack(name)

    async def cleanup_orphans(self, live_job_ids: set[int]) -> list[str]:
        """Delete grading pods whose job is not running any more (the scheduler knows which are).

        Pods of jobs in ``live_job_ids``, pods this process follows, pods younger than
        ``orphan_min_age`` and, with ``keep_failed_pods``, finished pods are left alone.
        """
        assert self.kube is not None and self.reflector is not None, "start() was not called"
        now = time.time()
        orphans = []
        for name, pod in list(self.reflector.pods.items()):
            meta = pod.get("metadata") or {}
            labels = meta.get("labels") or {}
            if (
                labels.get("app.kubernetes.io/name") != APP_NAME
                or labels.get("app.kubernetes.io/component") != COMPONENT
            ):
                continue
            try:
                job_id = int(labels.get(JOB_LABEL, ""))
            except ValueError:
                continue
            if job_id in live_job_ids or name in self._active or meta.get("deletionTimestamp"):
                continue
            if self.keep_failed_pods and _phase(pod) in TERMINAL_PHASES:
                continue
            created = _parse_time(meta.get("creationTimestamp"))
            if created is not None and now - created < self.orphan_min_age:
                continue
            orphans.append((name, meta.get("uid")))
        for name, uid in orphans:
            self.log.info("Deleting orphaned grading pod %s (its job is not running)", name)
            try:
                await self.kube.delete_pod(name, uid)
            except KubeError as exc:
                self._log_api_error(exc)
        return [name for name, _ in orphans]


# --- reading pods (plain functions of the pod's JSON) ------------------------------------------


def _phase(pod: Pod) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _container_status(pod: Pod) -> dict[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER_NAME:
            return status
    return statuses[0] if statuses else None


def _current_status(pod: Pod) -> dict[str, Any] | None:
    """The container the pod is at: its first init container that has not ended, else its main one."""
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if "terminated" not in (status.get("state") or {}):
            return status
    return _container_status(pod)


def _container_started(pod: Pod) -> bool:
    """Whether a container of the pod has started (a command pod's first stage counts)."""
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    for status in [*statuses, _container_status(pod) or {}]:
        state = status.get("state") or {}
        if "running" in state or "terminated" in state:
            return True
    return False


def pod_failure(pod: Pod) -> tuple[str, bool] | None:
    """(reason, retryable) when the cluster ended the pod: its deadline, or an eviction."""
    status = pod.get("status") or {}
    if status.get("reason") == "DeadlineExceeded":
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        return f"The grading pod exceeded its time limit of {deadline} s (DeadlineExceeded)", False
    if status.get("reason") == "Evicted" and _storage_eviction(status.get("message") or ""):
        detail = f"Kubernetes evicted the pod: {(status.get('message') or '').strip()}"
        return disk_limit_reason(_disk_limit(pod), detail), False
    if status.get("reason") == "Evicted":
        return f"The grading pod was evicted from its node ({status.get('message') or 'no message'})", True
    return None


@dataclass
class _StartWait:
    """What following a pod remembers while its container has not started."""

    reported: str | None = None  # the waiting text last reported as the job's status
    last_pull_error: str | None = None  # the runtime's last pull error (older kubelets omit it later)
    pull_since: float | None = None  # loop time of the first failed pull


def start_problem(pod: Pod) -> tuple[str, str] | None:
    """(reason, message) when a pod is stuck before its container starts, else None."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        unscheduled = condition.get("type") == "PodScheduled" and condition.get("status") == "False"
        if unscheduled and condition.get("reason") == "Unschedulable":
            return "Unschedulable", condition.get("message") or "no node fits"
    waiting = ((_current_status(pod) or {}).get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    if reason in PULL_REASONS or reason in CONFIG_PROBLEMS:
        return reason, waiting.get("message") or reason
    return None


def _pending_reason(pod: Pod) -> str:
    waiting = ((_current_status(pod) or {}).get("state") or {}).get("waiting") or {}
    if waiting.get("reason"):
        message = waiting.get("message")
        return f"{waiting['reason']}: {message}" if message else waiting["reason"]
    return f"phase {_phase(pod) or 'unknown'}"


def _limit(pod: Pod, resource: str) -> str:
    """The grading container's limit (a command pod's main container: every stage has the disk limit)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    for container in containers:
        if container.get("name") == CONTAINER_NAME or len(containers) == 1:
            limit = ((container.get("resources") or {}).get("limits") or {}).get(resource)
            return str(limit) if limit else "none"
    return "unknown"


def _memory_limit(pod: Pod) -> str:
    return _limit(pod, "memory")


def _disk_limit(pod: Pod) -> str:
    return _limit(pod, "ephemeral-storage")


def _storage_eviction(message: str) -> bool:
    """An eviction for what the pod wrote: its ephemeral-storage limit or an emptyDir's sizeLimit.

    The kubelet's messages: "Pod ephemeral local storage usage exceeds the total limit of
    containers ...", "Container ... exceeded its local ephemeral storage limit ...", "Usage of
    EmptyDir volume ... exceeds the limit ...". (Node-pressure evictions name the node instead.)
    """
    return "ephemeral local storage" in message or "Usage of EmptyDir volume" in message


def last_log_line(logs: str) -> str:
    """The last meaningful line: the error of grader-convert's JSON summary, else the last text line."""
    for line in reversed(logs.strip().splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            summary = json.loads(line)
        except ValueError:
            return line[:500]
        if isinstance(summary, dict):
            if summary.get("error"):
                return f"could not grade: {summary['error']}"[:500]
            continue  # a summary without an error says nothing about the failure
        return line[:500]
    return ""


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _seconds_between(start: str | None, end: str | None) -> float:
    begin, finish = _parse_time(start), _parse_time(end)
    if begin is None or finish is None:
        return 0.0
    return max(finish - begin, 0.0)


def cpu_quantity(cores: float | str) -> str:
    """Cores as a Kubernetes CPU quantity: 1.0 → '1', 0.25 → '250m'."""
    if isinstance(cores, str):
        return cores
    millis = round(float(cores) * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def cpu_cores(value: float | str) -> float:
    """Cores from a number or a CPU quantity: '500m' → 0.5, '2' → 2.0."""
    if isinstance(value, str) and value.strip().endswith("m"):
        return float(value.strip()[:-1]) / 1000
    return float(value)


def memory_quantity(value: str | int | float) -> str:
    """A memory quantity as the API takes it: strings as given, numbers as bytes."""
    return value.strip() if isinstance(value, str) else str(int(value))


__all__ = ["KubeAutogradeExecutor", "PodConflict", "cpu_quantity", "last_log_line", "memory_quantity"]


def _changed_since(version: int) -> abc.Callable[[PodState], bool]:
    """Whether the pod's state has changed since it was at `version`."""
    return lambda state: state.version != version
