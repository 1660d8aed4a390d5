"""The Helm chart, rendered by a real helm over a matrix of values.

Each values set is rendered once (module fixtures, in parallel); every check reads those renders.
All renders are validated with `kubernetes-validate --strict` against each Kubernetes version
the chart supports.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from grader_service.autograding.kube.objects import make_egress_policy

from . import chart
from .chart import CHART_DIR, NAMESPACE, RELEASE, find, one

FULLNAME = f"{RELEASE}-grader-service"
SUPPORTED_KUBE_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
PG_URL = "postgresql+psycopg://grader:s3cr3t-pw@postgres.db:5432/grader"

MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "postgres-3-replicas": {
        "replicas": 3,
        "database": {"type": "postgresql", "url": PG_URL},
    },
    "ingress-standalone": {
        "config": {"authenticator": "token", "baseUrl": "/grader/"},
        "ingress": {
            "enabled": True,
            "className": "traefik",
            "host": "grader.example.org",
            "annotations": {"traefik.ingress.kubernetes.io/router.tls": "true"},
            "tls": [{"secretName": "grader-tls", "hosts": ["grader.example.org"]}],
        },
    },
    "arm": {
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "tolerations": [{"key": "arch", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}],
        "grading": {
            "nodeSelector": {"kubernetes.io/arch": "arm", "node-role/grading": "true"},
            "tolerations": [{"key": "grading", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 50,
                            "preference": {
                                "matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]
                            },
                        }
                    ]
                }
            },
            "imagePullSecrets": ["regcred"],
            "resources": {
                "requests": {"cpu": "500m", "memory": "300Mi"},
                "limits": {"cpu": 2, "memory": "2Gi"},
            },
            "startTimeout": 600,
            "allowNetwork": True,
            "imagePullTimeout": 90,
            "keepFailedPods": True,
            "maxConcurrentPods": 2,
            "serviceAccountName": "grading",
            # exercises the Python-literal renderer: nesting, bools, null, floats, quotes, unicode
            "extraPodConfig": {
                "runtimeClassName": "gvisor",
                "automountServiceAccountToken": False,
                "enableServiceLinks": None,
                "priority": 10,
                "ratio": 0.25,
                "annotations": {'quote"d': "back\\slash 'single' ünïcode"},
                "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]},
            },
        },
        "persistence": {"storageClass": "longhorn", "size": "20Gi"},
    },
    "existing-secret": {
        "database": {"type": "postgresql"},
        "existingSecret": {
            "name": "hub",
            "apiTokenKey": "hub.services.grader.apiToken",
            "dbUrlKey": "grader-db-url",
        },
        "persistence": {"existingClaim": "grader-nfs"},
    },
    "metrics-3-replicas": {
        "replicas": 3,
        "database": {"type": "postgresql", "url": PG_URL},
        "podAntiAffinity": "hard",
        "metrics": {
            "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kps"}},
            "allowedFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ],
        },
    },
    "local-executor": {
        "config": {"executor": "local", "logLevel": "DEBUG", "logFormat": "json", "concurrency": 1},
        "persistence": {"accessMode": "ReadWriteOnce", "storageClass": "-"},
        "extraConfig": "c.Scheduler.concurrency = 3\nc.Foo.bar = {'x': [1, 2]}\n",
    },
}

# Every trait the chart must render in kube mode (from the service's config contract).
GRADER_SERVICE_TRAITS = [
    "ip",
    "port",
    "base_url",
    "data_dir",
    "db_url",
    "upgrade_db",
    "authenticator_class",
    "executor_class",
    "log_level",
    "log_output",
]
HUB_AUTH_TRAITS = ["hub_api_url", "service_name", "admin_from_hub", "auto_create_lectures"]
KUBE_EXECUTOR_TRAITS = [
    "namespace",
    "pvc_name",
    "data_mount_path",
    "job_mount_path",
    "image",
    "image_pull_policy",
    "image_pull_secrets",
    "node_selector",
    "tolerations",
    "affinity",
    "cpu_request",
    "cpu_limit",
    "memory_request",
    "memory_limit",
    "start_timeout",
    "image_pull_timeout",
    "keep_failed_pods",
    "max_concurrent_pods",
    "extra_pod_config",
    "service_account_name",
]

names = pytest.mark.parametrize("name", list(MATRIX))


def _parallel(fn, items):
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(items, pool.map(fn, items), strict=True))


@pytest.fixture(scope="module")
def rendered(helm) -> dict[str, str]:
    """helm template output per matrix entry (rendered once, in parallel)."""
    return _parallel(lambda n: chart.template_text(MATRIX[n]), list(MATRIX))


@pytest.fixture(scope="module")
def docs(rendered) -> dict[str, list[dict]]:
    return {name: chart.parse(text) for name, text in rendered.items()}


@pytest.fixture(scope="module")
def linted(helm) -> dict[str, subprocess.CompletedProcess]:
    def lint(name):
        return chart.run_helm(
            [
                "lint",
                "--strict",
                str(CHART_DIR),
                "--namespace",
                NAMESPACE,
                "--kube-version",
                chart.KUBE_VERSION,
            ],
            values=MATRIX[name],
            check=False,
        )

    return _parallel(lint, list(MATRIX))


@pytest.fixture(scope="module")
def validation(rendered, tmp_path_factory) -> dict[str, list[str]]:
    """kubernetes-validate --strict over every render and every supported version.

    Two processes (the schemas take a while to load) over half of the renders each. Returns the
    reported lines per matrix entry: failures and warnings (--quiet drops passes; a missing schema
    is only a WARN for kubernetes-validate, so any line at all counts as a failure here).
    """
    tool = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubernetes-validate"
    )
    assert tool, "kubernetes-validate is not installed (pip install kubernetes-validate)"
    out_dir = tmp_path_factory.mktemp("rendered")
    files = {}
    for name, text in rendered.items():
        files[name] = out_dir / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump_all(kubernetes_objects(chart.parse(text))))
    cmd = [tool, "--strict", "--quiet"]
    for version in SUPPORTED_KUBE_VERSIONS:
        cmd += ["-k", version]
    paths = [str(p) for p in files.values()]
    groups = [paths[0::2], paths[1::2]]

    def run(group):
        return subprocess.run([*cmd, *group], capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(run, groups))
    lines = [line for proc in procs for line in (proc.stdout + proc.stderr).splitlines()]
    report = {name: [line for line in lines if str(path) in line] for name, path in files.items()}
    unattributed = [line for line in lines if not any(p in line for p in paths)]
    assert not unattributed, "\n".join(unattributed)
    for proc in procs:
        if proc.returncode != 0:
            assert any(report.values()), f"kubernetes-validate exited {proc.returncode} without a report"
    return report


# Kinds of CRDs (prometheus-operator's), for which kubernetes-validate has no schema: checked by
# the tests of their own below instead.
CRD_KINDS = {"ServiceMonitor"}


def kubernetes_objects(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] not in CRD_KINDS]


def workload(docs: list[dict]) -> dict:
    return one(docs, "Deployment", FULLNAME)


def pod_spec(docs: list[dict]) -> dict:
    return workload(docs)["spec"]["template"]["spec"]


def container(docs: list[dict]) -> dict:
    (c,) = pod_spec(docs)["containers"]
    return c


def env_of(docs: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in container(docs)["env"]}


def config_source(docs: list[dict]) -> str:
    return one(docs, "ConfigMap", FULLNAME)["data"]["grader_service_config.py"]


def load_config(docs: list[dict]):
    """Execute the rendered grader_service_config.py the way traitlets does; return the Config."""
    from traitlets.config import Config

    cfg = Config()
    source = config_source(docs)
    exec(compile(source, "grader_service_config.py", "exec"), {"get_config": lambda: cfg})
    return cfg


# --------------------------------------------------------------------------- lint and validation


@names
def test_helm_lint_strict(linted, name):
    proc = linted[name]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ERROR]" not in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


@names
def test_kubernetes_validate_strict(validation, name):
    assert validation[name] == [], "\n".join(validation[name])


@names
def test_objects_are_namespaced_and_labelled(docs, name):
    for doc in docs[name]:
        meta = doc["metadata"]
        assert meta.get("namespace") == NAMESPACE, (doc["kind"], meta["name"])
        labels = meta["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


def test_chart_metadata():
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == "0.1.0"
    assert meta["type"] == "application"
    package_init = (chart.REPO_ROOT / "grader_service" / "__init__.py").read_text()
    assert re.search(r'^__version__ = "(.+)"', package_init, re.M).group(1) == meta["appVersion"]


# --------------------------------------------------------------------------- replicas, database


def test_default_is_one_replica_with_recreate(docs):
    spec = workload(docs["defaults"])["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_postgres_allows_three_replicas_rolling(docs):
    spec = workload(docs["postgres-3-replicas"])["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_one_replica_gets_no_disruption_budget_anti_affinity_or_service_monitor(docs):
    for name in ("defaults", "local-executor", "arm"):
        assert find(docs[name], "PodDisruptionBudget") == [], name
        assert find(docs[name], "ServiceMonitor") == [], name
        assert "affinity" not in pod_spec(docs[name]), name
        assert "GRADER_SERVICE_METRICS_TOKEN" not in env_of(docs[name]), name


@pytest.mark.parametrize("name", ["postgres-3-replicas", "metrics-3-replicas"])
def test_replicas_get_a_disruption_budget_and_spread_over_nodes(docs, name):
    pdb = one(docs[name], "PodDisruptionBudget", FULLNAME)
    selector = workload(docs[name])["spec"]["selector"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": selector}
    anti = pod_spec(docs[name])["affinity"]["podAntiAffinity"]
    term = {"labelSelector": selector, "topologyKey": "kubernetes.io/hostname"}
    if MATRIX[name].get("podAntiAffinity") == "hard":
        assert anti == {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    else:
        assert anti == {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }


def test_own_affinity_or_none_replaces_the_spread(helm):
    values = copy.deepcopy(MATRIX["postgres-3-replicas"])
    own = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["web"]}]}
                ]
            }
        }
    }
    assert pod_spec(chart.render({**values, "affinity": own}))["affinity"] == own
    assert "affinity" not in pod_spec(chart.render({**values, "podAntiAffinity": "none"}))
    no_pdb = chart.render({**values, "podDisruptionBudget": {"enabled": False}})
    assert find(no_pdb, "PodDisruptionBudget") == []


def test_service_monitor_scrapes_every_replica_with_the_token(docs):
    name = "metrics-3-replicas"
    monitor = one(docs[name], "ServiceMonitor", FULLNAME)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    service = one(docs[name], "Service", FULLNAME)
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/services/grader/api/v1/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "10s")
    credentials = endpoint["authorization"]["credentials"]
    assert endpoint["authorization"]["type"] == "Bearer"
    # the service reads the very token Prometheus sends
    secret = one(docs[name], "Secret", credentials["name"])
    token = base64.b64decode(secret["data"][credentials["key"]]).decode()
    assert len(token) >= 32
    env = env_of(docs[name])["GRADER_SERVICE_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert env == {"name": credentials["name"], "key": credentials["key"]}
    # and Prometheus may reach the port
    policy = one(docs[name], "NetworkPolicy", FULLNAME)
    peers = policy["spec"]["ingress"][0]["from"]
    assert MATRIX[name]["metrics"]["allowedFrom"][0] in peers


def test_metrics_token_from_values_or_an_existing_secret(helm):
    values = {"config": {"authenticator": "token"}, "metrics": {"token": "t0k3n-of-the-admin"}}
    docs = chart.render(values)
    secret = one(docs, "Secret", FULLNAME)
    assert base64.b64decode(secret["data"]["metrics-token"]).decode() == "t0k3n-of-the-admin"
    assert "metrics-token" not in json.dumps(one(docs, "ConfigMap", FULLNAME))
    docs = chart.render(
        {
            **MATRIX["existing-secret"],
            "metrics": {"serviceMonitor": {"enabled": True}},
            "existingSecret": {**MATRIX["existing-secret"]["existingSecret"], "metricsTokenKey": "scrape"},
        }
    )
    assert find(docs, "Secret") == []
    ref = env_of(docs)["GRADER_SERVICE_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "hub", "key": "scrape"}
    credentials = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["authorization"]["credentials"]
    assert credentials == ref


def test_rwo_volume_forces_recreate(docs):
    assert workload(docs["local-executor"])["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("replicas", [2, 3])
def test_sqlite_with_several_replicas_fails_clearly(helm, replicas):
    proc = chart.run_helm(["template", RELEASE, str(CHART_DIR)], values={"replicas": replicas}, check=False)
    assert proc.returncode != 0
    assert f"replicas={replicas} needs PostgreSQL" in proc.stderr
    assert "SQLite" in proc.stderr and "database.type=postgresql" in proc.stderr


def test_postgres_without_url_fails_clearly(helm):
    proc = chart.run_helm(
        ["template", RELEASE, str(CHART_DIR)], values={"database": {"type": "postgresql"}}, check=False
    )
    assert proc.returncode != 0
    assert "database.type=postgresql needs database.url" in proc.stderr


def test_base_url_must_match_hub_service_prefix(helm):
    proc = chart.run_helm(
        ["template", RELEASE, str(CHART_DIR)], values={"config": {"baseUrl": "/grader/"}}, check=False
    )
    assert proc.returncode != 0
    assert "/services/grader/" in proc.stderr
    # a hub with its own base URL (/jupyter/services/grader/) is fine
    chart.run_helm(
        ["template", RELEASE, str(CHART_DIR)], values={"config": {"baseUrl": "/jupyter/services/grader/"}}
    )


def test_sqlite_url_in_config_and_no_db_secret(docs):
    d = docs["defaults"]
    assert load_config(d).GraderService.db_url == "sqlite:////srv/grader/grader.sqlite"
    assert "GRADER_SERVICE_DB_URL" not in env_of(d)
    secret = one(d, "Secret", FULLNAME)
    assert set(secret["data"]) == {"api-token"}


def test_postgres_url_only_in_secret(docs, rendered):
    d = docs["postgres-3-replicas"]
    secret = one(d, "Secret", FULLNAME)
    assert base64.b64decode(secret["data"]["db-url"]).decode() == PG_URL
    ref = env_of(d)["GRADER_SERVICE_DB_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": FULLNAME, "key": "db-url"}
    assert "db_url" not in load_config(d).GraderService
    assert "s3cr3t-pw" not in config_source(d)
    # the password appears nowhere in clear text
    assert "s3cr3t-pw" not in rendered["postgres-3-replicas"]


def test_existing_secret(docs):
    d = docs["existing-secret"]
    assert find(d, "Secret") == []
    env = env_of(d)
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hub",
        "key": "hub.services.grader.apiToken",
    }
    assert env["GRADER_SERVICE_DB_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "hub",
        "key": "grader-db-url",
    }


def test_explicit_api_token_is_used(helm):
    d = chart.render({"jupyterhub": {"apiToken": "tok-123"}}, show_only=["templates/secret.yaml"])
    assert base64.b64decode(one(d, "Secret")["data"]["api-token"]) == b"tok-123"


def test_generated_api_token_is_long(docs):
    token = base64.b64decode(one(docs["defaults"], "Secret")["data"]["api-token"])
    assert len(token) >= 32


def test_token_mode_has_no_secret_and_no_hub_env(docs):
    d = docs["ingress-standalone"]
    assert find(d, "Secret") == []
    assert not [k for k in env_of(d) if k.startswith("JUPYTERHUB_")]
    assert "JupyterHubAuthenticator" not in load_config(d)


# --------------------------------------------------------------------------- config file


def test_config_renders_every_trait_in_kube_mode(docs):
    source = config_source(docs["defaults"])
    for trait in GRADER_SERVICE_TRAITS:
        assert re.search(rf"^c\.GraderService\.{trait} = ", source, re.M), trait
    for trait in HUB_AUTH_TRAITS:
        assert re.search(rf"^c\.JupyterHubAuthenticator\.{trait} = ", source, re.M), trait
    for trait in KUBE_EXECUTOR_TRAITS:
        assert re.search(rf"^c\.KubeAutogradeExecutor\.{trait} = ", source, re.M), trait


def test_config_defaults(docs):
    cfg = load_config(docs["defaults"])
    gs, hub, kube = cfg.GraderService, cfg.JupyterHubAuthenticator, cfg.KubeAutogradeExecutor
    assert gs.ip == "0.0.0.0"
    assert gs.port == 4010
    assert gs.base_url == "/services/grader/"
    assert gs.data_dir == "/srv/grader"
    assert gs.upgrade_db is True
    assert gs.authenticator_class == "jupyterhub"
    assert gs.executor_class == "kube"
    assert cfg.Scheduler.concurrency == 2
    assert gs.log_level == "INFO"
    assert gs.log_output == "text"
    assert gs.shutdown_timeout == 25  # done 5 s before the pod's grace period of 30 s ends
    assert hub.hub_api_url == "http://hub:8081/hub/api"
    assert hub.service_name == "grader"
    assert hub.admin_from_hub is True
    assert hub.auto_create_lectures is True
    assert kube.namespace == NAMESPACE
    assert kube.pvc_name == f"{FULLNAME}-data"
    assert kube.data_mount_path == "/srv/grader"
    assert kube.job_mount_path == "/job"
    assert kube.image == "ghcr.io/grader-service/grading:0.1.0"
    assert kube.image_pull_policy == "IfNotPresent"
    assert kube.image_pull_secrets == []
    assert kube.node_selector == {}
    assert kube.tolerations == []
    assert kube.affinity == {}
    assert (kube.cpu_request, kube.cpu_limit) == (0.25, 1.0)
    assert isinstance(kube.cpu_limit, float)  # the executor's cpu traits are Floats
    assert (kube.memory_request, kube.memory_limit) == ("256Mi", "1Gi")
    assert kube.start_timeout == 300 and isinstance(kube.start_timeout, int)
    assert kube.image_pull_timeout == 120 and isinstance(kube.image_pull_timeout, int)
    assert kube.keep_failed_pods is False
    assert kube.max_concurrent_pods == 4
    assert kube.extra_pod_config == {}
    assert kube.service_account_name is None


def test_config_grading_values_round_trip(docs):
    """Nested dicts/lists with bools, None, floats and odd strings come out as the same Python."""
    kube = load_config(docs["arm"]).KubeAutogradeExecutor
    grading = MATRIX["arm"]["grading"]
    assert kube.node_selector == grading["nodeSelector"]
    assert kube.tolerations == grading["tolerations"]
    assert kube.affinity == grading["affinity"]
    assert kube.extra_pod_config == grading["extraPodConfig"]
    assert kube.image_pull_secrets == ["regcred"]
    # CPU becomes float cores ("500m" -> 0.5); memory stays a quantity string
    assert (kube.cpu_request, kube.cpu_limit) == (0.5, 2.0)
    assert (kube.memory_request, kube.memory_limit) == ("300Mi", "2Gi")
    assert kube.start_timeout == 600 and kube.image_pull_timeout == 90
    assert kube.keep_failed_pods is True
    assert kube.max_concurrent_pods == 2
    assert kube.service_account_name == "grading"


def test_config_local_executor_and_extra_config(docs):
    d = docs["local-executor"]
    cfg = load_config(d)
    assert cfg.GraderService.executor_class == "local"
    assert cfg.GraderService.log_level == "DEBUG"
    assert cfg.GraderService.log_output == "json"
    assert "KubeAutogradeExecutor" not in cfg
    # extraConfig is appended last, so it wins
    assert cfg.Scheduler.concurrency == 3
    assert cfg.Foo.bar == {"x": [1, 2]}
    assert config_source(d).rstrip().endswith("c.Foo.bar = {'x': [1, 2]}")


def test_upgrade_db_can_be_left_to_the_service(helm):
    d = chart.render({"config": {"upgradeDb": None}}, show_only=["templates/configmap.yaml"])
    assert load_config(d).GraderService.upgrade_db is None
    d = chart.render({"config": {"upgradeDb": False}}, show_only=["templates/configmap.yaml"])
    assert load_config(d).GraderService.upgrade_db is False


def test_image_digest_and_tag(helm):
    digest = "sha256:" + "a" * 64
    d = chart.render(
        {"image": {"tag": "1.2.3"}, "grading": {"image": {"digest": digest}}},
        show_only=["templates/deployment.yaml", "templates/configmap.yaml"],
    )
    assert container(d)["image"] == "ghcr.io/grader-service/grader-service:1.2.3"
    assert load_config(d).KubeAutogradeExecutor.image == f"ghcr.io/grader-service/grading@{digest}"


def test_config_change_rolls_the_deployment(helm, docs):
    changed = copy.deepcopy(MATRIX["defaults"])
    changed["config"] = {"logLevel": "DEBUG"}
    d = chart.render(changed, show_only=["templates/deployment.yaml"])
    before = workload(docs["defaults"])["spec"]["template"]["metadata"]["annotations"]
    after = workload(d)["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", before["checksum/config"])
    assert before["checksum/config"] != after["checksum/config"]
    assert "checksum/secret" in before


# --------------------------------------------------------------------------- RBAC


EXPECTED_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]


def test_role_grants_exactly_what_the_kube_executor_needs(docs):
    role = one(docs["defaults"], "Role")
    assert role["rules"] == EXPECTED_RULES
    assert role["metadata"]["namespace"] == NAMESPACE
    assert find(docs["defaults"], "ClusterRole") == [] and find(docs["defaults"], "ClusterRoleBinding") == []


def test_render_role_helper(helm):
    role = chart.render_role({})
    assert role["kind"] == "Role"
    assert role["rules"] == EXPECTED_RULES
    with pytest.raises(LookupError):
        chart.render_role({"config": {"executor": "local"}})
    with pytest.raises(LookupError):
        chart.render_role({"rbac": {"create": False}})


def test_rolebinding_binds_the_deployments_service_account(docs):
    d = docs["defaults"]
    binding = one(d, "RoleBinding")
    sa = one(d, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": one(d, "Role")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert pod_spec(d)["serviceAccountName"] == sa["metadata"]["name"]
    assert pod_spec(d)["automountServiceAccountToken"] is True


def test_local_executor_gets_no_rbac_and_no_token(docs):
    d = docs["local-executor"]
    assert find(d, "Role") == [] and find(d, "RoleBinding") == []
    assert one(d, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod_spec(d)["automountServiceAccountToken"] is False
    assert [n["metadata"]["name"] for n in find(d, "NetworkPolicy")] == [FULLNAME]


# --------------------------------------------------------------------------- pod hardening


@names
def test_security_context(docs, name):
    spec = pod_spec(docs[name])
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 1000 and psc["runAsGroup"] == 1000 and psc["fsGroup"] == 1000
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container(docs[name])["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    # read-only root: /tmp is an emptyDir, the data dir is the PVC, the config is read-only
    mounts = {m["mountPath"]: m for m in container(docs[name])["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert "persistentVolumeClaim" in volumes[mounts["/srv/grader"]["name"]]
    assert mounts["/etc/grader-service"]["readOnly"] is True
    assert spec["enableServiceLinks"] is False


@names
def test_probes_hit_health_under_base_url(docs, name):
    base = (MATRIX[name].get("config") or {}).get("baseUrl", "/services/grader/")
    c = container(docs[name])
    assert c["ports"] == [{"name": "http", "containerPort": 4010, "protocol": "TCP"}]
    # Liveness and startup never ask the database (losing it must not restart pods); readiness does.
    for probe in ("startupProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": f"{base}api/v1/health/live", "port": "http"}, probe
    assert c["readinessProbe"]["httpGet"] == {"path": f"{base}api/v1/health", "port": "http"}
    assert c["args"] == ["-f", "/etc/grader-service/grader_service_config.py"]
    assert "resources" in c and c["resources"]["limits"]["memory"]


# --------------------------------------------------------------------------- storage


def test_pvc_read_write_many(docs):
    pvc = one(docs["defaults"], "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == f"{FULLNAME}-data"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in pvc["spec"]  # cluster default
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    claim = next(v for v in pod_spec(docs["defaults"])["volumes"] if v["name"] == "data")
    assert claim["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_pvc_storage_class(docs):
    assert one(docs["arm"], "PersistentVolumeClaim")["spec"]["storageClassName"] == "longhorn"
    pvc = one(docs["local-executor"], "PersistentVolumeClaim")["spec"]
    assert pvc["storageClassName"] == "" and pvc["accessModes"] == ["ReadWriteOnce"]


def test_existing_claim_is_shared_with_grading_pods(docs):
    d = docs["existing-secret"]
    assert find(d, "PersistentVolumeClaim") == []
    claim = next(v for v in pod_spec(d)["volumes"] if v["name"] == "data")
    assert claim["persistentVolumeClaim"]["claimName"] == "grader-nfs"
    assert load_config(d).KubeAutogradeExecutor.pvc_name == "grader-nfs"


# --------------------------------------------------------------------------- network


def test_grading_pods_are_denied_all_traffic(docs):
    policy = one(docs["defaults"], "NetworkPolicy", f"{FULLNAME}-grading-deny-all")
    spec = policy["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {
            "app.kubernetes.io/name": "grader-service",
            "app.kubernetes.io/component": "autograde",
        }
    }
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    # no rules at all = nothing allowed
    assert not spec.get("ingress") and not spec.get("egress")


def test_network_for_command_stages_only_when_the_admin_allows_it(docs):
    name = f"{FULLNAME}-grading-egress"
    assert [p for p in find(docs["defaults"], "NetworkPolicy") if p["metadata"]["name"] == name] == []
    assert load_config(docs["defaults"]).KubeAutogradeExecutor.allow_network is False
    policy = one(docs["arm"], "NetworkPolicy", name)
    assert policy["spec"] == make_egress_policy("ns")["spec"]  # the executor's label, egress only
    assert load_config(docs["arm"]).KubeAutogradeExecutor.allow_network is True


def test_service_accepts_hub_and_proxy_on_its_port(docs):
    policy = one(docs["defaults"], "NetworkPolicy", FULLNAME)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == workload(docs["defaults"])["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": 4010, "protocol": "TCP"}]
    selectors = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    assert {"app": "jupyterhub", "component": "proxy"} in selectors
    assert {"app": "jupyterhub", "component": "hub"} in selectors
    test_pod = one(docs["defaults"], "Pod")
    assert any(sel.items() <= test_pod["metadata"]["labels"].items() for sel in selectors)


def test_network_policies_can_be_disabled(helm):
    d = chart.render({"networkPolicy": {"enabled": False}})
    assert find(d, "NetworkPolicy") == []


def test_service_and_ingress(docs):
    d = docs["ingress-standalone"]
    svc = one(d, "Service")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 4010, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == workload(d)["spec"]["selector"]["matchLabels"]
    ing = one(d, "Ingress")
    assert ing["spec"]["ingressClassName"] == "traefik"
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "grader.example.org"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/grader/"
    assert path["backend"]["service"] == {"name": FULLNAME, "port": {"name": "http"}}
    assert ing["spec"]["tls"] == [{"secretName": "grader-tls", "hosts": ["grader.example.org"]}]
    assert find(docs["defaults"], "Ingress") == []


# --------------------------------------------------------------------------- scheduling


def test_arm_scheduling_is_separate_for_service_and_grading(docs):
    d = docs["arm"]
    assert pod_spec(d)["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert pod_spec(d)["tolerations"] == MATRIX["arm"]["tolerations"]
    kube = load_config(d).KubeAutogradeExecutor
    assert kube.node_selector == {"kubernetes.io/arch": "arm", "node-role/grading": "true"}
    # the helm test pod follows the service (same image, same architecture)
    assert one(d, "Pod")["spec"]["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert "nodeSelector" not in pod_spec(docs["defaults"])


# --------------------------------------------------------------------------- helm test, NOTES


def test_helm_test_pod_checks_health(docs):
    pod = one(docs["defaults"], "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    url = c["command"][-1]
    assert url == f"http://{FULLNAME}:4010/services/grader/api/v1/health"
    assert c["command"][:2] == ["python", "-c"]
    compile(c["command"][2], "health-check", "exec")
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def render_notes(values: dict, tmp_path: Path) -> str:
    """NOTES.txt as `helm install` would print it (helm template skips NOTES, so wrap it)."""
    copy_dir = tmp_path / "grader-service"
    shutil.copytree(CHART_DIR, copy_dir)
    (copy_dir / "notes-under-test.txt").write_text((copy_dir / "templates" / "NOTES.txt").read_text())
    (copy_dir / "templates" / "zz-notes-under-test.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n'
    )
    out = chart.run_helm(
        [
            "template",
            RELEASE,
            str(copy_dir),
            "-n",
            NAMESPACE,
            "--show-only",
            "templates/zz-notes-under-test.yaml",
        ],
        values=values,
    ).stdout
    return yaml.safe_load(out)["data"]["notes"]


def test_notes_has_jupyterhub_service_snippet(helm, tmp_path):
    notes = render_notes({}, tmp_path)
    snippet = notes[notes.index("hub:\n") :]
    hub_values = yaml.safe_load(snippet.split("\n\n")[0])
    service = hub_values["hub"]["services"]["grader"]
    assert service["url"] == f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:4010"
    assert "apiToken" in service
    roles = hub_values["hub"]["loadRoles"]
    assert "access:services!service=grader" in roles["user"]["scopes"]
    assert "self" in roles["user"]["scopes"]
    assert roles["grader-service"]["services"] == ["grader"]
    assert f"get secret {FULLNAME}" in notes
    assert "helm test gs" in notes


def test_notes_warn_about_rwo_with_kube_executor(helm, tmp_path):
    notes = render_notes({"persistence": {"accessMode": "ReadWriteOnce"}}, tmp_path)
    assert "WARNING: persistence.accessMode is ReadWriteOnce" in notes


# --------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replica": 2}, "replica"),  # typo at the top level
        ({"grading": {"nodeSelecter": {"kubernetes.io/arch": "arm64"}}}, "nodeSelecter"),  # nested typo
        ({"persistence": {"storageclass": "nfs"}}, "storageclass"),
        ({"config": {"exectuor": "kube"}}, "exectuor"),
        ({"replicas": "three"}, "replicas"),  # wrong types
        ({"config": {"port": "4010"}}, "port"),
        ({"config": {"upgradeDb": "yes"}}, "upgradeDb"),
        ({"grading": {"nodeSelector": ["kubernetes.io/arch=arm64"]}}, "nodeSelector"),
        ({"grading": {"maxConcurrentPods": 0}}, "maxConcurrentPods"),
        ({"config": {"executor": "docker"}}, "executor"),  # not one of the choices
        ({"database": {"type": "mysql"}}, "type"),
        ({"persistence": {"accessMode": "ReadWriteMost"}}, "accessMode"),
        ({"grading": {"resources": {"limits": {"memory": "lots"}}}}, "memory"),
        ({"grading": {"resources": {"requests": {"cpu": "1Gi"}}}}, "cpu"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
        ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval"),
        ({"podAntiAffinity": "always"}, "podAntiAffinity"),
        ({"podDisruptionBudget": {"minAvailable": 1}}, "minAvailable"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_schema_rejects_bad_values(helm, values, message):
    proc = chart.run_helm(["template", RELEASE, str(CHART_DIR)], values=values, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr


def test_schema_allows_helm_globals(helm):
    chart.run_helm(["template", RELEASE, str(CHART_DIR)], values={"global": {"anything": 1}})
