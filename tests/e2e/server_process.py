"""A taskfleet server as a real subprocess: start it, wait until it answers, SIGKILL it,
start it again on the same database. Also: running the `taskfleet` CLI as a subprocess.

Nothing here sleeps for a fixed time: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")

START_SECONDS = 30.0  #: a server must answer within this
STOP_SECONDS = 15.0
CLI_SECONDS = 60.0
POLL_SECONDS = 0.05  #: between two looks at a condition


def taskfleet_argv(*args: str) -> list[str]:
    """The installed console script, next to this Python if it is there."""
    beside = Path(sys.executable).with_name("taskfleet")
    exe = str(beside) if beside.exists() else shutil.which("taskfleet")
    assert exe, "the taskfleet console script is not installed"
    return [exe, *args]


def scrubbed_env(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment without TASKFLEET_*, with its own credentials folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    env.update(TASKFLEET_HOME=str(home), PYTHONUNBUFFERED="1", **settings)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll(condition: Callable[[], T | None], what: str, timeout: float = START_SECONDS) -> T:
    """Calls `condition` until it returns something other than None, or fails at the deadline."""
    deadline = time.monotonic() + timeout
    while (value := condition()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(POLL_SECONDS)
    return value


def run_cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `taskfleet ARGS…` to completion; the caller checks returncode, stdout, stderr."""
    return subprocess.run(
        taskfleet_argv(*args),
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_SECONDS,
        check=False,
    )


@dataclass
class ServerProcess:
    """`taskfleet server` on 127.0.0.1 with its database in `workdir`."""

    workdir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    argv: list[str] = field(default_factory=list)  #: default: --db FILE --port PORT
    admin_password: str | None = None  #: printed by the first start on a fresh database
    starts: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Path:
        return self.workdir / "taskfleet.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the latest start printed on stdout."""
        return (self.workdir / f"server-{self.starts}.out").read_text()

    def errors(self) -> str:
        return (self.workdir / f"server-{self.starts}.err").read_text()

    def start(self) -> ServerProcess:
        """Starts the server and returns once its API answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        argv = self.argv or ["--db", str(self.db), "--port", str(self.port)]
        stdout = self.workdir / f"server-{self.starts}.out"
        stderr = self.workdir / f"server-{self.starts}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                taskfleet_argv("server", *argv),
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.workdir,
            )
        poll(self._answers, f"the server on port {self.port}")
        if found := re.search(r"password: (\S+)", self.output()):
            self.admin_password = found[1]
        return self

    def _answers(self) -> bool | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.errors()}")
        try:
            response = httpx.get(f"{self.url}/api/v1/openapi.json", timeout=2.0)
        except httpx.TransportError:
            return None
        return True if response.status_code == 200 else None

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_SECONDS)

    def restart_after_kill9(self) -> ServerProcess:
        self.kill9()
        return self.start()

    def stop(self) -> None:
        """SIGTERM and wait for a graceful exit; SIGKILL if it does not come."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill9()

    def login(self, name: str = "admin", secret: str | None = None) -> httpx.Client:
        """An httpx client on /api/v1 carrying a fresh session token."""
        secret = secret if secret is not None else self.admin_password
        assert secret is not None, "no admin password was printed"
        response = httpx.post(f"{self.url}/api/v1/login", json={"name": name, "secret": secret})
        response.raise_for_status()
        return self.client(f"Bearer {response.json()['token']}")

    def client(self, authorization: str | None = None) -> httpx.Client:
        headers = {"authorization": authorization} if authorization else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30.0)

    def agent_client(self, name: str, secret: str) -> httpx.Client:
        """An httpx client on /api/v1 with an agent's HTTP Basic credentials."""
        return httpx.Client(base_url=f"{self.url}/api/v1", auth=(name, secret), timeout=30.0)
