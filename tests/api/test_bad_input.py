"""Whatever a client sends, the answer is a 4xx problem+json with a detail, never a 500.

These tests share one server (`module_live`): none of them needs a fresh database.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import pytest_asyncio

from taskfleet.api.limits import MAX_JSON_DEPTH
from tests.api.conftest import Live, assert_problem, submit

pytestmark = pytest.mark.asyncio(loop_scope="module")

BIG_INT = 2**70
INT64_MAX = 2**63 - 1
JSON = {"content-type": "application/json"}


# The module's shared server and clients, under the names the tests use.
@pytest.fixture
def live(module_live: Live) -> Live:
    return module_live


@pytest.fixture
def admin(module_admin: httpx.AsyncClient) -> httpx.AsyncClient:
    return module_admin


@pytest.fixture
def agent(module_agent: httpx.AsyncClient) -> httpx.AsyncClient:
    return module_agent


@pytest_asyncio.fixture(loop_scope="module")
async def task(admin: httpx.AsyncClient) -> dict[str, Any]:
    return await submit(admin)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer nope",
        "bearer\tnope",
        "Basic",
        "Basic !!!notbase64",
        "Basic bm9jb2xvbg==",  # "nocolon"
        "Basic //79/Q==",  # not UTF-8
        "Basic AGFnZW50LTE6YWdlbnQtc2VjcmV0",  # "\0agent-1:agent-secret"
        "Digest abc",
        "Basic " + "QUFB" * 100,
    ],
)
async def test_missing_or_wrong_credentials_are_401(live: Live, header: str | None) -> None:
    client = live.client(headers={} if header is None else {"Authorization": header})
    for path in ("/api/v1/me", "/api/v1/accounts", "/api/v1/tasks"):
        assert_problem(await client.get(path), 401)
    assert_problem(await client.post("/api/v1/agent/claim", params={"wait": 0}), 401)


async def test_malformed_json(admin: httpx.AsyncClient) -> None:
    for raw in (b"{", b'{"type": "x",}', b"not json", b"\xff\xfe", b'{"type": "\xff"}'):
        response = await admin.post("/api/v1/tasks", content=raw, headers=JSON)
        assert response.status_code in (400, 422), (raw, response.text)
        assert_problem(response, response.status_code)


async def test_body_that_is_not_json_at_all(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    text = {"content-type": "text/plain"}
    response = await admin.post("/api/v1/tasks", content=b'{"type": "x"}', headers=text)
    assert "Content-Type: application/json" in assert_problem(response, 415)["detail"]
    assert_problem(await admin.post("/api/v1/tasks", files={"f": b"data"}), 415)
    assert_problem(await admin.post("/api/v1/tasks", data={"type": "x"}), 415)
    assert_problem(await admin.post("/api/v1/tasks", content=b'{"type": "x"}'), 415)
    assert_problem(await agent.post("/api/v1/events", content=b"booted", headers=text), 415)
    assert_problem(await admin.post("/api/v1/tasks"), 422)
    # A body sent where none is expected is ignored, as before.
    response = await admin.request("GET", "/api/v1/tasks", content=b"x", headers=text)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "echo",
        42,
        {},
        {"type": ""},
        {"type": 5},
        {"type": ["echo"]},
        {"type": "x" * 129},
        {"type": "echo", "priority": "high"},
        {"type": "echo", "priority": "5"},
        {"type": "echo", "priority": 1.5},
        {"type": "echo", "priority": BIG_INT},
        {"type": "echo", "priority": 10**7},
        {"type": "echo", "max_attempts": 0},
        {"type": "echo", "max_attempts": True},
        {"type": "echo", "broadcast": "yes"},
        {"type": "echo", "timeout_seconds": -1},
        {"type": "echo", "timeout_seconds": "10"},
        {"type": "echo", "tags": "gpu"},
        {"type": "echo", "tags": ["t" * 65]},
        {"type": "echo", "tags": [f"tag-{n:02}" for n in range(64)] * 2},
        {"type": "echo", "agent": 7},
        {"type": "echo", "agent": "a" * 65},
        {"type": "echo", "job_id": "one"},
        {"type": "echo", "job_id": 0},
        {"type": "echo", "job_id": BIG_INT},
        {"type": "echo", "colour": "red"},
    ],
)
async def test_wrong_types_and_unknown_fields(admin: httpx.AsyncClient, body: Any) -> None:
    assert_problem(await admin.post("/api/v1/tasks", json=body), 422)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_numbers(admin: httpx.AsyncClient, number: str) -> None:
    for raw in (
        f'{{"type": "echo", "payload": {number}}}',
        f'{{"type": "echo", "payload": {{"x": [{number}]}}}}',
        f'{{"type": "echo", "timeout_seconds": {number}}}',
        f'{{"name": "job", "settings": {{"fps": {number}}}}}',
    ):
        path = "/api/v1/jobs" if "job" in raw else "/api/v1/tasks"
        response = await admin.post(path, content=raw, headers=JSON)
        body = assert_problem(response, 400)
        assert "finite" in body["detail"]


def nested(depth: int) -> str:
    """A task body whose payload nests `depth` arrays (the body itself is one level more)."""
    return '{"type": "echo", "payload": ' + "[" * depth + "]" * depth + "}"


async def test_deeply_nested_json(admin: httpx.AsyncClient) -> None:
    deepest = MAX_JSON_DEPTH - 1
    response = await admin.post("/api/v1/tasks", content=nested(deepest), headers=JSON)
    assert response.status_code == 201
    shown = await admin.get(f"/api/v1/tasks/{response.json()[0]['id']}")
    assert shown.json()["payload"] is not None
    for depth in (deepest + 1, 990, 5_000, 100_000):
        response = await admin.post("/api/v1/tasks", content=nested(depth), headers=JSON)
        assert response.status_code == 400, (depth, response.text[:200])
        assert_problem(response, 400)


async def test_nul_characters(admin: httpx.AsyncClient, agent: httpx.AsyncClient) -> None:
    for body in (
        {"type": "ec\x00ho"},
        {"type": "echo", "payload": "a\x00b"},
        {"type": "echo", "payload": {"k\x00": 1}},
        {"type": "echo", "agent": "agent\x00-1"},
    ):
        assert "NUL" in assert_problem(await admin.post("/api/v1/tasks", json=body), 400)["detail"]
    for path in ("/api/v1/agents/a%00b", "/api/v1/groups/a%00b/members"):
        assert_problem(await admin.get(path), 400)
    assert_problem(await admin.get("/api/v1/tasks", params={"type": "a\x00"}), 400)
    login = await admin.post("/api/v1/login", json={"name": "ro\x00ot", "secret": "x"})
    assert_problem(login, 400)
    assert_problem(await agent.post("/api/v1/events", json={"a": "\x00"}), 400)
    surrogate = b'{"type": "echo", "payload": "\\ud800"}'
    assert_problem(await admin.post("/api/v1/tasks", content=surrogate, headers=JSON), 400)
    nul_name = httpx.BasicAuth("agent\x00-1", "agent-secret")
    assert_problem(await agent.get("/api/v1/me", auth=nul_name), 401)


async def test_unknown_ids_are_404(admin: httpx.AsyncClient) -> None:
    for path in (
        "/api/v1/tasks/424242",
        "/api/v1/jobs/424242",
        "/api/v1/agents/nobody",
        "/api/v1/agents/nobody/events",
        "/api/v1/tasks/424242/logs",
        "/api/v1/tasks/424242/outputs",
        "/api/v1/tasks/424242/wait?timeout=0",
        f"/api/v1/tasks/{INT64_MAX}",
    ):
        assert_problem(await admin.get(path), 404)
    assert_problem(await admin.delete("/api/v1/groups/nogroup"), 404)
    assert_problem(await admin.delete("/api/v1/accounts/nobody"), 404)
    assert_problem(await admin.get("/api/v1/groups/nogroup/members"), 404)


async def test_unknown_routes_and_methods(admin: httpx.AsyncClient) -> None:
    assert_problem(await admin.get("/api/v1/nowhere"), 404)
    assert_problem(await admin.get("/api/v1"), 404)
    not_allowed = assert_problem(await admin.put("/api/v1/tasks/1"), 405)
    assert "Method Not Allowed" in not_allowed["detail"]
    response = await admin.delete("/api/v1/tasks")
    assert_problem(response, 405)
    assert response.headers["allow"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/tasks/abc",
        "/api/v1/tasks/1.5",
        "/api/v1/tasks/-1",
        f"/api/v1/tasks/{BIG_INT}",
        f"/api/v1/tasks/{INT64_MAX + 1}",
        "/api/v1/tasks/0",
        "/api/v1/jobs/abc",
        f"/api/v1/jobs/{BIG_INT}",
        f"/api/v1/tasks/{BIG_INT}/logs",
        f"/api/v1/tasks/{BIG_INT}/outputs",
        f"/api/v1/tasks/{BIG_INT}/wait?timeout=0",
        "/api/v1/tasks/%20/wait",
    ],
)
async def test_bad_path_ids(admin: httpx.AsyncClient, path: str) -> None:
    assert_problem(await admin.get(path), 422)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"after": -1},
        {"after": BIG_INT},
        {"after": "x"},
        {"status": "sleeping"},
        {"job": "x"},
        {"job": BIG_INT},
        {"type": "x" * 200},
        {"agent": "y" * 200},
    ],
)
async def test_bad_query_params(admin: httpx.AsyncClient, params: dict[str, Any]) -> None:
    assert_problem(await admin.get("/api/v1/tasks", params=params), 422)


@pytest.mark.parametrize("wait", ["-1", "56", "NaN", "inf", "soon", "1e999"])
async def test_bad_waits(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient, task: dict[str, Any], wait: str
) -> None:
    assert_problem(await agent.post("/api/v1/agent/claim", params={"wait": wait}), 422)
    response = await admin.get(f"/api/v1/tasks/{task['id']}/wait", params={"timeout": wait})
    assert_problem(response, 422)


async def test_agents_cannot_call_admin_endpoints(
    live: Live, agent: httpx.AsyncClient, task: dict[str, Any]
) -> None:
    for method, path, body in (
        ("GET", "/api/v1/accounts", None),
        ("POST", "/api/v1/accounts", {"name": "x", "role": "admin", "secret": "x"}),
        ("DELETE", "/api/v1/accounts/agent-1", None),
        ("GET", "/api/v1/agents", None),
        ("GET", "/api/v1/agents/agent-1", None),
        ("PATCH", "/api/v1/agents/agent-1", {"enabled": True}),
        ("DELETE", "/api/v1/agents/agent-1", None),
        ("GET", "/api/v1/groups", None),
        ("POST", "/api/v1/groups", {"name": "g"}),
        ("GET", "/api/v1/registration", None),
        ("PUT", "/api/v1/registration", {"policy": "open"}),
        ("POST", "/api/v1/tasks", {"type": "echo"}),
        ("POST", "/api/v1/tasks/batch", {"tasks": [{"type": "echo"}]}),
        ("POST", f"/api/v1/tasks/{task['id']}/cancel", None),
        ("POST", f"/api/v1/tasks/{task['id']}/requeue", None),
        ("GET", "/api/v1/jobs", None),
        ("POST", "/api/v1/jobs", {"name": "j"}),
    ):
        response = await agent.request(method, path, json=body)
        assert_problem(response, 403)
    assert (await live.services.tasks.get(task["id"])).status.value == "queued"
