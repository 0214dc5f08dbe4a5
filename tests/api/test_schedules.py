"""Schedules through the native API: task definitions that run every interval on the
agents a route selects, and the tasks their runs create."""

from __future__ import annotations

import httpx

from tests.api.conftest import Live, assert_problem, eventually


async def test_schedule_crud(live: Live, admin: httpx.AsyncClient) -> None:
    await live.agent("host-1")
    body = {
        "name": "nightly",
        "type": "backup",
        "interval": 86400,
        "config": {"paths": ["/etc"]},
        "route": {"kind": "agents", "agents": ["host-1"]},
    }
    response = await admin.post("/api/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["route"] == {"kind": "agents", "tags": [], "agents": ["host-1"]}
    assert created["enabled"] is True and created["assigned_agent"] is None
    assert created["next_run"] > created["created_at"]
    shown = await admin.get(f"/api/v1/schedules/{created['id']}")
    assert shown.json() == created

    changed = {**body, "interval": 3600, "route": {"kind": "tags", "tags": ["db"]}}
    response = await admin.put(f"/api/v1/schedules/{created['id']}", json=changed)
    assert response.status_code == 200, response.text
    assert response.json()["route"] == {"kind": "tags", "tags": ["db"], "agents": []}
    listed = await admin.get("/api/v1/schedules", params={"type": "backup"})
    assert [s["interval"] for s in listed.json()] == [3600]
    assert (await admin.get("/api/v1/schedules", params={"enabled": False})).json() == []

    assert (await admin.delete(f"/api/v1/schedules/{created['id']}")).status_code == 204
    assert_problem(await admin.get(f"/api/v1/schedules/{created['id']}"), 404)
    assert_problem(await admin.delete(f"/api/v1/schedules/{created['id']}"), 404)
    assert_problem(await admin.get(f"/api/v1/schedules/{created['id']}/runs"), 404)


async def test_bad_schedules_are_refused(live: Live, admin: httpx.AsyncClient) -> None:
    good = {"name": "s", "type": "t", "interval": 60}
    for bad in ({**good, "interval": 0}, {**good, "interval": -1}, {**good, "interval": 1.5}):
        assert_problem(await admin.post("/api/v1/schedules", json=bad), 422)
    no_one = {**good, "route": {"kind": "agents", "agents": ["ghost"]}}
    assert_problem(await admin.post("/api/v1/schedules", json=no_one), 404)
    no_tags = {**good, "route": {"kind": "tags"}}
    assert_problem(await admin.post("/api/v1/schedules", json=no_tags), 400)
    assert (await admin.post("/api/v1/schedules", json=good)).status_code == 201
    assert_problem(await admin.post("/api/v1/schedules", json=good), 409)
    agent = await live.agent("a1")
    assert_problem(await agent.get("/api/v1/schedules"), 403)


async def test_an_any_schedule_runs_on_an_online_agent(
    live: Live, admin: httpx.AsyncClient
) -> None:
    worker = await live.agent("worker", hello=True)
    body = {"name": "tick", "type": "echo", "interval": 1, "config": {"say": "hi"}}
    created = (await admin.post("/api/v1/schedules", json=body)).json()
    assert created["assigned_agent"] == "worker"
    claimed = await worker.post("/api/v1/agent/claim", params={"wait": 5})
    assert claimed.status_code == 200, claimed.text
    task = claimed.json()
    assert (task["type"], task["payload"], task["target"]) == ("echo", {"say": "hi"}, "worker")

    async def listed() -> list[dict[str, object]]:
        response = await admin.get(f"/api/v1/schedules/{created['id']}/runs")
        runs: list[dict[str, object]] = response.json()
        return runs

    assert [t["id"] for t in await eventually(listed)] == [task["id"]]
