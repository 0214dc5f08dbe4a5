"""Accounts, agents, groups, registration policy and jobs through /api/v1."""

from __future__ import annotations

import httpx

from tests.api.conftest import Live, assert_problem, claim, submit


async def test_accounts_add_list_remove(live: Live, admin: httpx.AsyncClient) -> None:
    response = await admin.post(
        "/api/v1/accounts", json={"name": "host-9", "role": "agent", "secret": "s3cret"}
    )
    assert response.status_code == 201, response.text
    account = response.json()
    assert account["name"] == "host-9" and account["role"] == "agent" and account["enabled"]

    names = [a["name"] for a in (await admin.get("/api/v1/accounts")).json()]
    assert names == ["host-9", "root"]
    # An agent account comes with its agent record, and can authenticate at once.
    assert (await admin.get("/api/v1/agents/host-9")).status_code == 200
    agent = live.agent_client("host-9", "s3cret")
    assert (await agent.get("/api/v1/me")).json()["name"] == "host-9"

    duplicate = await admin.post(
        "/api/v1/accounts", json={"name": "host-9", "role": "agent", "secret": "x"}
    )
    assert_problem(duplicate, 409)

    assert (await admin.delete("/api/v1/accounts/host-9")).status_code == 204
    assert_problem(await admin.delete("/api/v1/accounts/host-9"), 404)
    assert_problem(await agent.get("/api/v1/me"), 401)
    assert_problem(await admin.get("/api/v1/agents/host-9"), 404)


async def test_remove_account_of_an_agent_that_worked(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    task = await submit(admin)
    claimed = await claim(agent)
    await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/result",
        json={"attempt": claimed["attempt"], "status": "complete", "result": 1},
    )
    await agent.post("/api/v1/events", json={"kind": "booted"})
    assert (await admin.delete("/api/v1/accounts/agent-1")).status_code == 204
    # Its history stays readable.
    assert (await admin.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "completed"


async def test_bad_account_names_and_roles(admin: httpx.AsyncClient) -> None:
    for body in (
        {"name": "", "role": "agent", "secret": "x"},
        {"name": "-dash-first", "role": "agent", "secret": "x"},
        {"name": "has space", "role": "agent", "secret": "x"},
        {"name": "ok", "role": "superuser", "secret": "x"},
        {"name": "ok", "role": "agent", "secret": ""},
        {"name": "ok", "role": "agent"},
    ):
        response = await admin.post("/api/v1/accounts", json=body)
        assert response.status_code in (400, 422), (body, response.text)
        assert_problem(response, response.status_code)


async def test_agents_list_show_patch_delete(live: Live, admin: httpx.AsyncClient) -> None:
    agent = await live.agent("host-1")
    hello = await agent.post(
        "/api/v1/agent/hello",
        json={"version": "1.2", "platform": "linux", "task_types": ["echo"], "tags": ["gpu"]},
    )
    assert hello.status_code == 200
    shown = (await admin.get("/api/v1/agents/host-1")).json()
    assert shown["online"] and shown["status"] == "awake" and shown["version"] == "1.2"
    assert shown["task_types"] == ["echo"] and shown["tags"] == ["gpu"]

    response = await admin.patch(
        "/api/v1/agents/host-1",
        json={
            "tags": ["b", "a", "a"],
            "groups": ["render", "linux"],
            "nickname": "Box",
            "metadata": {"rack": 4},
            "requested_status": "asleep",
            "lazy": True,
        },
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["tags"] == ["a", "b"]
    assert patched["groups"] == ["linux", "render"]
    assert patched["nickname"] == "Box" and patched["metadata"] == {"rack": 4}
    assert patched["requested_status"] == "asleep" and patched["requested_lazy"] is True
    assert (await admin.get("/api/v1/agents")).json() == [patched]

    disabled = await admin.patch("/api/v1/agents/host-1", json={"enabled": False})
    assert disabled.json()["enabled"] is False
    assert (await admin.patch("/api/v1/agents/host-1", json={})).json()["enabled"] is False

    assert (await admin.delete("/api/v1/agents/host-1")).status_code == 204
    assert_problem(await admin.get("/api/v1/agents/host-1"), 404)
    assert_problem(await admin.delete("/api/v1/agents/host-1"), 404)
    assert_problem(await admin.patch("/api/v1/agents/host-1", json={"enabled": True}), 404)


async def test_delete_agent_that_ran_tasks(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    task = await submit(admin, agent="agent-1")
    await claim(agent)
    await agent.post("/api/v1/events", json={"hello": 1})
    response = await admin.delete("/api/v1/agents/agent-1")
    assert response.status_code == 204, response.text
    assert (await admin.get(f"/api/v1/tasks/{task['id']}")).status_code == 200


async def test_agent_patch_refuses_bad_values(live: Live, admin: httpx.AsyncClient) -> None:
    await live.agent("host-1")
    for body in (
        {"tags": "gpu"},
        {"tags": ["has space"]},
        {"groups": [""]},
        {"enabled": "maybe"},
        {"requested_status": "dancing"},
        {"colour": "red"},
    ):
        response = await admin.patch("/api/v1/agents/host-1", json=body)
        assert response.status_code in (400, 422), (body, response.text)
        assert_problem(response, response.status_code)


async def test_groups(live: Live, admin: httpx.AsyncClient) -> None:
    response = await admin.post("/api/v1/groups", json={"name": "render"})
    assert response.status_code == 201
    assert response.json()["name"] == "render"
    assert_problem(await admin.post("/api/v1/groups", json={"name": "render"}), 409)
    assert_problem(await admin.post("/api/v1/groups", json={"name": "bad name"}), 400)

    for name in ("host-1", "host-2"):
        await live.agent(name)
        await admin.patch(f"/api/v1/agents/{name}", json={"groups": ["render"]})
    members = (await admin.get("/api/v1/groups/render/members")).json()
    assert [m["name"] for m in members] == ["host-1", "host-2"]
    assert [g["name"] for g in (await admin.get("/api/v1/groups")).json()] == ["render"]

    assert (await admin.delete("/api/v1/groups/render")).status_code == 204
    assert (await admin.get("/api/v1/groups")).json() == []
    assert (await admin.get("/api/v1/agents/host-1")).json()["groups"] == []
    assert_problem(await admin.delete("/api/v1/groups/render"), 404)


async def test_registration_closed_by_default(live: Live, admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/api/v1/registration")).json() == {"policy": "closed"}
    response = await live.client().post("/api/v1/register", json={"name": "newbie", "secret": "pw"})
    assert_problem(response, 403)
    assert_problem(await admin.get("/api/v1/agents/newbie"), 404)


async def test_registration_open(live: Live, admin: httpx.AsyncClient) -> None:
    response = await admin.put("/api/v1/registration", json={"policy": "open"})
    assert response.json() == {"policy": "open"}
    response = await live.client().post("/api/v1/register", json={"name": "newbie", "secret": "pw"})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "newbie" and response.json()["enabled"] is True
    newbie = live.agent_client("newbie", "pw")
    assert (await newbie.get("/api/v1/me")).json() == {"name": "newbie", "role": "agent"}
    again = await live.client().post("/api/v1/register", json={"name": "newbie", "secret": "x"})
    assert_problem(again, 409)


async def test_registration_with_approval(live: Live, admin: httpx.AsyncClient) -> None:
    await admin.put("/api/v1/registration", json={"policy": "approval"})
    response = await live.client().post("/api/v1/register", json={"name": "newbie", "secret": "pw"})
    assert response.status_code == 201
    assert response.json()["enabled"] is False
    newbie = live.agent_client("newbie", "pw")
    task = await submit(admin, agent="newbie")

    # Not approved yet: no work, not even work addressed to it.
    assert (await newbie.post("/api/v1/agent/claim", params={"wait": 0})).status_code == 204

    await admin.patch("/api/v1/agents/newbie", json={"enabled": True})
    assert (await claim(newbie))["id"] == task["id"]


async def test_registration_policy_refuses_unknown(admin: httpx.AsyncClient) -> None:
    assert_problem(await admin.put("/api/v1/registration", json={"policy": "maybe"}), 422)
    assert_problem(await admin.put("/api/v1/registration", json={}), 422)


async def test_token_registration_is_refused_clearly(live: Live, admin: httpx.AsyncClient) -> None:
    await admin.put("/api/v1/registration", json={"policy": "token"})
    response = await live.client().post("/api/v1/register", json={"name": "n", "secret": "pw"})
    assert "token" in assert_problem(response, 403)["detail"]


async def test_jobs(admin: httpx.AsyncClient, agent: httpx.AsyncClient) -> None:
    response = await admin.post(
        "/api/v1/jobs", json={"name": "render shot 1", "type": "blender", "settings": {"fps": 24}}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["settings"] == {"fps": 24} and created["priority"] == 0
    assert (created["tasks"], created["total"], created["status"]) == ([], 0, "queued")
    job = {k: v for k, v in created.items() if k != "tasks"}
    assert (await admin.get(f"/api/v1/jobs/{job['id']}")).json() == job
    assert (await admin.get("/api/v1/jobs")).json() == [job]
    assert_problem(await admin.get("/api/v1/jobs/999"), 404)

    task = await submit(admin, job_id=job["id"])
    await submit(admin)
    page = (await admin.get("/api/v1/tasks", params={"job": job["id"]})).json()
    assert [t["id"] for t in page["tasks"]] == [task["id"]]
    assert page["tasks"][0]["job_id"] == job["id"]
    counted = (await admin.get(f"/api/v1/jobs/{job['id']}")).json()
    assert (counted["total"], counted["counts"]) == (1, {"queued": 1})


async def test_task_in_unknown_job_is_refused(admin: httpx.AsyncClient) -> None:
    response = await admin.post("/api/v1/tasks", json={"type": "echo", "job_id": 12345})
    assert_problem(response, 404)


async def test_events(live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient) -> None:
    for n in range(3):
        response = await agent.post("/api/v1/events", json={"n": n})
        assert response.status_code == 201
        assert response.json()["data"] == {"n": n}
    events = (await admin.get("/api/v1/agents/agent-1/events")).json()
    assert [e["data"]["n"] for e in events] == [0, 1, 2]
    newest = (await admin.get("/api/v1/agents/agent-1/events", params={"limit": 2})).json()
    assert [e["data"]["n"] for e in newest] == [1, 2]
    assert_problem(await admin.post("/api/v1/events", json={"n": 1}), 403)
    assert_problem(await agent.get("/api/v1/agents/agent-1/events"), 403)
