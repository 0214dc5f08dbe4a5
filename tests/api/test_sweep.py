"""Every /api/v1 operation in the OpenAPI spec, fed garbage as an admin, an agent and a
stranger: the answer is never a 5xx, and every error is problem+json with a detail.

The operations are read from the spec at collection time; `test_sweep_covers_the_served_spec`
checks that this is the spec the server serves.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio

from taskfleet.app import build
from taskfleet.config import Settings
from tests.api.conftest import PROBLEM, Live, serve, submit

pytestmark = pytest.mark.asyncio(loop_scope="module")

API_KEY = "sweep-key"
SPEC: dict[str, Any] = build(Settings()).openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, methods in SPEC["paths"].items()
    if path.startswith("/api/v1/")
    for method, operation in methods.items()
]
#: Long-polls answer at once unless the garbage is aimed at these parameters.
SAFE_QUERY = {"wait": "0", "timeout": "0"}
PATH_GARBAGE = [
    "0",
    "-1",
    "abc",
    "1.5",
    "1e3",
    str(2**63),
    "9" * 40,
    "%00",
    "%FF",
    "%20",
    "null",
    "x" * 300,
    "..%2F..%2Fetc",
    "%C3%A9t%C3%A9",
]
QUERY_GARBAGE = [
    "",
    "-1",
    "abc",
    "1e999",
    "NaN",
    "-inf",
    "9" * 40,
    "\x00",
    "x" * 300,
    "true",
    "[]",
    "été",
]
RAW_BODIES = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b'"x"',
    b"0",
    b"true",
    b"{",
    b'{"a":',
    b"\xff\xfe",
    b"NaN",
    b'{"x": NaN}',
    b'{"x": 1e999}',
    b"[" * 3000 + b"]" * 3000,
    b'{"a": "\\u0000"}',
    b'{"a": "\\ud800"}',
    b"9" * 5000,
    json.dumps({"k" * 100: list(range(1000))}).encode(),
]


@dataclass(frozen=True)
class Probe:
    url: str
    params: dict[str, str]
    content: bytes | None = None
    content_type: str = "application/json"


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = SPEC["components"]["schemas"][name]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return _resolve(next((s for s in schema[key] if s.get("type") != "null"), {}))
    return schema


def _wrong(schema: dict[str, Any]) -> object:
    """A value of another type than the schema asks for."""
    kind = str(_resolve(schema).get("type"))
    return {
        "string": 12345,
        "integer": "seven",
        "number": "1.5",
        "boolean": "yes",
        "array": {"not": "a list"},
        "object": ["not", "an", "object"],
    }.get(kind, {"deep": [[[None]]]})


def _extreme(schema: dict[str, Any]) -> object:
    """A value of the right type, at or past any sensible limit."""
    resolved = _resolve(schema)
    kind = str(resolved.get("type"))
    if "enum" in resolved:
        return "not-" + str(resolved["enum"][0])
    return {
        "string": "x" * 5_000,  # past every string limit of the schemas
        "integer": 2**80,
        "number": 1e308,
        "boolean": True,
        "array": [{"x": 1}] * 2_000,
        "object": {str(n): n for n in range(2_000)},
    }.get(kind, None)


def _typed_bodies(operation: dict[str, Any]) -> Iterator[bytes]:
    content = operation.get("requestBody", {}).get("content", {})
    schema = _resolve(content.get("application/json", {}).get("schema", {}))
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return
    yield json.dumps({name: _wrong(s) for name, s in properties.items()}).encode()
    yield json.dumps({name: _extreme(s) for name, s in properties.items()}).encode()
    for name, prop in properties.items():
        yield json.dumps({name: _wrong(prop)}).encode()


def _fill(path: str, operation: dict[str, Any], **values: str) -> str:
    for param in operation.get("parameters", []):
        if param["in"] == "path":
            is_int = _resolve(param.get("schema", {})).get("type") == "integer"
            value = values.get(param["name"], "1" if is_int else "nobody")
            path = path.replace("{" + param["name"] + "}", value)
    return path


def probes(path: str, operation: dict[str, Any]) -> Iterator[Probe]:
    params = operation.get("parameters", [])
    query_names = [p["name"] for p in params if p["in"] == "query"]
    safe = {k: v for k, v in SAFE_QUERY.items() if k in query_names}
    yield Probe(_fill(path, operation), safe)
    for param in (p for p in params if p["in"] == "path"):
        for garbage in PATH_GARBAGE:
            yield Probe(_fill(path, operation, **{param["name"]: garbage}), safe)
    for name in query_names:
        for garbage in QUERY_GARBAGE:
            if name in safe and not garbage:
                continue  # an empty value means "the default": a long wait
            yield Probe(_fill(path, operation), {**safe, name: garbage})
    if "requestBody" in operation:
        for body in [*RAW_BODIES, *_typed_bodies(operation)]:
            yield Probe(_fill(path, operation), safe, body)
        yield Probe(_fill(path, operation), safe, b"a=1", "application/x-www-form-urlencoded")
        yield Probe(_fill(path, operation), safe, b'{"a": 1}', "text/plain")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sweep_live(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> AsyncIterator[Live]:
    """A server with an API key (so that garbage sent to /logout cannot end the admin's
    session half-way through), one agent holding task 1, and job 1."""
    db = tmp_path_factory.mktemp("sweep") / "taskfleet.db"
    db.write_bytes(sqlite_template.read_bytes())
    async with serve(Settings(db=str(db), api_keys=(API_KEY,))) as live:
        admin = live.client(headers={"Authorization": f"Bearer {API_KEY}"})
        agent = await live.agent("sweeper", hello=True)
        await admin.post("/api/v1/jobs", json={"name": "job"})
        await submit(admin, agent="sweeper", job_id=1)
        await agent.post("/api/v1/agent/claim", params={"wait": 0})
        yield live


def _client(live: Live, identity: str) -> httpx.AsyncClient:
    if identity == "admin":
        return live.client(headers={"Authorization": f"Bearer {API_KEY}"})
    if identity == "agent":
        return live.agent_client("sweeper")
    return live.client()


def _problems(probe: Probe, response: httpx.Response) -> list[str]:
    where = f"{response.request.method} {response.request.url} body={probe.content!r:.80}"
    if response.status_code >= 500:
        return [f"{where}: {response.status_code} {response.text[:200]}"]
    if response.status_code < 400:
        return []
    if response.headers.get("content-type") != PROBLEM:
        return [f"{where}: {response.status_code} is not problem+json"]
    with contextlib.suppress(ValueError):
        detail = response.json().get("detail")
        if isinstance(detail, str) and detail:
            return []
    return [f"{where}: {response.status_code} without a detail string: {response.text[:200]}"]


@pytest.mark.parametrize("identity", ["admin", "agent", "anonymous"])
@pytest.mark.parametrize(
    ("method", "path", "operation"),
    OPERATIONS,
    ids=[f"{method} {path}" for method, path, _ in OPERATIONS],
)
async def test_garbage_never_causes_a_server_error(
    sweep_live: Live, identity: str, method: str, path: str, operation: dict[str, Any]
) -> None:
    client = _client(sweep_live, identity)
    failures: list[str] = []
    for probe in probes(path, operation):
        url = "/".join(quote(part, safe="%") for part in probe.url.split("/"))
        headers = {} if probe.content is None else {"content-type": probe.content_type}
        response = await client.request(
            method, url, params=probe.params, content=probe.content, headers=headers
        )
        failures += _problems(probe, response)
    assert not failures, "\n".join(failures)


async def test_sweep_covers_the_served_spec(sweep_live: Live) -> None:
    response = await sweep_live.client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.json()["paths"].keys() == SPEC["paths"].keys()
    assert len(OPERATIONS) >= 35
