"""The Flamenco dialect, driven exactly as Flamenco Worker 2.5 drives a manager: a whole
worker's life, then each rule the real worker depends on."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from tests.api.conftest import Live
from tests.dialects.flamenco_worker import REGISTRATION_SECRET, Worker, hex_id, log_lines

ECHO_AND_SLEEP = [
    {"name": "echo", "settings": {"message": "hi"}},
    {"name": "sleep", "settings": {"time_in_seconds": 2}},
]
TASK_KEYS = {
    "_id", "job", "manager", "project", "user", "name", "status", "priority", "job_priority",
    "job_type", "task_type", "commands", "activity", "parents", "worker", "failed_by_workers",
}  # fmt: skip


async def open_registration(admin: httpx.AsyncClient) -> None:
    response = await admin.put("/api/v1/registration", json={"policy": "open"})
    assert response.status_code == 200, response.text


async def submit(admin: httpx.AsyncClient, **job: Any) -> dict[str, Any]:
    job.setdefault("name", "a job")
    job.setdefault("tasks", [{"name": "t1", "task_type": "sleep", "commands": ECHO_AND_SLEEP}])
    response = await admin.post("/api/v1/jobs", json=job)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def native(admin: httpx.AsyncClient, path: str) -> Any:
    response = await admin.get(f"/api/v1{path}")
    assert response.status_code == 200, response.text
    return response.json()


async def worker(live: Live, nickname: str = "render-01", **kw: Any) -> Worker:
    found = Worker(live, nickname, **kw)
    assert (await found.register()).status_code == 200
    return found


async def test_a_worker_s_whole_life(live: Live, admin: httpx.AsyncClient) -> None:
    await open_registration(admin)
    me = Worker(live, "render-01")
    registered = await me.register()
    assert registered.status_code == 200
    doc = registered.json()
    assert len(doc["_id"]) == 24 and int(doc["_id"], 16) >= 0
    assert doc["nickname"] == "render-01" and sorted(doc["supported_task_types"]) == sorted(
        me.task_types
    )
    assert doc["status"] == "starting" and doc["software"] == "Flamenco-Worker/2.5"
    assert "secret" not in doc and "hashed_secret" not in doc
    # Nothing queued yet: 204 without a long-poll, within the worker's own 3 s timeout
    # (a held poll would outlast it: this is the protocol's bound, not a speed target).
    started = time.monotonic()
    assert (await me.fetch()).status_code == 204
    assert time.monotonic() - started < 3

    job = await submit(admin, priority=50, type="sleep")
    task = await me.task()
    assert set(task) == TASK_KEYS
    task_id, native_id = task["_id"], job["tasks"][0]["id"]
    assert task_id == hex_id(native_id) and task["job"] == hex_id(job["id"])
    assert task["commands"] == ECHO_AND_SLEEP and task["status"] == "active"
    assert (task["job_priority"], task["job_type"], task["task_type"]) == (50, "sleep", "sleep")
    assert (await me.update(task_id, "active")).status_code == 204
    assert await me.may_i_run(task_id) == {"may_keep_running": True}

    # Activity, progress and log lines land on the engine's task.
    lines = log_lines("echo: Starting", "hi", "sleep: Starting")
    sent = await me.update(
        task_id, activity="starting sleep", current_command_idx=1, log=lines,
        command_progress_percentage=50,
    )  # fmt: skip
    assert sent.status_code == 204
    seen = await native(admin, f"/tasks/{native_id}")
    assert seen["progress"]["activity"] == "starting sleep"
    assert seen["progress"]["percent"] == 75.0  # command 2 of 2, half done
    logfile = await me.send("GET", f"/logfile/{task['job']}/{task_id}")
    assert logfile.text == lines + "\n" and logfile.headers["content-type"].startswith("text/")
    produced = await me.send("POST", "/output-produced", {"paths": ["/render/0001.png"]})
    assert produced.status_code == 204

    # Another worker's update is refused with 409; an unknown task is 404.
    other = await worker(live, "render-02")
    assert (await other.update(task_id, "completed")).status_code == 409
    assert (await me.update(hex_id(native_id + 1000), "active")).status_code == 404
    assert (await other.may_i_run(task_id))["may_keep_running"] is False

    # Asleep, immediately: may-i-run says stop, the worker gives the task back, /task
    # answers 423 until it acks; then awake again.
    await request_status(admin, me, "asleep")
    assert await me.may_i_run(task_id) == {
        "may_keep_running": False,
        "reason": "worker status change requested",
        "status_requested": "asleep",
    }
    assert (await me.send("POST", f"/tasks/{task_id}/return")).status_code == 204
    locked = await me.fetch()
    assert (locked.status_code, locked.json()) == (423, {"status_requested": "asleep"})
    assert (await me.send("GET", "/status-change")).json() == {"status_requested": "asleep"}
    assert (await me.send("POST", "/ack-status-change/asleep")).status_code == 204
    assert (await me.send("GET", "/status-change")).status_code == 204
    assert (await native(admin, f"/agents/{me.id}"))["status"] == "asleep"
    await request_status(admin, me, "awake")
    assert (await me.send("GET", "/status-change")).json() == {"status_requested": "awake"}
    assert (await me.send("POST", "/ack-status-change/awake")).status_code == 204

    # Sign-off puts the active task back in the queue; after sign-on it comes back.
    assert (await me.task())["_id"] == task_id
    assert (await me.send("POST", "/sign-off")).status_code == 204
    assert (await native(admin, f"/tasks/{native_id}"))["status"] == "queued"
    assert (await me.sign_on()).status_code == 204
    again = await me.task()
    assert again["_id"] == task_id
    await me.finish(task_id, "completed", "sleep: done")

    done = await native(admin, f"/tasks/{native_id}")
    assert done["status"] == "completed" and done["attempt"] == 3
    summary = await native(admin, f"/jobs/{job['id']}")
    assert (summary["status"], summary["counts"]) == ("completed", {"completed": 1})
    outputs = await native(admin, f"/jobs/{job['id']}/outputs")
    assert [o["data"] for o in outputs] == [{"paths": ["/render/0001.png"]}]
    logs = await native(admin, f"/tasks/{native_id}/logs")
    assert "".join(c["text"] for c in logs).endswith(": sleep: done\n")


async def request_status(
    admin: httpx.AsyncClient, who: Worker, status: str, lazy: bool = False
) -> None:
    body = {"requested_status": status, "lazy": lazy}
    response = await admin.patch(f"/api/v1/agents/{who.id}", json=body)
    assert response.status_code == 200, response.text


async def test_a_lazy_status_change_waits_for_the_current_task(
    live: Live, admin: httpx.AsyncClient
) -> None:
    await open_registration(admin)
    me = await worker(live)
    await submit(admin)
    task_id = (await me.task())["_id"]
    await request_status(admin, me, "shutdown", lazy=True)

    assert await me.may_i_run(task_id) == {"may_keep_running": True}
    assert (await me.task())["_id"] == task_id  # still its task, no 423 yet
    await me.finish(task_id)
    locked = await me.fetch()
    assert (locked.status_code, locked.json()) == (423, {"status_requested": "shutdown"})
    assert (await me.send("POST", "/ack-status-change/shutdown")).status_code == 204
    assert (await me.send("POST", "/sign-off")).status_code == 204
    # Shutting down answered the request: a restarted worker works again.
    assert (await me.sign_on()).status_code == 204
    assert (await me.fetch()).status_code == 204


async def test_a_sleeping_worker_sleeps_again_after_a_restart(
    live: Live, admin: httpx.AsyncClient
) -> None:
    await open_registration(admin)
    me = await worker(live)
    await request_status(admin, me, "asleep")
    assert (await me.fetch()).status_code == 423
    assert (await me.send("POST", "/ack-status-change/asleep")).status_code == 204
    assert (await me.send("POST", "/sign-off")).status_code == 204
    assert (await me.sign_on()).status_code == 204
    locked = await me.fetch()
    assert (locked.status_code, locked.json()) == (423, {"status_requested": "asleep"})


async def test_credentials_and_task_types(live: Live, admin: httpx.AsyncClient) -> None:
    me = Worker(live, "w")
    refused = await me.register()  # the server's registration policy is closed by default
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/")
    await open_registration(admin)
    me = await worker(live)
    wrong = Worker(live, "x")
    wrong.id, wrong.secret = me.id, "not-the-secret"
    for who in (wrong, Worker(live, "never-registered")):
        answer = await who.sign_on()
        assert answer.status_code == 401 and "Basic" in answer.headers["www-authenticate"]
    assert (await me.send("POST", "/task", auth=None)).status_code == 401
    idle = await worker(live, "no-types", task_types=[])
    assert (await idle.fetch()).status_code == 406
    assert (await me.send("GET", "/task")).status_code == 204  # the seed's GET works too


@pytest.mark.settings(flamenco_registration_secret=REGISTRATION_SECRET)
async def test_a_registration_secret_needs_a_signed_token(live: Live) -> None:
    now = int(time.time())
    good = jwt.encode({"iat": now, "exp": now + 900}, REGISTRATION_SECRET, algorithm="HS256")
    forged = jwt.encode({"iat": now, "exp": now + 900}, "x" * 40, algorithm="HS256")
    stale = jwt.encode({"iat": now - 2000, "exp": now - 1000}, REGISTRATION_SECRET, "HS256")
    no_exp = jwt.encode({"iat": now}, REGISTRATION_SECRET, algorithm="HS256")
    me = Worker(live, "w")
    assert (await me.register()).status_code == 403
    for token in (forged, stale, no_exp, "not.a.jwt"):
        assert (await me.register(Authorization=f"Bearer {token}")).status_code == 403
    # A valid token registers even though the registration policy is closed.
    assert (await me.register(Authorization=f"Bearer {good}")).status_code == 200
    assert (await me.sign_on()).status_code == 204
