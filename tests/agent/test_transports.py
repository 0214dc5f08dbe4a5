"""The agent's transports: long-poll, falling back to it, registering, and a server that
sends garbage (a tiny fake websocket server, for that case only)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from tests.agent.conftest import Api, StartAgent, StartServer, free_port, wait_for


def _tasks(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        if i % 2:
            yield {"type": "shell", "payload": {"cmd": f"echo line {i}; echo oops >&2", "tail": 5}}
        else:
            yield {"type": "echo", "payload": [i]}


def _check_done(api: Api, created: list[dict[str, Any]]) -> None:
    tasks = {t["id"]: t for t in api.tasks()}
    assert {t["status"] for t in tasks.values()} == {"completed"}
    for i, task in enumerate(created):
        if i % 2:
            assert tasks[task["id"]]["result"]["output"] == f"line {i}\nstderr: oops\n"
            assert sorted(api.logs(task["id"]).splitlines()) == [f"line {i}", "stderr: oops"]
        else:
            assert tasks[task["id"]]["result"] == [i]


def test_long_poll_completes_tasks(start_server: StartServer, start_agent: StartAgent) -> None:
    server = start_server()
    server.api.add_agent("h1")
    created = server.api.submit(*_tasks(20))
    agent = start_agent(server, "h1", "--transport", "http", "--burst", "--concurrency", "3")
    assert agent.wait(60) == 0
    _check_done(server.api, created)


def test_the_agent_falls_back_to_long_poll_when_websockets_are_blocked(
    start_server: StartServer, start_agent: StartAgent
) -> None:
    server = start_server("--no-websocket")
    server.api.add_agent("h2")
    created = server.api.submit(*_tasks(6))
    agent = start_agent(server, "h2", "--burst")
    assert agent.wait(60) == 0
    _check_done(server.api, created)
    assert "using HTTP long-poll" in agent.log.read_text()


def test_register_writes_a_private_secret_file_the_agent_then_uses(
    start_server: StartServer, start_agent: StartAgent, tmp_path: Path
) -> None:
    server = start_server()
    server.api.call("PUT", "/api/v1/registration", json={"policy": "open"})
    secret_file = tmp_path / "r1.secret"
    argv = [sys.executable, "-m", "taskfleet.agent", "register", "--server", server.url]
    done = subprocess.run(
        [*argv, "--name", "r1", "--secret-file", str(secret_file)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

    [task] = server.api.submit({"type": "echo", "payload": "registered"})
    assert start_agent(server, "r1", "--burst").wait(30) == 0
    assert server.api.task(task["id"])["result"] == "registered"


def test_register_is_refused_when_the_policy_is_closed(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    secret_file = tmp_path / "r2.secret"
    argv = [sys.executable, "-m", "taskfleet.agent", "register", "--server", server.url]
    done = subprocess.run(
        [*argv, "--name", "r2", "--secret-file", str(secret_file)], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "disabled" in done.stderr
    assert not secret_file.exists()


BAD_FROM_SERVER: list[str | bytes] = [
    "{not json",
    b"\x00binary",
    "[1, 2, 3]",
    '{"id": "s1", "method": "ping", "params": {}}',
    '{"id": "s1", "version": "v1", "method": "task.run", "params": {}}',
    '{"id": "s1", "version": "v1", "method": "task.run", "params": {"task_id": "x"}}',
    '{"id": "s1", "version": "v1", "method": "reboot.now", "params": {}}',
    '{"id": "nobody-asked", "version": "v1", "result": {}}',
    '{"id": "s1", "version": "v1"}',
    '{"version": "v1", "fatal_error": "go away"}',
    "x" * (3 * 1024 * 1024),  # over the agent's message limit
]


class FakeServer:
    """Answers hello, then sends connection N the Nth bad message; after the last one it
    behaves, answering every request with an empty result."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self.fatal_errors: list[str] = []
        self._server = serve(self._handle, "127.0.0.1", self.port, compression=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, ws: ServerConnection) -> None:
        n, self.connections = self.connections, self.connections + 1
        try:
            hello = json.loads(ws.recv(timeout=10))
            ws.send(json.dumps({"id": hello["id"], "version": "v1", "result": {}}))
            if n < len(BAD_FROM_SERVER):
                ws.send(BAD_FROM_SERVER[n])
            for message in ws:
                frame = json.loads(message)
                if "fatal_error" in frame:
                    self.fatal_errors.append(frame["fatal_error"])
                elif "method" in frame:
                    ws.send(json.dumps({"id": frame["id"], "version": "v1", "result": {}}))
        except ConnectionClosed:
            pass

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(10)


def test_bad_messages_from_the_server_never_crash_the_agent(start_agent: StartAgent) -> None:
    fake = FakeServer()
    try:
        agent = start_agent(f"http://127.0.0.1:{fake.port}", "f1", "--transport", "ws")
        wait_for(lambda: fake.connections > len(BAD_FROM_SERVER), 60, "the agent to reconnect")
        assert agent.proc.poll() is None
        assert len(fake.fatal_errors) >= len(BAD_FROM_SERVER) - 2  # not for fatal or oversized
        assert agent.terminate() == 0
    finally:
        fake.close()
