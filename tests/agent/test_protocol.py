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
    ws.send(_request("h", "hello", **{"concurrency": 0, **params}))
    while True:
        message: dict[str, Any] = json.loads(ws.recv(timeout=5))
        if message.get("id") == "h":
            return message


def _fatal(ws: ClientConnection) -> str:
    """Reads until the server's fatal_error, and checks that the server then closes."""
    while True:
        try:
            received = json.loads(ws.recv(timeout=5))
        except ConnectionClosed:
            raise AssertionError("closed without a fatal_error") from None
        message = received[-1] if isinstance(received, list) else received  # fatal comes last
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


def _messages(ws: ClientConnection, count: int) -> list[Any]:
    """The next `count` websocket messages, parsed (pings from the server skipped)."""
    got: list[Any] = []
    while len(got) < count:
        message = json.loads(ws.recv(timeout=5))
        if isinstance(message, dict) and message.get("method") == "ping":
            ws.send(json.dumps({"id": message["id"], "version": "v1", "result": {}}))
            continue
        got.append(message)
    return got


def _frames(messages: list[Any]) -> list[dict[str, Any]]:
    return [f for m in messages for f in (m if isinstance(m, list) else [m])]


@pytest.mark.parametrize("batch", [True, False], ids=["batching", "one by one"])
def test_arrays_go_only_to_an_agent_that_reads_them(server: Server, batch: bool) -> None:
    name = f"batch-{batch}".lower()
    server.api.add_agent(name)
    mine = {"type": "echo", "agent": name}
    queued = server.api.submit(*(dict(mine, payload=i) for i in range(3)))
    with _ws(server, name) as ws:
        hello = _hello(ws, concurrency=3, task_types=["echo"], batch=batch)
        assert hello["result"]["batch"] is True  # the server reads arrays from anyone
        status, pushed = _messages(ws, 2)
        assert status["method"] == "status"
        # The three tasks were claimed together and pushed together: as one array, or as
        # three messages to an agent that did not say it reads arrays.
        if batch:
            assert isinstance(pushed, list)
            runs = pushed
        else:
            runs = [pushed, *_messages(ws, 2)]
            assert all(isinstance(r, dict) for r in runs)
        assert [r["method"] for r in runs] == ["task.run"] * 3
        assert sorted(r["params"]["task_id"] for r in runs) == sorted(t["id"] for t in queued)

        # The agent answers them and reports all three outcomes in one array.
        answers = [{"id": r["id"], "version": "v1", "result": {"accepted": True}} for r in runs]
        reports = [
            json.loads(
                _request(
                    f"r{i}",
                    "task_status",
                    task_id=r["params"]["task_id"],
                    attempt=1,
                    state="complete",
                    result=i,
                )
            )
            for i, r in enumerate(runs)
        ]
        ws.send(json.dumps([*answers, *reports]))
        frames = _frames(_messages(ws, 1 if batch else 3))
        # The answers, in the order sent (with batching, the server's own next requests,
        # such as `idle` for the freed slots, may share their message).
        replies = [f for f in frames if "method" not in f]
        assert [r["id"] for r in replies] == ["r0", "r1", "r2"]
        assert frames[:3] == replies
        assert all(r["result"] == {"status": "completed"} for r in replies)
    results = {t["id"]: t["result"] for t in server.api.tasks(status="completed")}
    assert [results[r["params"]["task_id"]] for r in runs] == [0, 1, 2]


BAD_ARRAYS = {
    "empty": ("[]", "an array of 1 to"),
    "not objects": ("[1, 2]", "an array of 1 to"),
    "too long": (json.dumps([json.loads(_request(str(i), "ping")) for i in range(1001)]), "1000"),
    "a bad frame inside": (
        "[" + _request("1", "ping") + ',{"id": "2", "version": "v1"}]',
        "malformed message",
    ),
}


@pytest.mark.parametrize("frame, reason", BAD_ARRAYS.values(), ids=BAD_ARRAYS.keys())
def test_a_bad_array_gets_fatal_error(server: Server, frame: str, reason: str) -> None:
    with _ws(server) as ws:
        _hello(ws, batch=True)
        ws.send(frame)
        assert reason in _fatal(ws)


def test_hello_cannot_come_in_an_array(server: Server) -> None:
    with _ws(server) as ws:
        ws.send("[" + _request("h", "hello") + "," + _request("p", "ping") + "]")
        assert "first message must be a hello" in _fatal(ws)
