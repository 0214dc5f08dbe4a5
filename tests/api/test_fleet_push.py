"""Pushes to idle native websocket agents, which wait on bus subscriptions and the hub's
shared timer instead of polling: with a poll interval of 30 s only wake-ups can deliver."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from taskfleet.core.models import Role
from tests.api.conftest import AGENT_SECRET, Live, eventually, submit

pytestmark = pytest.mark.settings(poll_interval=30.0)


async def _agent(live: Live, stack: AsyncExitStack, name: str) -> ClientConnection:
    """A bare native agent that has said hello."""
    await live.add_account(name, Role.AGENT, AGENT_SECRET)
    url = live.base_url.replace("http://", "ws://") + "/api/v1/agent/ws"
    auth = base64.b64encode(f"{name}:{AGENT_SECRET}".encode()).decode()
    ws = await stack.enter_async_context(
        connect(url, additional_headers={"Authorization": f"Basic {auth}"})
    )
    params = {"version": "t", "platform": "t", "task_types": [], "concurrency": 1}
    await ws.send(json.dumps({"id": "a1", "version": "v1", "method": "hello", "params": params}))
    while (await _next(ws)).get("id") != "a1":
        pass
    return ws


async def _next(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def _request(ws: ClientConnection, method: str) -> dict[str, Any]:
    """The server's next request of this method; answers the others on the way."""
    async for message in _requests(ws):
        if message["method"] == method:
            return message
    raise AssertionError("the connection closed")


async def _requests(ws: ClientConnection) -> AsyncIterator[dict[str, Any]]:
    while True:
        message = await _next(ws)
        if "method" not in message:
            continue
        params = message["params"]
        result = {"status": params["status"]} if message["method"] == "status_change" else {}
        reply = {"id": message["id"], "version": "v1", "result": result}
        await ws.send(json.dumps(reply))
        yield message


async def test_a_broadcast_reaches_every_idle_agent(live: Live, admin: httpx.AsyncClient) -> None:
    names = ["fleet-1", "fleet-2", "fleet-3"]
    async with AsyncExitStack() as stack:
        sockets = [await _agent(live, stack, name) for name in names]
        for name in names:
            await admin.patch(f"/api/v1/agents/{name}", json={"groups": ["all"]})
        body = {"type": "echo", "group": "all", "broadcast": True, "payload": 7}
        response = await admin.post("/api/v1/tasks", json=body)
        assert response.status_code == 201, response.text
        created = {t["target"]: t["id"] for t in response.json()}
        for name, ws in zip(names, sockets, strict=True):
            pushed = await _request(ws, "task.run")
            assert pushed["params"]["task_id"] == created[name]
            assert pushed["params"]["payload"] == 7


async def test_idle_agents_get_a_broadcast_leased_as_it_is_queued(
    live: Live, admin: httpx.AsyncClient
) -> None:
    """Idle agents are on standby: the broadcast inserts their tasks leased to them and
    pushes them, without queueing, waking and claiming (core/standby.py)."""
    names = ["idle-1", "idle-2"]
    async with AsyncExitStack() as stack:
        sockets = [await _agent(live, stack, name) for name in names]
        for name in names:
            await admin.patch(f"/api/v1/agents/{name}", json={"groups": ["idle"]})
        await eventually(lambda: _all_on_standby(live, names))
        body = {"type": "echo", "group": "idle", "broadcast": True, "payload": 8}
        response = await admin.post("/api/v1/tasks", json=body)
        assert response.status_code == 201, response.text
        created = {t["target"]: t for t in response.json()}
        assert {(t["status"], t["attempt"]) for t in created.values()} == {("active", 1)}
        for name, ws in zip(names, sockets, strict=True):
            pushed = await _request(ws, "task.run")
            assert pushed["params"]["task_id"] == created[name]["id"]
            assert pushed["params"]["attempt"] == 1
            result = {"state": "complete", "result": name}
            params = {"task_id": created[name]["id"], "attempt": 1, **result}
            message = {"id": "r1", "version": "v1", "method": "task_status", "params": params}
            await ws.send(json.dumps(message))
            while (await _next(ws)).get("id") != "r1":
                pass
            done = await admin.get(f"/api/v1/tasks/{created[name]['id']}")
            assert done.json()["status"] == "completed" and done.json()["result"] == name


async def test_an_idle_agent_gets_a_plain_submit_leased_as_it_is_queued(
    live: Live, admin: httpx.AsyncClient
) -> None:
    """Not only broadcasts: any task an agent on standby may take is handed over, one
    per agent; what is left is queued, and claimed when a slot comes free."""
    async with AsyncExitStack() as stack:
        ws = await _agent(live, stack, "solo")
        await eventually(lambda: _all_on_standby(live, ["solo"]))
        response = await admin.post("/api/v1/tasks/batch", json={"tasks": [{"type": "echo"}] * 2})
        assert response.status_code == 201, response.text
        first, second = response.json()
        assert (first["status"], first["attempt"]) == ("active", 1)
        assert second["status"] == "queued"
        pushed = await _request(ws, "task.run")
        assert pushed["params"]["task_id"] == first["id"]
        params = {"task_id": first["id"], "attempt": 1, "state": "complete", "result": 1}
        message = {"id": "r1", "version": "v1", "method": "task_status", "params": params}
        await ws.send(json.dumps(message))
        pushed = await _request(ws, "task.run")  # its slot came free: it claims the next
        assert pushed["params"]["task_id"] == second["id"]


async def _all_on_standby(live: Live, names: list[str]) -> bool:
    return all(live.services.tasks.on_standby(name) for name in names)


async def test_status_changes_and_cancels_reach_a_quiet_agent(
    live: Live, admin: httpx.AsyncClient
) -> None:
    async with AsyncExitStack() as stack:
        ws = await _agent(live, stack, "quiet")
        task = await submit(admin, agent="quiet")
        assert (await _request(ws, "task.run"))["params"]["task_id"] == task["id"]

        assert (await admin.post(f"/api/v1/tasks/{task['id']}/cancel")).status_code == 200
        cancel = await _request(ws, "task.cancel")
        assert cancel["params"]["task_id"] == task["id"]

        patched = await admin.patch("/api/v1/agents/quiet", json={"requested_status": "asleep"})
        assert patched.status_code == 200, patched.text
        change = await _request(ws, "status_change")
        assert change["params"]["status"] == "asleep"
