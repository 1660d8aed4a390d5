"""The reflector's cache rules, fed events directly (no apiserver): ordering, uids, re-lists."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from grader_service.autograding.kube.reflector import PodReflector, PodState, is_newer


def pod(name: str, rv: int, uid: str = "u1", phase: str = "Pending") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": uid, "resourceVersion": str(rv)},
        "status": {"phase": phase},
    }


def reflector() -> PodReflector:
    return PodReflector(None, "ns", "a=b", log=logging.getLogger("test.reflector"))  # type: ignore[arg-type]


def test_resource_versions_compare_as_numbers() -> None:
    assert is_newer("10", "9") and not is_newer("9", "10") and not is_newer("5", "5")
    assert is_newer("5", None) and is_newer("opaque", "7")


def test_events_overtaking_the_create_answer_are_kept() -> None:
    r = reflector()
    r.track("p")
    r._apply_events([("ADDED", pod("p", 11)), ("MODIFIED", pod("p", 12, phase="Running"))])
    state = r.bind("p", pod("p", 10))  # the create's answer, older than what the watch said
    assert state.pod is not None and state.pod["status"]["phase"] == "Running"
    r._apply_events([("MODIFIED", pod("p", 11, phase="Pending"))])  # a stale copy is ignored
    assert state.pod["status"]["phase"] == "Running"


def test_a_new_pod_of_the_same_name_is_not_confused_with_ours() -> None:
    r = reflector()
    r._apply_events([("ADDED", pod("p", 5, uid="old"))])
    state = r.track("p")
    assert state.uid == "old"
    r._apply_events([("DELETED", pod("p", 6, uid="old"))])
    assert state.deleted
    state = r.bind("p", pod("p", 7, uid="new"))  # our create, after the leftover went
    assert not state.deleted and state.uid == "new"
    r._apply_events([("DELETED", pod("p", 8, uid="other"))])  # not ours
    assert not state.deleted
    r._apply_events([("MODIFIED", pod("p", 9, uid="new", phase="Succeeded"))])
    assert state.pod is not None and state.pod["status"]["phase"] == "Succeeded"


def test_a_relist_reports_pods_gone_while_nobody_watched() -> None:
    r = reflector()
    r._apply_events([("ADDED", pod("a", 5)), ("ADDED", pod("b", 6, uid="u2"))])
    a, b, c = r.track("a"), r.track("b"), r.track("c")
    c.bind(pod("c", 20, uid="u3"))  # created after the list below was taken
    r._apply_list([pod("b", 9, uid="u2", phase="Succeeded")], "10")
    assert a.deleted and a.last_pod is not None  # gone: reported, with its last state
    assert not b.deleted and b.pod is not None and b.pod["status"]["phase"] == "Succeeded"
    assert not c.deleted  # younger than the list: its absence means nothing
    assert set(r.pods) == {"b"}


def test_waiters_wake_on_change_and_time_out() -> None:
    async def scenario() -> None:
        state = PodState("p")
        assert not await state.wait(lambda s: s.pod is not None, timeout=0.05)
        waiter = asyncio.create_task(state.wait(lambda s: s.deleted, timeout=5))
        await asyncio.sleep(0)
        state.update(pod("p", 1))
        await asyncio.sleep(0)
        assert not waiter.done()  # changed, but not yet what it waits for
        state.mark_deleted()
        assert await waiter

    asyncio.run(scenario())
