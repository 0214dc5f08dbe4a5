"""The dutserver dialect, driven with exactly the requests dutserver clients send: raw
session tokens and raw `user:pass` in `Authorization`, parameters in the query string."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from taskfleet.core.models import NewTask, Role, TaskStatus
from taskfleet.dialects import dut
from tests.api.conftest import Live, eventually

AGENT = "agent1"
SECRET = "s3cret"
RAW = {"Authorization": f"{AGENT}:{SECRET}"}


async def setup(live: Live) -> tuple[httpx.AsyncClient, str]:
    """An admin logged in through /login, and the agent account."""
    await live.add_account("boss", Role.ADMIN, "pw")
    await live.add_account(AGENT, Role.AGENT, SECRET)
    client = live.client()
    response = await client.post("/login", params={"user": "boss", "pass": "pw"})
    body = response.json()
    assert response.status_code == 200
    assert body["error"] is False and body["msg"] == "Logged in"
    assert len(body["token"]) == 64 and int(body["token"], 16) >= 0
    return client, body["token"]


def error(response: httpx.Response, status: int, msg: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] is True and isinstance(body["msg"], str) and body["msg"]
    if msg is not None:
        assert body["msg"] == msg


async def test_login_and_logout(live: Live) -> None:
    client, token = await setup(live)
    error(
        await client.get("/login", params={"user": "boss", "pass": "nope"}),
        403,
        "Invalid credentials",
    )
    error(
        await client.get("/login", params={"user": AGENT, "pass": SECRET}),
        403,
        "Invalid credentials",
    )
    error(await client.post("/logout"), 400, "Missing Authorization header")
    response = await client.post("/logout", headers={"Authorization": token})
    assert response.json() == {"error": False, "msg": "Logged out"}
    error(await client.get("/agents", headers={"Authorization": token}), 403)


async def test_agents_listing_needs_an_admin(live: Live) -> None:
    client, token = await setup(live)
    response = await client.get("/agents", headers={"Authorization": token})
    assert response.json() == {"error": False, "agents": [AGENT], "online": {AGENT: False}}
    error(await client.get("/agents", headers=RAW), 403, "Authorization failure")
    error(await client.get("/agents"), 403)
    error(await client.delete("/agents", headers={"Authorization": token}), 405)


async def test_self_registration_switch(live: Live, start_server: Any) -> None:
    client, token = await setup(live)
    admin = {"Authorization": token}
    error(
        await client.post("/agents", params={"user": "new", "pass": "pw"}),
        405,
        "Agents self-registration is disabled",
    )
    assert (await client.get("/agents_selfreg", headers=admin)).text == "0"
    error(await client.get("/agents_selfreg", headers=RAW), 403)
    error(await client.post("/agents_selfreg", params={"enabled": "2"}, headers=admin), 400)
    enabled = await client.post("/agent_selfreg", params={"enabled": "1"}, headers=admin)
    assert (enabled.status_code, enabled.content) == (200, b"")
    assert (await client.get("/agent_selfreg", headers=admin)).text == "1"
    error(await client.post("/agents", params={"user": "new"}), 400)
    registered = await client.post("/agents", params={"user": "new", "pass": "pw"})
    assert (registered.status_code, registered.content) == (200, b"")
    polled = await client.post("/events", headers={"Authorization": "new:pw"}, json={"up": 1})
    assert polled.status_code == 200
    # The switch is the stored registration policy: a restarted server still has it on.
    again = await start_server(db=live.settings.db)
    relogin = await again.client().get("/login", params={"user": "boss", "pass": "pw"})
    admin_again = {"Authorization": relogin.json()["token"]}
    assert (await again.client().get("/agents_selfreg", headers=admin_again)).text == "1"


async def test_events(live: Live) -> None:
    client, token = await setup(live)
    posted = await client.post("/events", headers=RAW, content=b'{"kind": "boot"}')
    assert (posted.status_code, posted.content) == (200, b"")
    error(await client.post("/events", headers=RAW, content=b"{nope"), 400, "Invalid JSON")
    error(await client.post("/events", headers={"Authorization": "agent1:bad"}, json={}), 403)
    listed = await client.get("/events", params={"agent": AGENT}, headers={"Authorization": token})
    assert listed.json() == {"error": False, "events": [{"kind": "boot"}], "max_size": 512}
    error(await client.get("/events", headers={"Authorization": token}), 400)
    error(
        await client.get("/events", params={"agent": "ghost"}, headers={"Authorization": token}),
        404,
    )
    native = await client.get(
        f"/api/v1/agents/{AGENT}/events", headers={"Authorization": f"Bearer {token}"}
    )
    assert [e["data"] for e in native.json()] == [{"kind": "boot"}]


@pytest.mark.settings(dut_result_wait_seconds=20, dut_poll_seconds=20)
async def test_a_task_round_trip_returns_as_soon_as_the_result_arrives(live: Live) -> None:
    client, token = await setup(live)
    started = time.monotonic()
    waiting = asyncio.create_task(
        client.post(
            "/tasks",
            params={"target": AGENT},
            headers={"Authorization": token},
            json={"type": "execute_cmd", "cmd": "dir"},
        )
    )
    polled = await client.get("/tasks", headers=RAW)
    events = polled.json()["events"]
    ((task_id, task),) = events.items()
    assert polled.json()["error"] is False and task == {"type": "execute_cmd", "cmd": "dir"}
    done = await client.post(
        "/tasks_result",
        params={"id": task_id},
        headers=RAW,
        json={"status_code": 0, "output": "ok"},
    )
    assert (done.status_code, done.content) == (200, b"")
    answer = await asyncio.wait_for(waiting, 10)
    assert answer.json() == {
        "error": False,
        "result": {"status_code": 0, "output": "ok"},
        "id": int(task_id),
    }
    assert time.monotonic() - started < 10  # far below the 20 s waits


@pytest.mark.settings(dut_poll_seconds=20)
async def test_the_agent_poll_returns_as_soon_as_a_task_is_queued(live: Live) -> None:
    client, token = await setup(live)
    poll = asyncio.create_task(client.get("/tasks", headers=RAW))
    await eventually(lambda: _agent_polling(live))
    queued = await client.post(
        "/tasks",
        params={"target": AGENT, "noWait": "1"},
        headers={"Authorization": token},
        json={"n": 1},
    )
    assert queued.json() == {"error": False, "msg": "Task enqueued", "id": 1}
    polled = await asyncio.wait_for(poll, 10)
    assert polled.json() == {"error": False, "events": {"1": {"n": 1}}}


@pytest.mark.settings(dut_poll_seconds=20)
async def test_a_held_poll_gets_a_broadcast_leased_as_it_is_queued(live: Live) -> None:
    """While the poll waits its agent is on standby: a broadcast hands its task over."""
    await setup(live)
    client = live.client()
    await live.services.agents.set_groups(AGENT, ["duts"])
    poll = asyncio.create_task(client.get("/tasks", headers=RAW))
    await eventually(lambda: _on_standby(live))
    created = await live.services.tasks.broadcast("duts", NewTask(type="dut", payload={"b": 1}))
    assert [(t.status, t.attempt) for t in created] == [(TaskStatus.ACTIVE, 1)]
    polled = await asyncio.wait_for(poll, 10)
    assert polled.json() == {"error": False, "events": {str(created[0].id): {"b": 1}}}


async def _on_standby(live: Live) -> bool:
    return live.services.tasks.on_standby(AGENT)


async def _agent_polling(live: Live) -> bool:
    agent = await live.services.agents.get(AGENT)
    return agent.task_types == ("dut",)


@pytest.mark.settings(dut_poll_seconds=0.2, dut_result_wait_seconds=0.2)
async def test_timeouts_answer_like_the_original(live: Live) -> None:
    client, token = await setup(live)
    assert (await client.get("/tasks", headers=RAW)).json() == {"error": False, "events": []}
    waited = await client.post(
        "/tasks", params={"target": AGENT}, headers={"Authorization": token}, json={"n": 2}
    )
    assert waited.json() == {"error": False, "result": None, "id": 1}
    # A result that arrives with no admin waiting is kept, not dropped.
    polled = await client.get("/tasks", headers=RAW)
    assert list(polled.json()["events"]) == ["1"]
    await client.post("/tasks_result", params={"id": "1"}, headers=RAW, json={"late": True})
    shown = await client.get("/api/v1/tasks/1", headers={"Authorization": f"Bearer {token}"})
    assert shown.json()["status"] == "completed" and shown.json()["result"] == {"late": True}


async def test_bad_task_requests(live: Live) -> None:
    client, token = await setup(live)
    admin = {"Authorization": token}
    error(await client.post("/tasks", headers=admin, json={}), 400, "Missing target parameter")
    error(
        await client.post("/tasks", params={"target": AGENT}, headers=admin, content=b"{"),
        400,
        "Invalid JSON",
    )
    error(
        await client.post(
            "/tasks", params={"target": "ghost", "noWait": "1"}, headers=admin, json={}
        ),
        404,
    )
    error(await client.post("/tasks", params={"target": AGENT}, headers=RAW, json={}), 403)
    error(await client.get("/tasks", headers=admin), 403)
    error(await client.put("/tasks", headers=admin), 400)
    error(await client.post("/tasks_result", params={"id": "x"}, headers=RAW, json={}), 400)
    error(await client.post("/tasks_result", params={"id": "1"}, headers=RAW, content=b"]"), 400)
    error(await client.post("/tasks_result", params={"id": "99"}, headers=RAW, json={}), 404)
    error(await client.get("/tasks_result", params={"id": "1"}, headers=RAW), 405)


@pytest.mark.settings(dut_lease_seconds=0.3, reap_interval=0.05, dut_poll_seconds=5)
async def test_a_task_whose_agent_died_is_delivered_again(live: Live) -> None:
    client, token = await setup(live)
    await client.post(
        "/tasks",
        params={"target": AGENT, "noWait": "1"},
        headers={"Authorization": token},
        json={"job": "reboot"},
    )
    first = await client.get("/tasks", headers=RAW)
    assert first.json()["events"] == {"1": {"job": "reboot"}}
    # The agent "dies" without answering; after the lease the same task comes again.
    second = await client.get("/tasks", headers=RAW)
    assert second.json()["events"] == {"1": {"job": "reboot"}}
    await client.post("/tasks_result", params={"id": "1"}, headers=RAW, json={"ok": True})
    shown = (
        await client.get("/api/v1/tasks/1", headers={"Authorization": f"Bearer {token}"})
    ).json()
    assert (shown["status"], shown["attempt"], shown["result"]) == ("completed", 2, {"ok": True})


async def test_basic_auth_the_dut_prefix_and_the_native_view(live: Live) -> None:
    client, token = await setup(live)
    basic = httpx.BasicAuth(AGENT, SECRET)
    await client.post(
        "/dut/tasks",
        params={"target": AGENT, "noWait": "1"},
        headers={"Authorization": f"Bearer {token}"},
        json={"a": 1},
    )
    polled = await client.get("/dut/tasks", auth=basic)
    assert polled.json()["events"] == {"1": {"a": 1}}
    listed = await client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    (task,) = listed.json()["tasks"]
    assert (task["type"], task["target"], task["payload"]) == ("dut", AGENT, {"a": 1})


def test_the_long_poll_served_ahead_of_the_routes_leaves_raintank_its_paths() -> None:
    assert dut.poll_paths("/raintank/api/v1") == {"/tasks", "/dut/tasks"}
    assert dut.poll_paths("/dut") == {"/tasks"}  # raintank, mounted first, serves /dut/…


@pytest.mark.settings(dut_poll_seconds=0.1)
async def test_the_long_poll_answers_as_the_route_did(live: Live) -> None:
    await setup(live)
    client = live.client()
    for path in ("/tasks", "/dut/tasks"):
        polled = await client.get(path, headers=RAW)
        assert polled.status_code == 200
        assert polled.headers["content-type"] == "application/json"
        assert polled.json() == {"error": False, "events": []}
        error(await client.get(path, headers={"Authorization": "agent1:wrong"}), 403)
        error(await client.get(path), 403, "Authorization failure")
