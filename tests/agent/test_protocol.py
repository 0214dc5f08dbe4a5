"""The websocket protocol against a real server: violations get `fatal_error` and a close,
and the server goes on serving everyone else."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.agent.conftest import SECRET, Server

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    live = Server(
        tmp_path_factory.mktemp("protocol"),
        {"agent_max_message_bytes": LIMIT, "agent_ping_interval": 0.2, "agent_idle_timeout": 1},
        (),
    ).start()
    live.api.add_agent("p1")
    yield live
    live.stop()
    live.api.client.close()


def _ws(
    server: Server, name: str = "p1", secret: str = SECRET, basic: bool = True
) -> ClientConnection:
    url = server.url.replace("http", "ws") + "/api/v1/agent/ws"
    token = base64.b64encode(f"{name}:{secret}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"} if basic else None
    return connect(url, additional_headers=headers, compression=None, open_timeout=5)


def _request(msg_id: str, method: str, **params: Any) -> str:
    return json.dumps({"id": msg_id, "version": "v1", "method": method, "params": params})


def _hello(ws: ClientConnection, **params: Any) -> dict[str, Any]:
    ws.send(_request("h", "hello", concurrency=0, **params))
    while True:
        message: dict[str, Any] = json.loads(ws.recv(timeout=5))
        if message.get("id") == "h":
            return message


def _fatal(ws: ClientConnection) -> str:
    """Reads until the server's fatal_error, and checks that the server then closes."""
    while True:
        try:
            message = json.loads(ws.recv(timeout=5))
        except ConnectionClosed:
            raise AssertionError("closed without a fatal_error") from None
        if "fatal_error" in message:
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=5)
            return str(message["fatal_error"])


def test_a_well_behaved_agent_gets_answers(server: Server) -> None:
    with _ws(server) as ws:
        hello = _hello(ws, version="t", task_types=["echo"], tags=["x"])
        assert hello["result"]["agent"] == "p1"
        ws.send(_request("p", "ping", n=1))
        replies = [json.loads(ws.recv(timeout=5)) for _ in range(3)]
        assert {"id": "p", "version": "v1", "result": {"n": 1}} in replies


BAD_FRAMES = {
    "not JSON": ("{nope", "unable to decode"),
    "not an object": ("[1, 2]", "must be a JSON object"),
    "no version": ('{"id": "1", "method": "ping", "params": {}}', "missing message version"),
    "other version": ('{"id": "1", "version": "v9", "result": {}}', "unknown message version"),
    "no id": ('{"version": "v1", "method": "ping", "params": {}}', "missing message id"),
    "params not an object": (
        '{"id": "1", "version": "v1", "method": "ping", "params": []}',
        "must be an object",
    ),
    "unknown method": (_request("1", "rm.rf"), "unknown message method"),
    "missing field": (_request("1", "task_status", attempt=1, state="complete"), '"task_id"'),
    "mistyped field": (_request("1", "log", task_id="x", attempt=1, text=""), "an integer"),
    "unknown response": ('{"id": "zz", "version": "v1", "result": {}}', "unknown message id"),
    "malformed": ('{"id": "1", "version": "v1"}', "malformed message"),
    "second hello": (_request("1", "hello"), "already sent"),
    "oversized": (_request("1", "log", text="x" * (LIMIT + 1)), "over"),
}


@pytest.mark.parametrize("frame, reason", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_a_bad_frame_gets_fatal_error_and_a_close(server: Server, frame: str, reason: str) -> None:
    with _ws(server) as ws:
        _hello(ws)
        ws.send(frame)
        assert reason in _fatal(ws)
    test_a_well_behaved_agent_gets_answers(server)  # and the server goes on


def test_a_binary_frame_gets_fatal_error(server: Server) -> None:
    with _ws(server) as ws:
        _hello(ws)
        ws.send(b"\x00\x01")
        assert "binary" in _fatal(ws)


def test_the_first_message_must_be_hello(server: Server) -> None:
    with _ws(server) as ws:
        ws.send(_request("1", "ping"))
        assert "first message must be a hello" in _fatal(ws)


def test_bad_basic_credentials_are_refused_before_the_upgrade(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        _ws(server, secret="wrong")
    assert refused.value.response.status_code == 401


def test_credentials_in_hello(server: Server) -> None:
    with _ws(server, basic=False) as ws:
        assert _hello(ws, name="p1", secret=SECRET)["result"]["agent"] == "p1"
    with _ws(server, basic=False) as ws:
        ws.send(_request("h", "hello", name="p1", secret="wrong"))
        assert "invalid credentials" in _fatal(ws)


def test_a_silent_agent_is_disconnected(server: Server) -> None:
    with _ws(server) as ws:
        _hello(ws)
        # Never answer: the server pings every 0.2 s and gives up after 1 s of silence.
        assert "no message for" in _fatal(ws)


def test_a_connected_agent_is_seen_without_a_write_per_ping(server: Server) -> None:
    """The hub notes every connected agent's `last_seen` once per ping interval."""
    with _ws(server) as ws:
        _hello(ws)
        first = server.api.call("GET", "/api/v1/agents/p1")["last_seen"]
        seen = first
        deadline = time.monotonic() + 5
        while seen == first and time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=5))
            if message.get("method") in ("ping", "status"):
                ws.send(json.dumps({"id": message["id"], "version": "v1", "result": {}}))
            seen = server.api.call("GET", "/api/v1/agents/p1")["last_seen"]
        assert seen > first
