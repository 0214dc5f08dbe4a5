"""The raintank dialect against a real server: the seed's REST calls with byte-compatible
envelopes, and agents that frame, parse and decode exactly as task-agent-ng does (any
message that would crash the real agent fails the test, see task_agent.py)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from taskfleet import config
from taskfleet.core.models import Role
from taskfleet.dialects.raintank.wire import go_json, go_time, go_time_string
from tests.api.conftest import Live, eventually
from tests.dialects.task_agent import (
    GO_TIME_STRING,
    AgentCrash,
    TaskAgent,
    decode_task,
    parse_frame,
)

T = TypeVar("T")

KEY = "EASY"
PREFIX = "/raintank/api/v1"
AUTH = {"Authorization": f"Bearer {KEY}"}
SETTINGS: dict[str, Any] = {
    "raintank_admin_key": KEY,
    "raintank_heartbeat_seconds": 0.2,
    "schedule_tick_seconds": 0.05,
    "schedule_move_after_seconds": 0.2,
}
TIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z"
SEED_TASK = {
    "name": "example-task-1",
    "metrics": {"/example-task/*": 0},
    "config": {"/example-task": {"param1": "value1", "param2": "value2"}},
    "interval": 300,
    "route": {"type": "any"},
    "enabled": True,
}
BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
SEED_MULTIPART = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\nagent2\r\n--{BOUNDARY}--'
).encode()

Dial = Callable[..., Awaitable[TaskAgent]]


def shape(template: str) -> re.Pattern[str]:
    """A pattern for exactly these bytes, with `<TIME>` standing for any Go RFC3339Nano."""
    return re.compile(re.escape(template).replace(re.escape('"<TIME>"'), f'"{TIME}"') + "$")


@pytest.fixture
async def server(start_server: Callable[..., Awaitable[Live]]) -> Live:
    return await start_server(**SETTINGS)


@pytest.fixture
async def dial(start_server: Any) -> AsyncIterator[Dial]:
    """`await dial(live, name)` connects a task-agent-ng; every connection is checked for
    crashes at the end of the test."""
    opened: list[TaskAgent] = []

    async def connect(live: Live, name: str, key: str = KEY, prefix: str = PREFIX) -> TaskAgent:
        agent = await TaskAgent.connect(live.base_url + prefix, name, key)
        opened.append(agent)
        return agent

    yield connect
    for agent in opened:
        await agent.close()
    for agent in opened:
        agent.check()


def api(live: Live) -> httpx.AsyncClient:
    return live.client(headers=AUTH)


def ok(response: httpx.Response, kind: str) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    data = response.json()
    assert data["meta"] == {"code": 200, "message": "success", "type": kind}, data
    return data["body"]


def failed(response: httpx.Response, code: int, status: int = 200, match: str = "") -> str:
    assert response.status_code == status, response.text
    assert response.json() == {
        "meta": {"code": code, "message": response.json()["meta"]["message"], "type": "error"},
        "body": None,
    }
    message: str = response.json()["meta"]["message"]
    assert message and re.search(match, message), message
    return message


async def until(check: Callable[[], T], *agents: TaskAgent, timeout: float = 10.0) -> T:
    """Waits for `check()` to be truthy, failing at once if an agent would have crashed."""

    async def probe() -> T:
        for agent in agents:
            agent.check()
        return check()

    return await eventually(probe, timeout)


async def add_agent(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(
        await client.post(f"{PREFIX}/agents", json={"name": name, **fields}), "agent"
    )
    return body


async def add_task(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    task = {"interval": 60, "config": {"/raintank/apps/ns1": {"zone": "a"}}, "enabled": True}
    task.update(fields)
    body: dict[str, Any] = ok(await client.post(f"{PREFIX}/tasks", json=task), "task")
    return body


async def barrier(client: httpx.AsyncClient, agent: TaskAgent, agent_id: int, name: str) -> None:
    """Routes a fresh task to the agent and waits for it: every change made before has
    reached the agent by then (each sync reads all of the agent's tasks)."""
    task = await add_task(client, name=name, route={"type": "byIds", "config": {"ids": [agent_id]}})
    await until(lambda: task["id"] in agent.tasks, agent)


# -- the seed's REST calls ---------------------------------------------------------------------


async def test_seed_registers_an_agent_with_multipart(server: Live) -> None:
    headers = [
        ("Content-Type", f"multipart/form-data; boundary={BOUNDARY}"),
        ("Content-Type", "application/x-www-form-urlencoded"),  # the seed's Go client adds it
        ("Authorization", f"Bearer {KEY}"),
        ("Cache-Control", "no-cache"),
    ]
    response = await server.client().post(
        f"{PREFIX}/agents", content=SEED_MULTIPART, headers=headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    expected = shape(
        '{"meta":{"code":200,"message":"success","type":"agent"},"body":{"id":1,'
        '"name":"agent2","enabled":false,"enabledChange":"0001-01-01T00:00:00Z",'
        '"public":false,"tags":null,"online":false,"onlineChange":"0001-01-01T00:00:00Z",'
        '"created":"<TIME>","updated":"<TIME>"}}'
    )
    assert expected.match(response.text), response.text


async def test_agents_are_created_from_forms_and_json_too(server: Live) -> None:
    client = api(server)
    form = await client.post(
        f"{PREFIX}/agents/", data={"name": "formed", "enabled": "true", "tags": ["a", "b"]}
    )
    assert ok(form, "agent")["tags"] == ["a", "b"]
    assert ok(form, "agent")["enabled"] is True
    created = await add_agent(client, "jsoned", public=True, tags=["x"])
    assert (created["public"], created["tags"], created["enabled"]) == (True, ["x"], False)
    shown = ok(await client.get(f"{PREFIX}/agents/{created['id']}"), "agent")
    assert shown["public"] is True and shown["tags"] == ["x"] and shown["online"] is False
    failed(await client.post(f"{PREFIX}/agents", json={"name": "jsoned"}), 409, match="exists")
    failed(
        await client.post(f"{PREFIX}/agents", data={"name": "bad name!"}),
        400,
        status=400,
        match=r"\^\[0-9a-zA-Z_-\]\+\$",
    )
    failed(await client.post(f"{PREFIX}/agents", json={}), 400, status=400, match="required")
    failed(
        await client.post(
            f"{PREFIX}/agents", content=b"{", headers={"content-type": "application/json"}
        ),
        400,
    )


async def test_seed_creates_a_task_and_the_agent_gets_the_same_bytes(
    server: Live, dial: Dial
) -> None:
    client = api(server)
    await add_agent(client, "agent1")
    agent = await dial(server, "agent1")
    await until(lambda: agent.named("taskList") == [b"null"], agent)

    response = await server.client().post(
        f"{PREFIX}/tasks",
        content=json.dumps(SEED_TASK),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    expected = shape(
        '{"meta":{"code":200,"message":"success","type":"task"},"body":{"id":1,'
        '"name":"example-task-1","taskType":"/example-task","orgId":1,"config":'
        '{"/example-task":{"param1":"value1","param2":"value2"}},"interval":300,'
        '"route":{"type":"any","config":{}},"enabled":true,"created":"<TIME>",'
        '"updated":"<TIME>"}}'
    )
    assert expected.match(response.text), response.text
    body = response.text[response.text.index('"body":') + 7 : -1].encode()
    await until(lambda: agent.named("taskAdd"), agent)
    assert agent.named("taskAdd") == [body]
    assert agent.tasks[1]["name"] == "example-task-1"


async def test_heartbeat_routes_and_events(server: Live, dial: Dial) -> None:
    client = api(server)
    empty = '{"meta":{"code":200,"message":"success","type":"heartbeat"},"body":null}'
    for path in (PREFIX, PREFIX + "/"):
        response = await client.get(path)
        assert response.status_code == 200 and response.text == empty
    await add_agent(client, "beat")
    agent = await dial(server, "beat")
    beats = await until(lambda: agent.named("heartbeat")[2:], agent)
    assert all(GO_TIME_STRING.match(b.decode()) for b in beats)


async def test_errors_come_in_the_envelope(server: Live) -> None:
    anonymous = server.client()
    failed(await anonymous.get(f"{PREFIX}/agents"), 401, status=401, match="Unauthorized")
    wrong = server.client(headers={"Authorization": "Bearer nope"})
    failed(await wrong.get(f"{PREFIX}/tasks"), 401, status=401)
    client = api(server)
    failed(await client.get(f"{PREFIX}/agents/99"), 404, match="^agent not found$")
    failed(await client.get(f"{PREFIX}/agents/abc"), 404)
    failed(await client.delete(f"{PREFIX}/agents/99"), 404)
    failed(await client.get(f"{PREFIX}/tasks/99"), 404, status=404, match="^task not found$")
    bad_route = {**SEED_TASK, "route": {"type": "nearest"}}
    failed(await client.post(f"{PREFIX}/tasks", json=bad_route), 400, match="unknown route")
    bad_tags = {**SEED_TASK, "route": {"type": "byTags", "config": {"ids": [1]}}}
    failed(await client.post(f"{PREFIX}/tasks", json=bad_tags), 400, match="invalid route")
    failed(await client.post(f"{PREFIX}/tasks", json={**SEED_TASK, "config": {"a": 1}}), 400)
    failed(await client.post(f"{PREFIX}/tasks", json={**SEED_TASK, "name": ""}), 400)
    failed(await client.post(f"{PREFIX}/tasks", content=b"[1,"), 400, match="JSON")
    ok(await client.post(f"{PREFIX}/tasks", json=SEED_TASK), "task")
    failed(await client.post(f"{PREFIX}/tasks", json=SEED_TASK), 409, match="task named")
    by_id = {**SEED_TASK, "name": "x", "route": {"type": "byIds", "config": {"ids": [77]}}}
    failed(await client.post(f"{PREFIX}/tasks", json=by_id), 404, match="no agent with id 77")
    failed(await client.put(f"{PREFIX}/tasks", json={**SEED_TASK, "id": 42}), 404, match="task not")
    failed(await client.put(f"{PREFIX}/tasks", json=SEED_TASK), 400, match="id not set")


@pytest.mark.parametrize("interval", [0, -300, None, 1.5, "300"])
async def test_an_interval_the_agent_cannot_run_is_refused(server: Live, interval: Any) -> None:
    client = api(server)
    task = {**SEED_TASK, "interval": interval}
    failed(await client.post(f"{PREFIX}/tasks", json=task), 400, match="interval")
    created = ok(await client.post(f"{PREFIX}/tasks", json=SEED_TASK), "task")
    update = {**SEED_TASK, "id": created["id"], "interval": interval}
    failed(await client.put(f"{PREFIX}/tasks", json=update), 400, match="interval")
    assert ok(await client.get(f"{PREFIX}/tasks/{created['id']}"), "task")["interval"] == 300


async def test_keys_native_api_keys_and_admin_sessions_are_accepted(
    start_server: Callable[..., Awaitable[Live]],
) -> None:
    live = await start_server(api_keys=("native-key",))  # no raintank admin key set
    failed(await api(live).get(f"{PREFIX}/agents"), 401, status=401)
    native = live.client(headers={"Authorization": "Bearer native-key"})
    assert ok(await native.get(f"{PREFIX}/agents"), "agents") == []
    session = await live.admin()
    assert ok(await session.get(f"{PREFIX}/tasks"), "tasks") is None
    await live.add_account("a1", Role.AGENT, "pw")
    agent_session = await live.login("a1", "pw")
    failed(await agent_session.get(f"{PREFIX}/agents"), 403, status=403)


# -- agents and tasks over REST, as the agents see them ----------------------------------------


async def test_agent_update_list_and_delete_which_closes_its_socket(
    server: Live, dial: Dial
) -> None:
    client = api(server)
    a1 = await add_agent(client, "a1", tags=["eu"])
    await add_agent(client, "b2", public=True)
    agent = await dial(server, "a1")
    await until(lambda: agent.named("taskList"), agent)
    listed = ok(await client.get(f"{PREFIX}/agents"), "agents")
    assert [(a["name"], a["online"]) for a in listed] == [("a1", True), ("b2", False)]
    assert re.fullmatch(TIME, listed[0]["onlineChange"])
    by_tag = ok(await client.get(f"{PREFIX}/agents", params={"tag": "eu"}), "agents")
    assert [a["name"] for a in by_tag] == ["a1"]
    public = ok(await client.get(f"{PREFIX}/agents", params={"public": "true"}), "agents")
    assert [a["name"] for a in public] == ["b2"]
    paged = ok(await client.get(f"{PREFIX}/agents?orderBy=id&limit=1&page=2"), "agents")
    assert [a["name"] for a in paged] == ["b2"]

    change = {"id": a1["id"], "name": "a1", "enabled": True, "tags": ["eu", "dns"]}
    updated = ok(await client.put(f"{PREFIX}/agents", json=change), "agent")
    assert updated["tags"] == ["dns", "eu"] and updated["enabled"] is True
    rename = {**change, "name": "other"}
    failed(await client.put(f"{PREFIX}/agents", json=rename), 400, match="renamed")

    assert ok(await client.delete(f"{PREFIX}/agents/{a1['id']}"), "agent") is None
    await until(agent.closed.is_set, agent)
    failed(await client.get(f"{PREFIX}/agents/{a1['id']}"), 404)


async def test_task_crud_reaches_the_agent(server: Live, dial: Dial) -> None:
    client = api(server)
    a1 = await add_agent(client, "a1")
    agent = await dial(server, "a1")
    route = {"type": "byIds", "config": {"ids": [a1["id"]]}}
    task = await add_task(client, name="ping", route=route, interval=30)
    await until(lambda: task["id"] in agent.tasks, agent)

    listed = ok(await client.get(f"{PREFIX}/tasks"), "tasks")
    assert [t["id"] for t in listed] == [task["id"]]
    for query in ({"name": "pi%"}, {"metric": "/raintank/apps/ns1/*"}, {"enabled": "true"}):
        assert len(ok(await client.get(f"{PREFIX}/tasks", params=query), "tasks")) == 1
    assert ok(await client.get(f"{PREFIX}/tasks", params={"enabled": "false"}), "tasks") is None

    changed = {**task, "interval": 90}
    updated = ok(await client.put(f"{PREFIX}/tasks/", json=changed), "task")
    assert updated["interval"] == 90 and updated["updated"] != task["updated"]
    await until(lambda: agent.tasks[task["id"]]["interval"] == 90, agent)
    assert len(agent.named("taskUpdate")) == 1

    disabled = ok(await client.put(f"{PREFIX}/tasks", json={**changed, "enabled": False}), "task")
    assert disabled["enabled"] is False
    await until(lambda: task["id"] not in agent.tasks, agent)
    await client.put(f"{PREFIX}/tasks", json={**changed, "enabled": True})
    await until(lambda: task["id"] in agent.tasks, agent)

    assert ok(await client.delete(f"{PREFIX}/tasks/{task['id']}"), "task") is None
    await until(lambda: not agent.tasks, agent)
    removed = json.loads(agent.named("taskRemove")[-1])
    assert removed["id"] == task["id"] and removed["name"] == "ping"
    assert ok(await client.delete(f"{PREFIX}/tasks/{task['id']}"), "task") is None


async def test_task_list_is_sent_periodically(
    start_server: Callable[..., Awaitable[Live]], dial: Dial
) -> None:
    live = await start_server(**SETTINGS, raintank_task_list_seconds=0.2)
    client = api(live)
    a1 = await add_agent(client, "a1")
    agent = await dial(live, "a1")
    task = await add_task(client, name="t", route={"type": "byIds", "config": {"ids": [a1["id"]]}})
    lists = await until(lambda: agent.named("taskList")[3:], agent)
    assert [t["id"] for t in json.loads(lists[-1])] == [task["id"]]


# -- routes ----------------------------------------------------------------------------------


async def test_any_route_moves_when_its_agent_disconnects(server: Live, dial: Dial) -> None:
    client = api(server)
    await add_agent(client, "a1")
    await add_agent(client, "a2")
    agents = {"a1": await dial(server, "a1"), "a2": await dial(server, "a2")}
    await until(lambda: all(a.named("taskList") for a in agents.values()), *agents.values())
    task = await add_task(client, name="anywhere", route={"type": "any"})

    def holders() -> list[str]:
        return [name for name, a in agents.items() if task["id"] in a.tasks]

    (holder,) = await until(holders, *agents.values())
    other = "a2" if holder == "a1" else "a1"
    await agents[holder].close()  # the agent goes away: after a grace, `any` moves the task
    await until(lambda: task["id"] in agents[other].tasks, agents[other])
    listed = ok(await client.get(f"{PREFIX}/agents", params={"name": holder}), "agents")
    assert listed[0]["online"] is False


async def test_by_tags_follows_the_agents_tags(server: Live, dial: Dial) -> None:
    client = api(server)
    a1 = await add_agent(client, "a1")
    agent = await dial(server, "a1")
    tagged = await add_task(
        client, name="dns", route={"type": "byTags", "config": {"tags": ["dns"]}}
    )
    await barrier(client, agent, a1["id"], "barrier")
    assert tagged["id"] not in agent.tasks

    await client.put(f"{PREFIX}/agents", json={"id": a1["id"], "name": "a1", "tags": ["dns"]})
    await until(lambda: tagged["id"] in agent.tasks, agent)
    await client.put(f"{PREFIX}/agents", json={"id": a1["id"], "name": "a1", "tags": ["web"]})
    await until(lambda: tagged["id"] not in agent.tasks, agent)
    assert json.loads(agent.named("taskRemove")[-1])["id"] == tagged["id"]


async def test_by_ids_follows_the_route(server: Live, dial: Dial) -> None:
    client = api(server)
    a1, a2 = await add_agent(client, "a1"), await add_agent(client, "a2")
    first, second = await dial(server, "a1"), await dial(server, "a2")
    task = await add_task(client, name="t", route={"type": "byIds", "config": {"ids": [a1["id"]]}})
    await until(lambda: task["id"] in first.tasks, first)
    await barrier(client, second, a2["id"], "barrier")
    assert task["id"] not in second.tasks

    moved = {**task, "route": {"type": "byIds", "config": {"ids": [a2["id"]]}}}
    ok(await client.put(f"{PREFIX}/tasks", json=moved), "task")
    await until(lambda: task["id"] in second.tasks and task["id"] not in first.tasks, first, second)
    both = {**task, "route": {"type": "byIds", "config": {"ids": [a2["id"], a1["id"]]}}}
    shown = ok(await client.put(f"{PREFIX}/tasks", json=both), "task")
    assert shown["route"] == {"type": "byIds", "config": {"ids": sorted([a1["id"], a2["id"]])}}
    await until(lambda: task["id"] in second.tasks and task["id"] in first.tasks, first, second)


async def test_schedules_the_agent_cannot_decode_are_not_sent(server: Live, dial: Dial) -> None:
    client = api(server)
    a1 = await add_agent(client, "a1")
    agent = await dial(server, "a1")
    admin = await server.admin()
    native = {"name": "flat", "type": "echo", "interval": 5, "config": {"n": 1}}
    native["route"] = {"kind": "agents", "agents": ["a1"]}
    response = await admin.post("/api/v1/schedules", json=native)
    assert response.status_code == 201, response.text
    await barrier(client, agent, a1["id"], "barrier")
    assert len(agent.tasks) == 1


# -- the socket's handshake ----------------------------------------------------------------------


async def test_unknown_agents_are_refused_unless_auto_create_is_on(
    start_server: Callable[..., Awaitable[Live]], dial: Dial
) -> None:
    live = await start_server(**SETTINGS)
    with pytest.raises(InvalidStatus) as refused:
        await dial(live, "stranger")
    assert refused.value.response.status_code == 400
    body = json.loads(refused.value.response.body)
    assert body["meta"]["code"] == 400 and "not registered" in body["meta"]["message"]
    with pytest.raises(InvalidStatus) as unauthorized:
        await dial(live, "stranger", key="wrong")
    assert unauthorized.value.response.status_code == 401

    open_live = await start_server(**SETTINGS, raintank_auto_create_agents=True)
    agent = await dial(open_live, "stranger")
    await until(lambda: agent.named("taskList") == [b"null"], agent)
    (created,) = ok(await api(open_live).get(f"{PREFIX}/agents"), "agents")
    assert (created["name"], created["enabled"], created["public"]) == ("stranger", True, True)


async def test_served_where_the_original_was(
    start_server: Callable[..., Awaitable[Live]], dial: Dial
) -> None:
    live = await start_server(**SETTINGS, raintank_prefix="/api/v1")
    heartbeat = await live.client().get("/")
    assert (
        heartbeat.text == '{"meta":{"code":200,"message":"success","type":"heartbeat"},"body":null}'
    )
    client = api(live)
    ok(await client.get("/api/v1/"), "heartbeat")
    created = ok(await client.post("/api/v1/agents", data={"name": "agent1"}), "agent")
    agent = await dial(live, "agent1", prefix="/api/v1")
    await until(lambda: agent.named("taskList"), agent)
    listed = ok(await client.get("/api/v1/agents"), "agents")
    assert [(a["id"], a["online"]) for a in listed] == [(created["id"], True)]
    login = await live.client().post("/api/v1/login", json={"name": "x", "secret": "y"})
    assert login.status_code == 401  # the native API's other routes are still there


async def test_served_under_a_native_path_it_answers_the_paths_both_have(
    start_server: Callable[..., Awaitable[Live]],
) -> None:
    """Raintank's routes come after the native ones unless it is served at or under
    /api/v1; there, as at /api/v1, a path both have is raintank's."""
    live = await start_server(**SETTINGS, raintank_prefix="/api/v1/tasks")
    client = api(live)
    ok(await client.post("/api/v1/tasks/agents", data={"name": "agent1"}), "agent")
    # Also native `GET /api/v1/tasks/{task_id}`, which would refuse "agents" as an id.
    (listed,) = ok(await client.get("/api/v1/tasks/agents"), "agents")
    assert listed["name"] == "agent1"
    admin = await live.admin()
    assert (await admin.get("/api/v1/tasks")).status_code == 200  # native where only it is


# -- native agents on the same schedules ---------------------------------------------------------


async def test_native_agents_get_one_task_per_interval(server: Live, dial: Dial) -> None:
    client = api(server)
    native = await server.agent("n1", hello=True)
    raintank = await add_agent(client, "rt")
    agent = await dial(server, "rt")
    (n1,) = ok(await client.get(f"{PREFIX}/agents", params={"name": "n1"}), "agents")
    route = {"type": "byIds", "config": {"ids": [n1["id"], raintank["id"]]}}
    task = await add_task(client, name="every-second", interval=1, route=route)
    await until(lambda: task["id"] in agent.tasks, agent)
    admin = await server.admin()

    async def runs(count: int) -> list[dict[str, Any]] | None:
        response = await admin.get(f"/api/v1/schedules/{task['id']}/runs")
        found: list[dict[str, Any]] = response.json()
        return found if len(found) >= count else None

    (first,) = await eventually(lambda: runs(1))
    assert (first["target"], first["type"], first["payload"]) == (
        "n1",
        "/raintank/apps/ns1",
        {"/raintank/apps/ns1": {"zone": "a"}},
    )
    claimed = (await native.post("/api/v1/agent/claim", params={"wait": 5})).json()
    assert claimed["id"] == first["id"]
    result = {"attempt": claimed["attempt"], "status": "complete", "result": {"rtt": 12}}
    done = await native.post(f"/api/v1/agent/tasks/{first['id']}/result", json=result)
    assert done.status_code == 200, done.text

    finished, second = await eventually(lambda: runs(2))
    assert finished["status"] == "completed" and finished["result"] == {"rtt": 12}
    assert second["target"] == "n1" and second["status"] == "queued"
    assert all(t["target"] == "n1" for t in await runs(2) or [])


async def test_statsd_packets(start_server: Callable[..., Awaitable[Live]], dial: Dial) -> None:
    received: list[str] = []

    class Collector(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            received.extend(data.decode().splitlines())

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        live = await start_server(
            **SETTINGS, statsd_enabled=True, statsd_addr=f"127.0.0.1:{port}", statsd_interval=0.05
        )
        await add_agent(api(live), "a1")
        agent = await dial(live, "a1")
        native = await live.agent("n1", hello=True)
        admin = await live.admin()
        assert (await admin.post("/api/v1/tasks", json={"type": "echo"})).status_code == 201
        assert (await native.post("/api/v1/agent/claim")).status_code == 200

        def totals() -> dict[str, float]:
            sums: dict[str, float] = {}
            for line in received:
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                sums[name] = sums.get(name, 0) + float(value) if kind == "c" else float(value)
            return sums

        def reported() -> bool:
            seen = totals()
            return (
                seen.get("taskfleet.tasks.created") == 1
                and seen.get("taskfleet.tasks.claimed") == 1
                and seen.get("taskfleet.tasks.active") == 1
                and seen.get("taskfleet.agents.connected") == 1
            )

        await until(reported, agent)
    finally:
        transport.close()


# -- the wire format itself ------------------------------------------------------------------------


def test_go_json_is_what_go_writes() -> None:
    value = {"b": [1.0, 0.5, 1e21, 1.5e-7, -0.0, 10**20 * 1.0], "a": "<&>\u2028é\n"}
    assert go_json(value) == (
        '{"a":"\\u003c\\u0026\\u003e\\u2028é\\n","b":[1,0.5,1e+21,1.5e-7,-0,100000000000000000000]}'
    )
    assert go_json([None, True, 3]) == "[null,true,3]"


def test_go_times() -> None:
    assert go_time(None) == "0001-01-01T00:00:00Z"
    assert go_time(1521691391.161804) == "2018-03-22T04:03:11.161804Z"
    assert go_time(1521691391.0) == "2018-03-22T04:03:11Z"
    assert go_time(1521691391.5) == "2018-03-22T04:03:11.5Z"
    text = go_time_string(1521259757.25672, 2.532669118)
    assert text == "2018-03-17 04:09:17.25672 +0000 UTC m=+2.532669118"
    assert GO_TIME_STRING.match(text)


@pytest.mark.parametrize(
    "message",
    [
        "taskList null",
        b"\x00\x04ping",
        b"\x01\x08taskListnull",
        b"\x00\x00taskListnull",
        b"\x00\xfftaskListnull",
    ],
    ids=["text", "short", "version", "no-name", "long-name"],
)
def test_the_agent_double_catches_what_crashes_task_agent_ng(message: str | bytes) -> None:
    with pytest.raises(AgentCrash):
        parse_frame(message)


def test_the_agent_double_refuses_tasks_task_agent_ng_cannot_run() -> None:
    good = {"id": 1, "interval": 60, "route": {"type": "any", "config": {}}, "config": {}}
    assert parse_frame(b"\x00\x08taskListnull") == ("taskList", b"null")
    assert decode_task(good) == good
    for bad in (
        {"interval": 0},
        {"interval": -1},
        {"config": {"a": 1}},
        {"route": {"type": "nearest"}},
        {"created": "2018-03-22 03:03:11"},
        {"id": 1.0},
    ):
        with pytest.raises(AgentCrash):
            decode_task({**good, **bad})


# -- task-server's config file -------------------------------------------------------------------

SEED_CONFIG = """\
log-level = 1
addr = :8082
db-type = mysql
db-connect-str = DB_USERNAME:DB_PASSWORD@tcp(NGINX_REVERSE_PROXY:3306)/task_server?charset=utf8
stats-enabled = true
statsd-addr = localhost:8125
statsd-type = standard
admin-key = YOUR_TASK_SERVER_API_KEY
exchange =
#rabbitmq-url = amqp://RMQ_USER:RMQ_PASSWORD@NGINX_REVERSE_PROXY:5672/
"""


def test_the_seeds_config_keys_are_read(tmp_path: Path) -> None:
    path = tmp_path / "task-server.ini"
    path.write_text(
        SEED_CONFIG.replace("db-type = mysql", "db-type = sqlite3").replace(
            "DB_USERNAME:DB_PASSWORD@tcp(NGINX_REVERSE_PROXY:3306)/task_server?charset=utf8",
            "file:/var/lib/task-server.db?cache=shared&mode=rwc",
        )
    )
    settings = config.load(path, env={})
    assert (settings.host, settings.port) == ("0.0.0.0", 8082)
    assert settings.db == "/var/lib/task-server.db"
    assert settings.raintank_admin_key == "YOUR_TASK_SERVER_API_KEY"
    assert settings.log_level == "debug"
    assert settings.statsd_enabled is True
    assert (settings.statsd_addr, settings.statsd_type) == ("localhost:8125", "standard")


def test_postgres_connect_strings_become_urls(tmp_path: Path) -> None:
    path = tmp_path / "pg.ini"
    path.write_text(
        "db-type = postgres\n"
        "db-connect-str = host=db port=5433 user=ts password=p@ss dbname=tasks\n"
        "addr = 127.0.0.1:9000\n"
    )
    settings = config.load(path, env={})
    assert settings.db == "postgresql://ts:p%40ss@db:5433/tasks"
    assert (settings.host, settings.port) == ("127.0.0.1", 9000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SEED_CONFIG, "mysql is not supported"),
        ("addr = :8082\nexchange = amqp\n", "RabbitMQ is not supported"),
        ("addr = :8082\nnot-a-key = 1\n", "unknown setting 'not-a-key'"),
        ("addr = 8082\n", "addr must be"),
        ("addr = :8082\nstatsd-type = graphite\n", "statsd-type"),
    ],
)
def test_what_cannot_be_honoured_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.ini"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        config.load(path, env={})
