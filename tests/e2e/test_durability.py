"""Crash safety, end to end: `kill -9` of the server loses neither an accepted task nor a
recorded result (SQLite in WAL mode; a task is on disk before the API answers 201)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.e2e.conftest import AGENT_SECRET, FAST_LEASES, add_agent_account
from tests.e2e.server_process import ServerProcess, poll

TASKS = 5


def claim(agent: httpx.Client, wait: float = 10.0) -> dict[str, object] | None:
    response = agent.post("/agent/claim", params={"wait": wait})
    assert response.status_code in (200, 204), response.text
    return None if response.status_code == 204 else response.json()


def test_accepted_tasks_survive_sigkill_and_are_delivered(server: ServerProcess) -> None:
    add_agent_account(server, "worker-1")
    with server.login() as admin:
        answers = [admin.post("/tasks", json={"type": "echo", "payload": i}) for i in range(TASKS)]
        assert [r.status_code for r in answers] == [201] * TASKS
        submitted = {r.json()[0]["id"]: r.json()[0]["payload"] for r in answers}

        server.restart_after_kill9()  # right after the last 201

        # The session token is in the database too, so the same client still works.
        page = admin.get("/tasks").json()
    assert {t["id"]: t["payload"] for t in page["tasks"]} == submitted
    assert {t["status"] for t in page["tasks"]} == {"queued"}

    with server.agent_client("worker-1", AGENT_SECRET) as agent:
        claimed = [claim(agent) for _ in range(TASKS)]
        assert claim(agent, wait=0) is None
    assert {t["id"]: t["payload"] for t in claimed if t} == submitted
    assert {t["attempt"] for t in claimed if t} == {1}


def test_recorded_result_survives_sigkill(server: ServerProcess) -> None:
    add_agent_account(server, "worker-2")
    agent = server.agent_client("worker-2", AGENT_SECRET)
    with server.login() as admin, agent:
        task_id = admin.post("/tasks", json={"type": "sum", "payload": [40, 2]}).json()[0]["id"]
        task = claim(agent)
        assert task is not None and task["id"] == task_id
        done = {"attempt": task["attempt"], "status": "complete", "result": {"sum": 42}}
        assert agent.post(f"/agent/tasks/{task_id}/result", json=done).status_code == 200

        server.restart_after_kill9()  # right after the result was acknowledged

        found = admin.get(f"/tasks/{task_id}").json()
        assert (found["status"], found["result"]) == ("completed", {"sum": 42})
        # A repeat of the same report (the agent never saw the answer) is accepted once.
        again = agent.post(f"/agent/tasks/{task_id}/result", json=done)
        assert again.status_code == 200 and again.json()["result"] == {"sum": 42}


def test_a_lease_lost_in_a_crash_requeues_and_the_stale_result_is_refused(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(**FAST_LEASES).start()
    add_agent_account(server, "worker-3")
    agent = server.agent_client("worker-3", AGENT_SECRET)
    with server.login() as admin, agent:
        task_id = admin.post("/tasks", json={"type": "job", "max_attempts": 3}).json()[0]["id"]
        first = claim(agent)
        assert first is not None and first["attempt"] == 1

        server.restart_after_kill9()  # the agent's lease runs out while nobody reports

        second = poll(lambda: claim(agent, wait=2.0), "the task to be requeued")
        assert (second["id"], second["attempt"]) == (task_id, 2)
        stale = {"attempt": 1, "status": "complete", "result": "from attempt 1"}
        refused = agent.post(f"/agent/tasks/{task_id}/result", json=stale)
        assert refused.status_code == 409
        assert refused.headers["content-type"].startswith("application/problem+json")
        fresh = {"attempt": 2, "status": "complete", "result": "from attempt 2"}
        assert agent.post(f"/agent/tasks/{task_id}/result", json=fresh).status_code == 200

        server.restart_after_kill9()

        found = admin.get(f"/tasks/{task_id}").json()
    assert (found["status"], found["attempt"], found["result"]) == (
        "completed",
        2,
        "from attempt 2",
    )
