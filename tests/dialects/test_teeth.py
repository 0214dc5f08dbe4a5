"""The teeth dialect against a client that behaves as teeth-agent b3ee1d8 does: a real
server (uvicorn and the teeth listener on loopback), raw TCP, the native API beside it."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from taskfleet.agent.teeth import wire
from taskfleet.cli import main
from taskfleet.core.models import Role
from tests.api.conftest import Live, eventually
from tests.dialects.teeth_agent import TeethAgent, line

pytestmark = pytest.mark.settings(teeth_enabled=True, teeth_port=0)

AGENT = "a-b-c-d"  #: the taskfleet name of the handshake id "a:b:c:d"
API_KEY = "teeth-test-key"
Connect = Callable[..., Awaitable[TeethAgent]]


def teeth_port(live: Live) -> int:
    port: int | None = live.app.state.teeth.port
    assert port is not None
    return port


async def set_policy(admin: httpx.AsyncClient, policy: str) -> None:
    response = await admin.put("/api/v1/registration", json={"policy": policy})
    assert response.status_code == 200, response.text


@pytest.fixture
async def connect(live: Live) -> AsyncIterator[Connect]:
    """`await connect(teeth_id=..., ping_interval=...)`: a connected stand-in agent."""
    agents: list[TeethAgent] = []

    async def start(**options: Any) -> TeethAgent:
        agent = TeethAgent(teeth_port(live), **options)
        agents.append(agent)
        await agent.connect()
        return agent

    yield start
    for agent in agents:
        await agent.close()


@pytest.fixture
async def open_admin(admin: httpx.AsyncClient) -> httpx.AsyncClient:
    """An admin, with the registration policy open: any teeth agent is admitted."""
    await set_policy(admin, "open")
    return admin


async def submit(admin: httpx.AsyncClient, task_type: str, **payload: Any) -> dict[str, Any]:
    body = {"type": task_type, "payload": payload, "agent": AGENT}
    response = await admin.post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()[0]
    return created


async def task_where(
    admin: httpx.AsyncClient, task_id: int, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        task: dict[str, Any] = (await admin.get(f"/api/v1/tasks/{task_id}")).json()
        return task if check(task) else None

    return await eventually(found)


async def task_log(admin: httpx.AsyncClient, task_id: int) -> str:
    chunks = (await admin.get(f"/api/v1/tasks/{task_id}/logs")).json()
    return "".join(c["text"] for c in chunks)


async def raw(live: Live) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", teeth_port(live))


async def fatal_then_close(reader: asyncio.StreamReader) -> str:
    """The server's fatal_error, after which it must close the connection."""
    while True:
        data = await asyncio.wait_for(reader.readline(), 10)
        assert data, "closed without a fatal_error"
        message = json.loads(data)
        if "fatal_error" in message:
            assert await asyncio.wait_for(reader.read(), 10) == b""
            return str(message["fatal_error"])


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(line({"version": "v1", "params": {"version": "0.1-dev", "id": "a:b:c:d"},
                       "id": "h", "method": "handshake"}))  # fmt: skip
    assert "result" in json.loads(await asyncio.wait_for(reader.readline(), 10))


# -- the connection ---------------------------------------------------------------------------


async def test_handshake_admits_the_agent_and_pings_are_echoed(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    agent = await connect(ping_interval=0.05)
    result = agent.handshake["result"]
    assert result["primary_mac_address"] == "a:b:c:d" and result["id"]
    assert result["agent"] == AGENT and result["accepted"] is True
    await eventually(lambda: _at_least(agent, 3))
    found = (await open_admin.get(f"/api/v1/agents/{AGENT}")).json()
    assert found["online"] and found["enabled"]
    assert found["platform"] == "teeth-agent" and found["version"] == "0.1-dev"
    assert found["metadata"] == {"teeth_id": "a:b:c:d"}
    assert {"status", "standby.run_image", "standbye.run_image", "decom.qc"} <= set(
        found["task_types"]
    )
    assert (await agent.request("ping", {"echo": [1, 2]}))["result"] == {"echo": [1, 2]}


async def _at_least(agent: TeethAgent, pings: int) -> bool:
    return agent.pings >= pings


FATAL_LINES = [
    (b"{not json\n", wire.UNDECODABLE),
    (b"\xff\xfe\n", wire.UNDECODABLE),
    (b"[1, 2]\n", wire.MALFORMED),
    (line({"id": "1", "method": "ping", "params": {}}), wire.NO_VERSION),
    (line({"version": "", "id": "1", "method": "ping", "params": {}}), wire.NO_VERSION),
    (line({"version": "v1", "method": "ping", "params": {}}), wire.NO_ID),
    (line({"version": "v1", "id": "1", "method": "ping"}), wire.NO_PARAMS),
    (line({"version": "v1", "id": "1", "method": "ping", "params": []}), wire.PARAMS_NOT_OBJECT),
    (line({"version": "v1", "id": "x", "result": {}}), wire.UNKNOWN_ID),
    (line({"version": "v1", "id": "x", "error": "oops"}), wire.UNKNOWN_ID),
    (line({"version": "v1", "id": "1"}), wire.MALFORMED),
    (line({"version": "v2", "id": "1", "method": "ping", "params": {}}), wire.UNKNOWN_VERSION),
    (line({"version": "v1", "id": "1", "method": "reboot", "params": {}}), wire.UNKNOWN_METHOD),
    # Several violations at once: the first in the original's order wins.
    (line({"method": "ping"}), wire.NO_VERSION),
    (line({"version": "v1", "method": "ping", "params": []}), wire.NO_ID),
    (line({"version": "v1", "id": "1", "method": "reboot", "params": 5}), wire.PARAMS_NOT_OBJECT),
    (line({"version": "v1", "id": "x", "result": 1, "params": {}}), wire.UNKNOWN_ID),
    (line({"version": "v2", "id": "1", "method": "reboot", "params": {}}), wire.UNKNOWN_VERSION),
]


@pytest.mark.parametrize(("data", "expected"), FATAL_LINES)
async def test_each_violation_is_fatal_in_the_original_order(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect, data: bytes, expected: str
) -> None:
    reader, writer = await raw(live)
    try:
        await handshake(reader, writer)
        writer.write(b"\n   \n" + data)  # blank lines are ignored
        assert await fatal_then_close(reader) == expected
    finally:
        writer.close()
    other = await connect(teeth_id="e:f")  # the server goes on serving everyone else
    assert "result" in await other.request("ping", {})


async def test_a_line_over_512_kib_is_fatal(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    agent = await connect()
    big = {"pad": "x" * (wire.MAX_LINE_BYTES - 1000)}
    assert (await agent.request("ping", big))["result"] == big  # under the limit: fine
    await agent.send(b"x" * (wire.MAX_LINE_BYTES + 1) + b"\n")
    await asyncio.wait_for(agent.closed.wait(), 10)
    assert agent.fatal == wire.TOO_LONG


@pytest.mark.settings(teeth_enabled=True, teeth_port=0, teeth_idle_timeout=0.3)
async def test_a_silent_connection_is_closed(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    agent = await connect(ping_interval=3600)  # one ping at once, then silence
    await asyncio.wait_for(agent.closed.wait(), 10)
    assert agent.fatal is not None and "nothing received" in agent.fatal


async def test_the_handshake_comes_first_and_carries_id_and_version(
    live: Live, open_admin: httpx.AsyncClient
) -> None:
    reader, writer = await raw(live)
    writer.write(line({"version": "v1", "params": {}, "id": "1", "method": "ping"}))
    assert (
        await fatal_then_close(reader)
        == "protocol violation: the first message must be a handshake."
    )
    writer.close()
    reader, writer = await raw(live)
    writer.write(
        line({"version": "v1", "params": {"version": "1"}, "id": "1", "method": "handshake"})
    )
    assert await fatal_then_close(reader) == 'missing parameter "id" in "handshake" command'
    writer.close()


async def test_log_is_recorded_as_the_agents_event(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    agent = await connect()
    assert (await agent.log("imaging started", 1385150000.5))["result"] is None
    events = (await open_admin.get(f"/api/v1/agents/{AGENT}/events")).json()
    assert [e["data"] for e in events] == [{"message": "imaging started", "time": 1385150000.5}]
    refused = await agent.request("log", {"message": "no time"})
    assert refused["error"]["msg"] == 'missing parameter "time" in "log" command'
    assert "result" in await agent.request("ping", {})  # not fatal


# -- commands from the server ----------------------------------------------------------------


async def test_a_command_round_trip_with_its_task_status_stream(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    admin = open_admin
    agent = await connect()
    task = await submit(admin, "standby.cache_images", image_ids=["img-1", "img-2"])
    command = await agent.next_command()
    ref = f"{task['id']}.1"
    assert command["method"] == "standby.cache_images" and command["version"] == "v1"
    assert command["params"] == {"image_ids": ["img-1", "img-2"], "task_id": ref}
    await task_where(admin, task["id"], lambda t: "accepted" in t["progress"]["activity"])

    reply = await agent.task_status(ref, "running", eta=30, percent=25)
    assert reply["result"] == {"status": "active"}
    running = await task_where(admin, task["id"], lambda t: t["progress"]["percent"] == 25)
    assert running["status"] == "active" and running["progress"]["eta"] == 30
    await agent.task_status(ref, "running", eta=10, percent=75)
    await agent.task_status(ref, "complete", result={"cached": ["img-1"]})
    done = await task_where(admin, task["id"], lambda t: t["status"] == "completed")
    assert done["result"] == {"cached": ["img-1"]}

    late = await agent.task_status(ref, "running", eta=1, percent=99)
    assert "not current" in late["error"]["msg"] and late["error"]["code"] == "conflict"
    assert (await admin.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "completed"
    log = await task_log(admin, task["id"])
    for step in ("sent standby.cache_images", "accepted: null", "running 25% eta 30 s",
                 "running 75% eta 10 s", 'complete: {"cached": ["img-1"]}'):  # fmt: skip
        assert step in log, log


async def test_status_is_settled_by_its_response_and_standbye_is_accepted(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    agent = await connect()
    status = await submit(open_admin, "status")
    done = await task_where(open_admin, status["id"], lambda t: t["status"] == "completed")
    assert done["result"] == {"uptime": 0.0034, "version": "0.1-dev", "mode": "STANDBY"}
    await agent.next_command()
    seed = await submit(open_admin, "standbye.prepare_image", image_id="img-1")
    command = await agent.next_command()
    assert command["method"] == "standby.prepare_image"
    assert command["params"] == {"image_id": "img-1", "task_id": f"{seed['id']}.1"}


async def test_errors_from_the_agent_fail_the_task(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    agent = await connect(extra_commands=["decom.disk_erase"])
    refused = await submit(open_admin, "standby.cache_images")  # no image_ids
    failed = await task_where(open_admin, refused["id"], lambda t: t["status"] == "failed")
    assert failed["error"] == 'missing parameter "image_ids" in "standby.cache_images" command'
    assert (await agent.next_command())["method"] == "standby.cache_images"
    erase = await submit(open_admin, "decom.disk_erase")
    command = await agent.next_command()
    await agent.task_status(command["params"]["task_id"], "error", msg="disk 2 is read-only")
    failed = await task_where(open_admin, erase["id"], lambda t: t["status"] == "failed")
    assert failed["error"] == "disk 2 is read-only"


async def test_a_bad_task_status_is_a_plain_error(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    agent = await connect()
    task = await submit(open_admin, "standby.run_image", image_id="img-1")
    ref = (await agent.next_command())["params"]["task_id"]
    for params, message in [
        ({"task_id": ref}, 'missing parameter "state" in "task_status" command'),
        ({"task_id": "abc", "state": "running"}, "unknown task_id 'abc'"),
        ({"task_id": ref, "state": "paused"}, "unknown state 'paused'"),
        ({"task_id": ref, "state": "running", "percent": 140}, "percent must be between"),
        ({"task_id": ref, "state": "running", "percent": "x"}, 'parameter "percent"'),
        ({"task_id": f"{task['id'] + 1}.1", "state": "complete"}, "no task"),
    ]:
        reply = await agent.request("task_status", params)
        assert message in reply["error"]["msg"], (params, reply)
    assert "result" in await agent.request("ping", {})


async def test_a_cancel_is_settled_on_the_server(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    agent = await connect()
    task = await submit(open_admin, "standby.run_image", image_id="img-1")
    ref = (await agent.next_command())["params"]["task_id"]
    await task_where(open_admin, task["id"], lambda t: "accepted" in t["progress"]["activity"])
    response = await open_admin.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert response.status_code == 200, response.text
    await task_where(open_admin, task["id"], lambda t: t["status"] == "cancelled")
    late = await agent.task_status(ref, "complete")
    assert late["error"]["code"] == "conflict"
    assert "teeth cannot stop the command" in await task_log(open_admin, task["id"])


@pytest.mark.settings(teeth_enabled=True, teeth_port=0, agent_grace_seconds=0.05)
async def test_a_lost_agents_command_is_sent_again_as_a_new_attempt(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    first = await connect()
    task = await submit(open_admin, "standby.prepare_image", image_id="img-1")
    old_ref = (await first.next_command())["params"]["task_id"]
    assert old_ref == f"{task['id']}.1"
    await first.close()
    await task_where(open_admin, task["id"], lambda t: t["status"] == "queued")
    second = await connect()
    new_ref = (await second.next_command())["params"]["task_id"]
    assert new_ref == f"{task['id']}.2"
    assert (await second.task_status(old_ref, "complete"))["error"]["code"] == "conflict"
    assert "result" in await second.task_status(new_ref, "complete", result="ok")
    done = await task_where(open_admin, task["id"], lambda t: t["status"] == "completed")
    assert done["attempt"] == 2 and done["result"] == "ok"


async def test_a_newer_connection_replaces_the_older(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    older = await connect()
    newer = await connect()
    await asyncio.wait_for(older.closed.wait(), 10)
    assert older.fatal is not None and "newer connection" in older.fatal
    assert "result" in await newer.request("ping", {})
    found = (await open_admin.get(f"/api/v1/agents/{AGENT}")).json()
    assert found["online"]


async def test_payloads_that_are_no_params_fail(
    live: Live, open_admin: httpx.AsyncClient, connect: Connect
) -> None:
    await connect()
    body = {"type": "status", "payload": [1, 2], "agent": AGENT}
    task = (await open_admin.post("/api/v1/tasks", json=body)).json()[0]
    failed = await task_where(open_admin, task["id"], lambda t: t["status"] == "failed")
    assert "must be a JSON object" in failed["error"]


# -- who may connect -----------------------------------------------------------------------


async def refused(live: Live, teeth_id: str) -> str:
    """The fatal error that answers this agent's handshake."""
    agent = TeethAgent(teeth_port(live), teeth_id=teeth_id)
    try:
        with pytest.raises(ConnectionError):
            await agent.connect()
    finally:
        await agent.close()
    assert agent.fatal is not None
    return agent.fatal


async def test_a_pending_agent_gets_work_once_an_admin_accepts_it(
    live: Live, admin: httpx.AsyncClient, connect: Connect
) -> None:
    await set_policy(admin, "approval")
    agent = await connect(ping_interval=0.02)
    assert agent.handshake["result"]["accepted"] is False
    found = (await admin.get(f"/api/v1/agents/{AGENT}")).json()
    assert found["online"] and not found["enabled"]
    task = await submit(admin, "status")
    await eventually(lambda: _at_least(agent, 5))  # served all along...
    assert agent.commands.empty()  # ...but given nothing
    assert (await admin.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "queued"

    response = await admin.patch(f"/api/v1/agents/{AGENT}", json={"enabled": True})
    assert response.status_code == 200, response.text
    assert (await agent.next_command())["method"] == "status"
    await task_where(admin, task["id"], lambda t: t["status"] == "completed")


async def cli(live: Live, *args: str) -> Result:
    """`taskfleet …` in a thread (it blocks on HTTP while the server serves on this loop)."""
    argv = [*args, "--server", live.base_url, "--token", API_KEY]
    return await asyncio.to_thread(CliRunner().invoke, main, argv, env={"COLUMNS": "200"})


@pytest.mark.settings(teeth_enabled=True, teeth_port=0, api_keys=(API_KEY,))
async def test_an_admin_accepts_and_drives_a_teeth_agent_from_the_cli(
    live: Live, admin: httpx.AsyncClient, connect: Connect
) -> None:
    await set_policy(admin, "approval")
    await connect()
    listed = await cli(live, "agent", "list")
    assert f"{AGENT} (disabled)" in listed.stdout, listed.output
    accepted = await cli(live, "agent", "enable", AGENT)
    assert accepted.exit_code == 0, accepted.output
    done = await cli(live, "task", "submit", "status", "--agent", AGENT, "--wait")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["mode"] == "STANDBY"
    (task,) = (await admin.get("/api/v1/tasks", params={"type": "status"})).json()["tasks"]
    logs = await cli(live, "task", "logs", str(task["id"]))
    assert f"teeth: sent status as {task['id']}.1" in logs.stdout, logs.output


async def test_a_closed_policy_admits_known_agents_only(
    live: Live, admin: httpx.AsyncClient, connect: Connect
) -> None:
    assert "admits known agents only" in await refused(live, "a:b:c:d")
    assert (await admin.get(f"/api/v1/agents/{AGENT}")).status_code == 404

    await set_policy(admin, "approval")
    first = await connect()
    await first.close()
    await set_policy(admin, "closed")
    again = await connect()  # known now (an admin still has to enable it)
    assert again.handshake["result"]["accepted"] is False


async def test_an_agent_with_an_account_cannot_be_taken_over(
    live: Live, open_admin: httpx.AsyncClient
) -> None:
    await live.add_account("node-7", Role.AGENT, "secret")
    assert await refused(live, "node-7") == "the agent 'node-7' is not a teeth-agent agent"


# -- TLS --------------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls(tmp_path: Path, start_server: Callable[..., Awaitable[Live]]) -> None:
    cert, key = self_signed(tmp_path)
    live = await start_server(
        teeth_enabled=True, teeth_port=0, teeth_tls_cert=str(cert), teeth_tls_key=str(key)
    )
    admin = await live.admin()
    await set_policy(admin, "open")
    agent = TeethAgent(teeth_port(live), tls=ssl.create_default_context(cafile=str(cert)))
    try:
        assert "result" in await agent.connect()
        assert "result" in await agent.request("ping", {})
    finally:
        await agent.close()
