"""A command pod's stages, read back from the pod's status (pure functions of the pod's JSON).

The pod runs grader.yaml's stages as its containers (`objects.make_command_pod`); the pipeline
(`autograding/pipeline.py`) decides what they mean, as for the local executor. What this module
gives it is, per stage, what the container did: its exit code (from the termination message for a
wrapped `continue_on_failure` stage), its time, and whether it ran at all. It also finds a stage
that has run longer than its timeout, which the executor enforces itself: the kubelet has no
per-container time limit, and a stage's image (gcc:14, say) need not have a ``timeout`` binary.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

from ...command import spec as command_spec
from ..pipeline import StageFailed, StageRun
from .objects import EXIT_MARK, stage_container_name

Pod = dict[str, Any]

_EXIT_MESSAGE = re.compile(rf"^{EXIT_MARK} (\d{{1,3}})\s*$")


def stage_status(pod: Pod, index: int) -> dict[str, Any] | None:
    """The status of stage ``index``'s container (an init container, or the main one for the last)."""
    status = pod.get("status") or {}
    name = stage_container_name(index)
    for item in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if item.get("name") == name:
            return item
    return None


def _time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def stage_overrun(pod: Pod, timeouts: list[float], now: float) -> tuple[int | None, float]:
    """(index of a running stage past its timeout, or None; seconds until the next one may be).

    Counted from the container's ``startedAt``, so an image pull before the stage does not count
    against it (the pod's ``activeDeadlineSeconds`` bounds those).
    """
    wait = math.inf
    for index, timeout in enumerate(timeouts):
        running = ((stage_status(pod, index) or {}).get("state") or {}).get("running") or {}
        started = _time(running.get("startedAt"))
        if started is None:
            continue
        left = started + timeout - now
        if left <= 0:
            return index, 0.0
        wait = min(wait, left)
    return None, wait


def recorded_run(
    pod: Pod,
    stage: command_spec.Stage,
    index: int,
    timeout: float,
    output: str,
    timed_out: int | None,
    keep_going: bool,
) -> StageRun:
    """What stage ``index`` did in the ended pod; `StageFailed` if it did not run to an exit code.

    ``timed_out``: the stage the executor stopped the pod for (the stages after it never ran).
    ``keep_going``: its command was wrapped (`objects.keep_going_command`), so its exit code is in
    the termination message and the container's own code is the wrapper's 0.
    """
    if timed_out == index:
        return StageRun(None, output, timed_out=True, seconds=timeout)
    if timed_out is not None and index > timed_out:
        raise StageFailed(
            f"Stage {stage.name!r} did not run: stage {timed_out} timed out and the pod was stopped "
            "(on Kubernetes a timed-out stage ends the grading, even with continue_on_failure)"
        )
    state = (stage_status(pod, index) or {}).get("state") or {}
    terminated = state.get("terminated") or {}
    if not terminated.get("startedAt"):
        waiting = (state.get("waiting") or {}).get("reason")
        why = waiting or terminated.get("reason") or "the pod ended before it"
        raise StageFailed(f"Stage {stage.name!r} did not run ({why})")
    reason = terminated.get("reason")
    if reason == "OOMKilled":
        limit = stage_limit(pod, index, "memory")
        raise StageFailed(f"Stage {stage.name!r} ran out of memory (OOMKilled, limit {limit})")
    if reason in ("StartError", "ContainerCannotRun"):
        message = (terminated.get("message") or "").strip()[:500]
        raise StageFailed(f"Stage {stage.name!r} could not start: {message}")
    code = terminated.get("exitCode")
    if keep_going and code == 0:
        match = _EXIT_MESSAGE.match(terminated.get("message") or "")
        code = int(match.group(1)) if match else None
    started, finished = _time(terminated.get("startedAt")), _time(terminated.get("finishedAt"))
    seconds = max(finished - started, 0.0) if started is not None and finished is not None else 0.0
    return StageRun(code, output, seconds=seconds)


def stage_limit(pod: Pod, index: int, resource: str) -> str:
    """A stage container's limit of ``resource`` as in the pod's spec ("none" if it has none)."""
    spec = pod.get("spec") or {}
    name = stage_container_name(index)
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if container.get("name") == name:
            limit = ((container.get("resources") or {}).get("limits") or {}).get(resource)
            return str(limit) if limit else "none"
    return "unknown"


def stage_ran(pod: Pod, index: int) -> bool:
    """Whether the stage's container was started (so it has a log to read)."""
    status = stage_status(pod, index) or {}
    state = status.get("state") or {}
    return (
        bool(status.get("containerID"))
        or "running" in state
        or bool((state.get("terminated") or {}).get("startedAt"))
    )
