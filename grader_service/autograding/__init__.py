"""Grading: the durable queue, its workers, the executor interface, local and Kubernetes executors."""

# Short names accepted by `c.GraderService.executor_class`.
EXECUTOR_ALIASES = {
    "local": "grader_service.autograding.local.LocalAutogradeExecutor",
    "kube": "grader_service.autograding.kube.executor.KubeAutogradeExecutor",
}
