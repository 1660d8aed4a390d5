"""The Kubernetes executor refuses command assignments with a clear reason (their stages are not
built as pods yet), rather than grading them as notebooks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from grader_service.autograding.executor import GradingTask
from grader_service.autograding.kube.executor import COMMAND_REFUSED, KubeAutogradeExecutor


def test_a_command_grading_fails_with_the_reason(tmp_path: Path) -> None:
    task = GradingTask(1, 1, "c0ffee", "ml", "cmd", "stu", tmp_path, kind="command")

    outcome = asyncio.run(KubeAutogradeExecutor().run(task))

    assert not outcome.graded and not outcome.retryable
    assert outcome.reason == COMMAND_REFUSED and "Kubernetes executor" in outcome.reason
