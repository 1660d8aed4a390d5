"""Several replicas on one PostgreSQL and one data dir, as the Helm chart runs them.

Three service processes share a database and a data dir. Live events reach the clients of every
replica whichever replica made the change; a replica killed mid-grading loses nothing (each
submission is graded exactly once, its events arrive on the others); one student's concurrent
submissions through different replicas all land in their git repository.

Then the announcement mechanism alone: an announcement in a transaction that rolls back is never
heard (PostgreSQL) nor delivered (SQLite), in each way a transaction can end; and a replica whose
database restarts listens again and sends the current state of its streams.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pygit2
import pytest
import requests
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from grader_service import db
from grader_service.autograding.announce import CHANNEL, announce, deliver_after_commit
from grader_service.autograding.listener import conninfo
from grader_service.orm import GradingJob, Submission, User
from grader_service.storage.layout import DataLayout

from .conftest import DATA, World
from .grading_utils import wait_graded
from .postgres import PostgresServer, create_database
from .service import Client, ServiceProcess

CONFIG = """
c.Scheduler.concurrency = 1
c.Scheduler.lease_seconds = 4
"""
FINAL = ("graded", "failed")


class Stream:
    """A Server-Sent-Events stream read in a thread; its events, in order."""

    def __init__(self, client: Client, params: dict[str, Any], headers: dict[str, str] | None = None):
        self.response = client.get("events", params=params, stream=True, timeout=(10, 120), headers=headers)
        assert self.response.status_code == 200, self.response.text
        self.events: list[dict[str, Any]] = []
        self.ids: list[int] = []
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))
                elif line.startswith("id: "):
                    self.ids.append(int(line[4:]))
        except (requests.RequestException, OSError):
            pass
        finally:
            self.ended.set()

    def latest(self) -> dict[int, dict[str, Any]]:
        return {e["submission"]: e for e in list(self.events)}

    def wait(self, done: Callable[[dict[int, dict[str, Any]]], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.latest()):
            assert time.monotonic() < deadline, f"stream never got there: {self.events}"
            assert not self.ended.is_set() or done(self.latest()), f"stream ended: {self.events}"
            time.sleep(0.05)

    def by_submission(self) -> dict[int, list[dict[str, Any]]]:
        seen: dict[int, list[dict[str, Any]]] = {}
        for event in list(self.events):
            seen.setdefault(event["submission"], []).append(event)
        return seen


def all_final(ids: list[int]) -> Callable[[dict[int, dict[str, Any]]], bool]:
    return lambda latest: all(latest.get(i, {}).get("auto_status") == "graded" for i in ids)


def notebook(marker: str, sleep: float = 0.0) -> bytes:
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    source = nb["cells"][1]["source"]
    source = source if isinstance(source, str) else "".join(source)
    nb["cells"][1]["source"] = f"# {marker}\nimport time\ntime.sleep({sleep})\n{source}"
    return json.dumps(nb).encode()


def post(client: Client, body: bytes) -> requests.Response:
    return client.post(
        "lectures/ml/assignments/tiny/submissions",
        data=body,
        params={"filename": "tiny.ipynb"},
        headers={"Content-Type": "application/x-ipynb+json"},
    )


def enrol(world: World, name: str) -> str:
    token = world.service.token(name)
    assert world.client("admin").put(f"lectures/ml/roles/{name}", json={"role": "student"}).status_code == 201
    return token


def graded_once(engine: Any, ids: list[int]) -> None:
    """Every submission graded, by exactly one job, and nothing of theirs left queued or running."""
    with engine.connect() as conn:
        status = dict(
            conn.execute(select(Submission.id, Submission.auto_status).where(Submission.id.in_(ids))).all()
        )
        jobs = conn.execute(
            select(GradingJob.submission_id, GradingJob.state, func.count())
            .where(GradingJob.submission_id.in_(ids))
            .group_by(GradingJob.submission_id, GradingJob.state)
        ).all()
    assert status == {i: "graded" for i in ids}, status
    assert sorted(tuple(j) for j in jobs) == [(i, "succeeded", 1) for i in sorted(ids)], jobs


def never_stale(stream: Stream) -> None:
    """Once a stream said a submission is graded, it never says it is anything else."""
    for submission_id, events in stream.by_submission().items():
        states = [e["auto_status"] for e in events]
        if "graded" in states:
            assert set(states[states.index("graded") :]) == {"graded"}, (submission_id, states)


@pytest.fixture(scope="module")
def replicas(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    url = create_database(postgres_admin_url, f"replicas_{os.getpid()}")
    data = tmp_path_factory.mktemp("replicas") / "data"
    services = [ServiceProcess(data, url, config=CONFIG, name=f"replica{i}") for i in range(3)]
    services[0].start("--upgrade-db")
    try:
        for service in services[1:]:
            service.start(wait=False)
        for service in services[1:]:
            service.wait_healthy()
        yield services
    finally:
        for service in services:
            service.stop()


@pytest.fixture(scope="module")
def world(replicas: list[ServiceProcess]) -> World:
    return World(replicas[0])


def test_concurrent_submissions_of_one_student_through_every_replica_all_land_in_git(
    replicas: list[ServiceProcess], world: World
) -> None:
    token = enrol(world, "racer")
    rounds = 2
    bodies = [notebook(f"submission {i}") for i in range(rounds * len(replicas))]
    start = threading.Barrier(len(bodies))

    def submit(i: int) -> requests.Response:
        client = replicas[i % len(replicas)].client(token)
        start.wait()
        return post(client, bodies[i])

    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(submit, range(len(bodies))))
    assert [r.status_code for r in responses] == [201] * len(bodies), [r.text for r in responses]
    made = {r.json()["commit_hash"]: bodies[i] for i, r in enumerate(responses)}
    ids = [r.json()["id"] for r in responses]
    with replicas[0].engine.connect() as conn:
        assignment_id, user_id = conn.execute(
            select(Submission.assignment_id, Submission.user_id).where(Submission.id == ids[0])
        ).one()
    repo = pygit2.Repository(str(DataLayout(replicas[0].data_dir).submission_repo(assignment_id, user_id)))
    history = []
    commit = repo.references["refs/heads/main"].peel(pygit2.Commit)
    while True:
        history.append(str(commit.id))
        assert len(commit.parents) <= 1
        if not commit.parents:
            break
        commit = commit.parents[0]
    # Every accepted submission is on the branch, once, with the files it sent; nothing else is.
    assert sorted(history) == sorted(made), (history, list(made))
    for sha, body in made.items():
        assert repo[sha].peel(pygit2.Tree)["tiny.ipynb"].data == body
    for i, submission_id in enumerate(ids):
        assert wait_graded(replicas[(i + 1) % 3].client(token), submission_id)[-1]["auto_status"] == "graded"
    graded_once(replicas[0].engine, ids)


def test_the_last_attempts_cannot_be_taken_twice_through_different_replicas(
    replicas: list[ServiceProcess], world: World
) -> None:
    """Each replica checks the attempt limit; only the student's locked row makes the check and the
    insert one step across replicas (without it, each replica accepted its own first submission)."""
    token = enrol(world, "last")
    r = world.client("admin").put(
        "lectures/ml/assignments/tiny/extensions/last",
        json={"due_date": "2099-01-01T00:00:00Z", "max_submissions": 2},
    )
    assert r.status_code in (200, 201), r.text
    bodies = [notebook(f"attempt {i}") for i in range(3 * len(replicas))]
    start = threading.Barrier(len(bodies))

    def submit(i: int) -> requests.Response:
        client = replicas[i % len(replicas)].client(token)
        start.wait()
        return post(client, bodies[i])

    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(submit, range(len(bodies))))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 2 + [403] * (len(bodies) - 2), [r.text for r in responses]
    refusals = {r.json()["message"] for r in responses if r.status_code == 403}
    assert refusals == {"You have used all 2 submissions for 'tiny'"}
    accepted = [r.json()["id"] for r in responses if r.status_code == 201]
    with replicas[0].engine.connect() as conn:
        stored = (
            conn.execute(
                select(Submission.id).join(User, User.id == Submission.user_id).where(User.name == "last")
            )
            .scalars()
            .all()
        )
    assert sorted(stored) == sorted(accepted)
    for submission_id in accepted:
        assert wait_graded(replicas[0].client(token), submission_id)[-1]["auto_status"] == "graded"


def running_on(services: list[ServiceProcess], ids: list[int], timeout: float = 60) -> ServiceProcess:
    """The first of `services` seen grading one of the submissions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with services[0].engine.connect() as conn:
            workers = conn.scalars(
                select(GradingJob.worker).where(
                    GradingJob.state == "running", GradingJob.submission_id.in_(ids)
                )
            ).all()
        for service in services:
            if any(f":{service.proc.pid}:" in (w or "") for w in workers):
                return service
        time.sleep(0.05)
    raise AssertionError("none of the replicas started grading")


def test_every_replica_streams_every_change_and_a_killed_replica_loses_nothing(
    replicas: list[ServiceProcess], world: World
) -> None:
    tutor = world.tokens["tutor"]
    streams = [Stream(r.client(tutor), {"lecture": "ml", "assignment": "tiny"}) for r in replicas]
    tokens = [enrol(world, f"kill{i}") for i in range(6)]
    ids, own_streams = [], []
    for i, token in enumerate(tokens):
        r = post(replicas[i % 3].client(token), notebook(f"slow {i}", sleep=1.0))
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        # The student follows it on another replica than the one that took it.
        own_streams.append(
            (replicas[(i + 1) % 3], Stream(replicas[(i + 1) % 3].client(token), {"submission": ids[-1]}))
        )
    victim = running_on(replicas[1:], ids)
    victim.stop(signal.SIGKILL)
    with victim.engine.connect() as conn:
        held = conn.scalar(
            select(func.count()).where(
                GradingJob.state == "running", GradingJob.worker.like(f"%:{victim.proc.pid}:%")
            )
        )
    assert held == 1  # the kill really interrupted a grading

    survivors = [i for i, r in enumerate(replicas) if r is not victim]
    for i in survivors:
        streams[i].wait(all_final(ids))
        never_stale(streams[i])
        # Each change of every submission reached every surviving replica's client, whoever made it.
        assert {e["submission"] for e in streams[i].events if e["auto_status"] == "running"} == set(ids)
    for replica, stream in own_streams:
        if replica is not victim:
            stream.wait(lambda latest: bool(latest) and list(latest.values())[-1]["auto_status"] in FINAL)
            assert stream.events[-1]["auto_status"] == "graded"
    graded_once(replicas[0].engine, ids)

    # A client that lost its stream reconnects to another replica and first gets the current state.
    first_id = streams[survivors[0]].ids[0]
    resumed = Stream(
        replicas[survivors[1]].client(tutor),
        {"lecture": "ml", "assignment": "tiny"},
        headers={"Last-Event-ID": str(first_id)},
    )
    resumed.wait(all_final(ids), timeout=10)
    victim.start()  # back for whatever runs next


# --- the announcement mechanism alone ---------------------------------------------------------------


def end_badly(factory: sessionmaker[Session], how: str, submission_id: int) -> None:
    """Announce in a transaction that does not commit, ended in the way `how` names."""
    if how == "rollback":
        with factory() as session:
            announce(session, submission_id, 1)
            session.rollback()
    elif how == "exception":
        with pytest.raises(RuntimeError), db.session_scope(factory) as session:
            announce(session, submission_id, 1)
            raise RuntimeError("the change failed")
    elif how == "close":
        session = factory()
        announce(session, submission_id, 1)
        session.close()
    elif how == "savepoint":
        with factory() as session:
            session.execute(text("SELECT 1"))
            with pytest.raises(RuntimeError), session.begin_nested():
                announce(session, submission_id, 1)
                raise RuntimeError("the inner change failed")
            announce(session, submission_id + 1, 1)  # the outer transaction goes on and commits
            session.commit()


WAYS = ["rollback", "exception", "close", "savepoint"]


@pytest.fixture(scope="module")
def announce_db(postgres_admin_url: str) -> str:
    return create_database(postgres_admin_url, f"announce_{os.getpid()}")


@pytest.mark.parametrize("how", WAYS)
def test_an_announcement_in_a_rolled_back_transaction_is_never_heard(announce_db: str, how: str) -> None:
    engine = db.make_engine(announce_db)
    factory = db.make_session_factory(engine)
    with psycopg.connect(conninfo(engine.url), autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        end_badly(factory, how, 100)
        with db.session_scope(factory) as session:
            announce(session, 200, 2)
        # Notifications arrive in commit order: once the later commit's is here, all are.
        heard = []
        for notify in listener.notifies(timeout=10):
            heard.append(notify.payload)
            if notify.payload == "200 2":
                break
    engine.dispose()
    expected = ["101 1", "200 2"] if how == "savepoint" else ["200 2"]
    assert heard == expected


@pytest.mark.parametrize("how", WAYS)
def test_without_notify_an_announcement_is_delivered_only_when_it_commits(tmp_path: Path, how: str) -> None:
    factory = db.make_session_factory(db.make_engine(f"sqlite:///{tmp_path / 'a.sqlite'}"))
    delivered: list[dict[int, int]] = []
    deliver_after_commit(factory, lambda ids: delivered.append(dict(ids)))
    end_badly(factory, how, 100)
    with db.session_scope(factory) as session:
        announce(session, 200, 2)
    expected = [{101: 1}, {200: 2}] if how == "savepoint" else [{200: 2}]
    assert delivered == expected


def test_after_the_database_restarts_the_listener_sends_the_current_state(tmp_path: Path) -> None:
    """A server of its own: restarting the session's would disturb other tests."""
    server = PostgresServer()
    server.start()
    service = None
    try:
        service = ServiceProcess(tmp_path / "data", create_database(server.url, "restarts"), config=CONFIG)
        service.start("--upgrade-db")
        world = World(service)
        first = world.submit("student").json()["id"]
        assert wait_graded(world.client("tutor"), first)[-1]["auto_status"] == "graded"
        stream = Stream(world.client("tutor"), {"lecture": "ml", "assignment": "tiny"})
        time.sleep(0.5)
        # A change nobody announces (as if its notification was sent while the listener was away).
        with service.engine.begin() as conn:
            conn.execute(update(Submission).where(Submission.id == first).values(score=1.0))
            conn.execute(
                update(GradingJob).where(GradingJob.submission_id == first).values(finished_at=func.now())
            )
        time.sleep(1.0)
        assert stream.events == []  # not heard: it was not announced
        service.engine.dispose()
        server.restart()
        stream.wait(lambda latest: latest.get(first, {}).get("score") == 1.0, timeout=60)
        assert "Event listener reconnected" in service.read_log()
        # The new connection hears new changes.
        second = world.submit("other_student").json()["id"]
        stream.wait(all_final([second]), timeout=120)
        never_stale(stream)
    finally:
        if service is not None:
            service.stop()
            service.engine.dispose()
        server.stop()
