"""Metrics and logs of the real service: `/metrics` in the Prometheus text format, who may read it,
bounded labels, counters that move when a grading runs, JSON log lines that carry request ids.

One service per database (SQLite, PostgreSQL) started with a scrape token and `--log-format json`;
every request goes over HTTP; the exposition is read with prometheus_client's own parser.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from grader_service.autograding.executor import GradingOutcome, disk_limit_reason
from grader_service.metrics import error_reason, route_template

from .conftest import DATA, World, zip_dir
from .grading_utils import wait_graded
from .postgres import PostgresServer
from .service import ServiceProcess

SCRAPE_TOKEN = "scrape-" + secrets.token_hex(16)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def service(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    data_dir = tmp_path_factory.mktemp("metrics") / "data"
    config = f"c.GraderService.metrics_token = {SCRAPE_TOKEN!r}\nc.Scheduler.concurrency = 1\n"
    proc = ServiceProcess(data_dir, db_url, config=config)
    proc.start("--upgrade-db", "--log-format", "json")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def world(service: ServiceProcess) -> World:
    return World(service)


def scrape(service: ServiceProcess, token: str = SCRAPE_TOKEN, scheme: str = "Bearer") -> Samples:
    r = requests.get(service.api + "metrics", headers={"Authorization": f"{scheme} {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def log_lines(service: ServiceProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in service.read_log().splitlines() if line.strip()]


def lines_of_request(service: ServiceProcess, request_id: str, timeout: float = 10) -> list[dict[str, Any]]:
    """The log lines carrying `request_id`, once there are some: a request's access line is
    written just after its response is sent, so it may come a moment after the client has read it."""
    deadline = time.time() + timeout
    while True:
        found = [x for x in log_lines(service) if x.get("request_id") == request_id]
        if found or time.time() > deadline:
            return found
        time.sleep(0.05)


# --- who may read the metrics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-token",
        f"Bearer {SCRAPE_TOKEN[:-1]}",  # a prefix
        f"Bearer {SCRAPE_TOKEN}x",  # longer
        f"Bearer {SCRAPE_TOKEN.upper()}",
        f"Basic {SCRAPE_TOKEN}",  # another scheme
        f"Bearer {SCRAPE_TOKEN[:-1]}\u00e9",  # not ASCII: compared, refused, not an error
    ],
)
def test_metrics_refused_without_the_token_or_with_a_wrong_one(
    world: World, service: ServiceProcess, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization.encode("utf-8")}
    r = requests.get(service.api + "metrics", headers=headers, timeout=30)
    assert r.status_code == 401, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert "scrape token" in r.json()["message"]
    assert "grader_" not in r.text


@pytest.mark.parametrize("who", ["student", "tutor", "instructor"])
def test_metrics_refused_to_users_who_are_not_admins(world: World, who: str) -> None:
    r = world.client(who).get("metrics")
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "Forbidden"


def test_metrics_for_admins_and_the_scrape_token_in_either_scheme(
    world: World, service: ServiceProcess
) -> None:
    r = world.client("admin").get("metrics")
    assert r.status_code == 200, r.text
    assert "grader_queue_depth" in r.text
    assert value(scrape(service, scheme="token"), "grader_db_pool_connections_max") > 0
    assert value(scrape(service, scheme="bearer"), "grader_db_pool_connections_max") > 0


def test_the_scrape_token_opens_nothing_else(world: World, service: ServiceProcess) -> None:
    client = service.client(SCRAPE_TOKEN)
    for path in ("user", "lectures", f"lectures/{world.lecture}/assignments", "events?submission=1"):
        assert client.get(path).status_code == 401, path


def test_the_token_in_the_query_string_is_not_accepted(world: World, service: ServiceProcess) -> None:
    for name in ("token", "access_token"):
        r = requests.get(service.api + "metrics", params={name: SCRAPE_TOKEN}, timeout=30)
        assert r.status_code == 401, name


# --- what is counted ------------------------------------------------------------------------------


def test_counters_move_when_a_grading_runs(world: World, service: ServiceProcess) -> None:
    before = scrape(service)
    r = world.submit("student")
    assert r.status_code == 201, r.text
    events = wait_graded(world.client("student"), r.json()["id"])
    assert events[-1]["auto_status"] == "graded"
    after = scrape(service)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("grader_jobs_total", outcome="graded", executor="local") == 1
    assert moved("grader_job_queue_wait_seconds_count", executor="local") == 1
    assert moved("grader_job_run_seconds_count", executor="local") == 1
    # the run took at least as long as the grading process itself
    assert moved("grader_job_run_seconds_sum", executor="local") > 0.05
    assert moved("grader_executor_errors_total") == 0
    submissions = "/lectures/{}/assignments/{}/submissions"
    assert (
        moved("grader_http_request_duration_seconds_count", route=submissions, method="POST", status="201")
        == 1
    )
    assert value(after, "grader_queue_depth") == 0
    assert value(after, "grader_queue_oldest_age_seconds") == 0


def test_a_failed_grading_counts_as_an_executor_error_with_its_reason(
    world: World, service: ServiceProcess, tmp_path: Path
) -> None:
    ins = world.client("instructor")
    base = f"lectures/{world.lecture}/assignments"
    assert ins.post(base, json={"name": "disky", "settings": {"disk": "32Mi"}}).status_code == 201
    r = ins.put(
        f"{base}/disky/files", data=zip_dir(DATA / "tiny"), headers={"Content-Type": "application/zip"}
    )
    assert r.status_code == 200, r.text
    assert ins.patch(f"{base}/disky", json={"status": "released"}).status_code == 200
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = "for i in range(48):\n    open(f'part{i}.bin', 'wb').write(b'0' * (1 << 20))"
    path = tmp_path / "filler.ipynb"
    path.write_text(json.dumps(nb))
    before = scrape(service)
    r = world.submit("student", notebook=path, assignment="disky")
    assert r.status_code == 201, r.text
    events = wait_graded(world.client("student"), r.json()["id"])
    assert events[-1]["auto_status"] == "failed", events
    after = scrape(service)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("grader_jobs_total", outcome="failed", executor="local") == 1
    assert moved("grader_jobs_total", outcome="graded") == 0
    assert moved("grader_executor_errors_total", executor="local", reason="disk_limit") == 1
    assert moved("grader_executor_errors_total") == 1


def test_queue_gauges_show_a_job_waiting_behind_a_running_one(
    world: World, service: ServiceProcess, tmp_path: Path
) -> None:
    """One worker (concurrency 1): while a slow notebook grades, the next submission waits."""
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = "import time\ntime.sleep(6)\n" + "".join(nb["cells"][1]["source"])
    slow = tmp_path / "slow.ipynb"
    slow.write_text(json.dumps(nb))
    first = world.submit("student", notebook=slow)
    second = world.submit("other_student")
    assert first.status_code == second.status_code == 201
    time.sleep(1.5)
    waiting = scrape(service)
    assert value(waiting, "grader_queue_depth") == 1
    assert value(waiting, "grader_queue_running") == 1
    assert value(waiting, "grader_queue_oldest_age_seconds") >= 1.0
    for who, r in (("student", first), ("other_student", second)):
        assert wait_graded(world.client(who), r.json()["id"])[-1]["auto_status"] == "graded"
    done = scrape(service)
    assert value(done, "grader_queue_depth") == value(done, "grader_queue_running") == 0
    # the second job waited for the first: its queue wait is in a bucket above one second
    waits = [
        v
        for (n, ls), v in done.items()
        if n == "grader_job_queue_wait_seconds_bucket" and ("le", "1.0") in ls
    ]
    total_waits = value(done, "grader_job_queue_wait_seconds_count", executor="local")
    assert waits and waits[0] < total_waits


def test_pool_gauge_counts_the_connections_in_use(world: World, service: ServiceProcess) -> None:
    samples = scrape(service)
    in_use = value(samples, "grader_db_pool_connections_in_use")
    assert 1 <= in_use <= value(samples, "grader_db_pool_connections_max")  # at least the scrape's own


def test_open_event_streams_are_counted(world: World, service: ServiceProcess) -> None:
    client = world.client("tutor")
    params = {"lecture": world.lecture, "assignment": world.released}
    with client.get("events", params=params, stream=True, timeout=30) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # the stream is open
        assert value(scrape(service), "grader_sse_streams_open") >= 1
    deadline = time.time() + 20
    while value(scrape(service), "grader_sse_streams_open") != 0:
        assert time.time() < deadline, "a closed stream is still counted"
        time.sleep(0.2)


def test_route_label_is_the_template_never_the_raw_path(world: World, service: ServiceProcess) -> None:
    marker = "zq" + secrets.token_hex(6)
    client = world.client("admin")
    client.get(f"lectures/{marker}")
    client.get(f"lectures/{world.lecture}/assignments/{marker}")
    client.get(f"lectures/{world.lecture}/assignments/{world.released}/submissions/{marker}")
    client.get(f"lectures/{world.lecture}/assignments/{world.released}/submissions/99999999")
    client.get(f"{marker}/{marker}")
    client.get(f"lectures/{marker}/{marker}/{marker}")
    client.request("BREW", f"lectures/{marker}")
    client.request("PROPFIND", "lectures")
    client.get(f"lectures?x={marker}")
    r = world.client("admin").get("metrics")
    assert r.status_code == 200
    assert marker not in r.text
    assert "99999999" not in r.text
    samples = scrape(service)
    routes = {dict(labels).get("route") for (name, labels) in samples if name.startswith("grader_http_")}
    methods = {dict(labels).get("method") for (name, labels) in samples if name.startswith("grader_http_")}
    assert "/lectures/{}" in routes
    assert "/lectures/{}/assignments/{}/submissions/{}" in routes
    assert "unmatched" in routes
    assert all(route == "unmatched" or route.startswith("/") for route in routes), routes
    assert all("(" not in route and "$" not in route for route in routes), routes
    assert methods <= {"GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS", "other"}, methods
    assert "other" in methods


# --- logs ---------------------------------------------------------------------------------------


def test_json_log_lines_carry_the_request_id_the_response_shows(
    world: World, service: ServiceProcess
) -> None:
    chosen = "trace-" + secrets.token_hex(8)
    r = world.client("student").get("lectures", headers={"X-Request-ID": chosen})
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == chosen
    generated = world.client("student").get(f"lectures/{world.lecture}")
    rid = generated.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert [x for x in lines_of_request(service, chosen) if "GET /api/v1/lectures" in x["message"]]
    assert lines_of_request(service, rid)
    for line in log_lines(service):  # every line of the process's output parses as one JSON object
        assert {"time", "level", "logger", "message"} <= set(line), line


@pytest.mark.parametrize(
    "incoming",
    ["has space", 'quote"d', "x" * 200, "-leading-dash", "semi;colon", "<script>", "\u00e9t\u00e9"],
)
def test_a_malformed_request_id_is_replaced(world: World, service: ServiceProcess, incoming: str) -> None:
    r = world.client("student").get("lectures", headers={"X-Request-ID": incoming.encode("utf-8")})
    assert r.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"])
    assert incoming not in service.read_log()


def test_errors_carry_the_request_id_too(world: World, service: ServiceProcess) -> None:
    chosen = "err-" + secrets.token_hex(8)
    r = requests.get(service.api + "lectures", headers={"X-Request-ID": chosen}, timeout=30)
    assert r.status_code == 401
    assert r.headers["X-Request-ID"] == chosen
    assert [x for x in lines_of_request(service, chosen) if x["level"] == "WARNING"]


def test_log_lines_of_a_request_about_a_submission_name_it(world: World, service: ServiceProcess) -> None:
    r = world.submit("student")
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    wait_graded(world.client("student"), sid)
    r = world.client("student").get(
        f"lectures/{world.lecture}/assignments/{world.released}/submissions/{sid}",
        headers={"X-Request-ID": f"sub-{sid}"},
    )
    assert r.status_code == 200
    request_lines = lines_of_request(service, f"sub-{sid}")
    assert request_lines and all(x.get("submission_id") == sid for x in request_lines), request_lines


# --- pure parts ---------------------------------------------------------------------------------


def test_route_template() -> None:
    base = "/services/grader/"
    assert route_template(base + "api/v1/lectures/([^/]+)/roles/([^/]+)/?$", base) == "/lectures/{}/roles/{}"
    assert route_template(base + "api/v1/health/?$", base) == "/health"
    assert route_template("/services/grader/oauth_callback", base) == "/oauth_callback"
    assert route_template("/api/v1/metrics/?$", "/") == "/metrics"


@pytest.mark.parametrize(
    ("reason", "retryable", "expected"),
    [
        ("Internal error while grading: boom", True, "internal"),
        (disk_limit_reason("1Gi"), False, "disk_limit"),
        ("Grading did not finish within 65 s and was killed", False, "timeout"),
        ("The grading pod exceeded its time limit of 60 s (DeadlineExceeded)", False, "timeout"),
        ("The grading pod ran out of memory (OOMKilled, limit 1Gi)", False, "memory"),
        ("The grading image 'x' cannot be pulled (ErrImagePull: no)", False, "image_pull"),
        ("The grading pod was evicted from its node (node pressure)", True, "evicted"),
        ("The grading pod could not be created: 500", True, "start_failed"),
        ("The grading pod exited with code 1: Traceback", False, "exit"),
        (None, False, "exit"),
    ],
)
def test_error_reason_is_one_of_a_few_words(reason: str | None, retryable: bool, expected: str) -> None:
    assert error_reason(GradingOutcome(False, reason=reason, retryable=retryable)) == expected


# --- readiness and liveness when the database goes away ------------------------------------------


def test_readiness_fails_without_the_database_and_liveness_does_not(tmp_path: Path) -> None:
    """A PostgreSQL server of its own, stopped under the running service, then started again."""
    server = PostgresServer()
    server.start()
    service = ServiceProcess(tmp_path / "data", server.url)
    try:
        service.start("--upgrade-db")
        live, ready = service.api + "health/live", service.api + "health"
        assert requests.get(ready, timeout=10).status_code == 200
        server._run("pg_ctl", "-D", str(server.datadir), "-m", "immediate", "stop")
        deadline = time.time() + 30
        while requests.get(ready, timeout=10).status_code != 503:
            assert time.time() < deadline, "readiness still passes without the database"
            time.sleep(0.2)
        for _ in range(5):
            r = requests.get(live, timeout=10)
            assert r.status_code == 200 and r.json()["status"] == "ok", r.text
            assert requests.get(ready, timeout=10).json()["database"] == "unavailable"
        opts = f"-p {server.port} -k {server.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        server._run(
            "pg_ctl", "-D", str(server.datadir), "-o", opts, "-l", str(server.dir / "log"), "-w", "start"
        )
        deadline = time.time() + 30
        while requests.get(ready, timeout=10).status_code != 200:
            assert time.time() < deadline, "readiness did not come back with the database"
            time.sleep(0.2)
    finally:
        service.stop()
        server.stop()
