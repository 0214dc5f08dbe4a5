"""Real server and agent processes on loopback for the agent tests.

`start_server(**settings)` runs uvicorn with `taskfleet.app.build` in a subprocess
(`_serve.py`) on a fresh SQLite file; `start_agent(server, name, *flags)` runs
`python -m taskfleet.agent run …`. Both are stopped (killed if need be) after the test.
Tests wait on conditions with `wait_for` (a deadline, never a fixed sleep). A failing
test shows the server's and agents' logs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
API_KEY = "agent-tests-admin-key"
SECRET = "agent-test-secret"
START_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Polls `condition` until it returns something truthy; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def pid_gone(pid: int) -> bool:
    """True when the process is gone, or a zombie (dead, waiting for its parent to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


class Api:
    """The operator's side: the native REST API with an admin API key."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"authorization": f"Bearer {API_KEY}"}, timeout=30
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def add_agent(self, name: str, secret: str = SECRET) -> None:
        self.call(
            "POST", "/api/v1/accounts", json={"name": name, "role": "agent", "secret": secret}
        )

    def submit(self, *tasks: dict[str, Any]) -> list[dict[str, Any]]:
        created: list[dict[str, Any]] = self.call(
            "POST", "/api/v1/tasks/batch", json={"tasks": list(tasks)}
        )
        return created

    def task(self, task_id: int) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/api/v1/tasks/{task_id}")
        return found

    def tasks(self, **filters: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.call(
                "GET", "/api/v1/tasks", params={**filters, "after": after, "limit": 1000}
            )
            found += page["tasks"]
            if page["next_after"] is None:
                return found
            after = page["next_after"]

    def logs(self, task_id: int) -> str:
        return "".join(c["text"] for c in self.call("GET", f"/api/v1/tasks/{task_id}/logs"))


class Server:
    def __init__(self, root: Path, settings: dict[str, Any], flags: tuple[str, ...]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"server-{self.port}.log"
        self.flags = flags
        self.env = {**os.environ, "TASKFLEET_DB": str(root / "taskfleet.db")}
        self.env["TASKFLEET_API_KEYS"] = API_KEY
        for key, value in settings.items():
            self.env[f"TASKFLEET_{key.upper()}"] = str(value)
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = Api(self.url)

    def start(self) -> Server:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "_serve.py"), str(self.port), *self.flags],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, START_SECONDS, f"the server on port {self.port}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited:\n{self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/api/v1/openapi.json", timeout=1).is_success
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server dies mid-work, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


StartServer = Callable[..., Server]


class AgentProcess:
    def __init__(
        self, root: Path, server: str, name: str, flags: tuple[str, ...], env: dict[str, str]
    ) -> None:
        self.name = name
        self.spool = root / f"{name}.spool"
        self.log = root / f"agent-{name}.log"
        secret_file = root / f"{name}.secret"
        if not secret_file.exists():
            secret_file.write_text(SECRET)
        argv = [sys.executable, "-m", "taskfleet.agent", "run", "--server", server]
        argv += ["--name", name, "--secret-file", str(secret_file), "--spool", str(self.spool)]
        argv += ["--backoff-max", "0.5", "--log-level", "info", *flags]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )

    def wait(self, timeout: float) -> int:
        """The exit code, once the agent exits by itself."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent {self.name} still runs after {timeout:g} s") from None

    def terminate(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def spooled(self) -> list[tuple[str, str]]:
        """The reports waiting in this agent's spool: (method, params as JSON)."""
        if not self.spool.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.spool, timeout=5)) as db:
            return list(db.execute("SELECT method, params FROM reports ORDER BY id"))


StartAgent = Callable[..., AgentProcess]


@pytest.fixture
def start_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*flags: str, **settings: Any) -> Server:
        server = Server(tmp_path, settings, flags).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        server.api.client.close()
        _show_log_on_failure(request, server.log)


@pytest.fixture
def start_agent(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., AgentProcess]]:
    agents: list[AgentProcess] = []

    def start(
        server: Server | str, name: str, *flags: str, env: dict[str, str] | None = None
    ) -> AgentProcess:
        url = server.url if isinstance(server, Server) else server
        agent = AgentProcess(tmp_path, url, name, flags, env or {})
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        if agent.proc.poll() is None:
            agent.kill9()
        _show_log_on_failure(request, agent.log)


def _show_log_on_failure(request: pytest.FixtureRequest, log: Path) -> None:
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and log.exists():
        sys.stderr.write(f"\n----- {log.name} -----\n{log.read_text()[-20_000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
