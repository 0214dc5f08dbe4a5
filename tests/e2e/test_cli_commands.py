"""The `taskfleet` CLI as an operator runs it: subprocesses against a real server, with a
small agent (plain httpx on the native HTTP agent protocol) doing the work."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import AGENT_SECRET
from tests.e2e.server_process import ServerProcess, free_port, run_cli, scrubbed_env

API_KEY = "e2e-api-key"
CLAIM_WAIT_SECONDS = 0.5  #: how soon the agent loop notices it should stop


class AgentLoop(threading.Thread):
    """Claims tasks, reports progress, a log line and an event, then completes each task
    with `{"echo": payload}`, or fails it when the payload is `{"fail": message}`."""

    def __init__(self, server: ServerProcess, name: str) -> None:
        super().__init__(name=f"agent-{name}", daemon=True)
        self.http = server.agent_client(name, AGENT_SECRET)
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.http:
            while not self.stopping.is_set():
                response = self.http.post("/agent/claim", params={"wait": CLAIM_WAIT_SECONDS})
                response.raise_for_status()
                if response.status_code == 200:
                    self.work(response.json())

    def work(self, task: dict[str, Any]) -> None:
        path, attempt = f"/agent/tasks/{task['id']}", task["attempt"]
        report = {"attempt": attempt, "percent": 50, "activity": "halfway"}
        self.http.post(f"{path}/progress", json=report).raise_for_status()
        line = {"attempt": attempt, "text": f"working on {task['id']}\n"}
        self.http.post(f"{path}/log", json=line).raise_for_status()
        self.http.post("/events", json={"ran": task["id"]}).raise_for_status()
        payload = task["payload"]
        if isinstance(payload, dict) and "fail" in payload:
            outcome = {"status": "error", "msg": payload["fail"]}
        else:
            outcome = {"status": "complete", "result": {"echo": payload}}
        self.http.post(f"{path}/result", json={"attempt": attempt, **outcome}).raise_for_status()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for this module, an admin logged in through the CLI, an agent at work
    (`busy`) and one that never claims (`idle`)."""
    workdir = tmp_path_factory.mktemp("fleet")
    env = scrubbed_env(workdir / "home", TASKFLEET_API_KEYS=API_KEY)
    server = ServerProcess(workdir=workdir, env=env).start()
    with server.login() as admin:  # quicker than two `taskfleet account add` processes
        for name in ("busy", "idle"):
            account = {"name": name, "role": "agent", "secret": AGENT_SECRET}
            admin.post("/accounts", json=account).raise_for_status()
    login = run_cli(
        env, "login", "--server", server.url, "admin", stdin=f"{server.admin_password}\n"
    )
    assert login.returncode == 0, login.stderr
    agent = AgentLoop(server, "busy")
    agent.start()
    yield server
    agent.stopping.set()
    agent.join()
    server.stop()


@pytest.fixture
def cli(fleet: ServerProcess) -> Callable[..., Any]:
    """Runs `taskfleet ARGS…` as the logged-in admin; returns the finished process."""
    return lambda *args, stdin=None: run_cli(fleet.env, *args, stdin=stdin)


def submit(cli: Callable[..., Any], *args: str) -> int:
    done = cli("task", "submit", *args)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_account_commands_work_on_the_database(tmp_path: Path) -> None:
    env = scrubbed_env(tmp_path / "home")
    db = str(tmp_path / "accounts.db")
    added = run_cli(env, "account", "add", "robot-1", "agent", "--db", db, stdin="pw\n")
    assert added.returncode == 0, added.stderr
    assert run_cli(env, "account", "add", "ops", "admin", "--db", db, stdin="pw\n").returncode == 0
    listed = run_cli(env, "account", "list", "--db", db).stdout.splitlines()
    assert sorted(listed) == ["ops\tadmin\tenabled", "robot-1\tagent\tenabled"]

    taken = run_cli(env, "account", "add", "robot-1", "agent", "--db", db, stdin="pw\n")
    assert taken.returncode == 1 and taken.stderr.startswith("Error: ")
    assert "Traceback" not in taken.stderr
    assert run_cli(env, "account", "remove", "robot-1", "--db", db).returncode == 0
    listed = run_cli(env, "account", "list", "--db", db).stdout.splitlines()
    assert listed == ["ops\tadmin\tenabled"]


def test_positional_server_form_login_and_logout(tmp_path: Path) -> None:
    port = free_port()
    env = scrubbed_env(tmp_path / "home")
    server = ServerProcess(workdir=tmp_path, env=env, port=port, argv=[str(port), "pos.db"])
    try:
        server.start()
        assert (tmp_path / "pos.db").exists()
        wrong = run_cli(env, "login", "--server", server.url, "admin", stdin="nope\n")
        assert wrong.returncode == 1 and "invalid credentials" in wrong.stderr

        login = run_cli(
            env, "login", "--server", server.url, "admin", stdin=f"{server.admin_password}\n"
        )
        assert login.returncode == 0, login.stderr
        saved = tmp_path / "home" / "credentials.json"
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert json.loads(saved.read_text())["server"] == server.url
        assert run_cli(env, "task", "list").returncode == 0

        assert run_cli(env, "logout").returncode == 0
        assert not saved.exists()
        after = run_cli(env, "--server", server.url, "task", "list")
        assert after.returncode == 1 and "taskfleet login" in after.stderr
    finally:
        server.stop()


def test_submit_and_wait_prints_the_result(cli: Callable[..., Any]) -> None:
    done = cli("task", "submit", "echo", '{"n": 1}', "--agent", "busy", "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"echo": {"n": 1}}
    assert "100%" in done.stderr


def test_wait_on_a_failing_task_exits_non_zero(cli: Callable[..., Any]) -> None:
    done = cli("task", "submit", "echo", '{"fail": "disk full"}', "--agent", "busy", "--wait")
    assert done.returncode == 3
    assert done.stdout == ""
    assert "failed: disk full" in done.stderr


def test_list_show_cancel_and_requeue(cli: Callable[..., Any]) -> None:
    task_id = submit(cli, "idle-job", "[1, 2]", "--agent", "idle", "--priority", "7")

    page = json.loads(cli("task", "list", "--type", "idle-job", "--json").stdout)
    assert [(t["id"], t["status"], t["priority"]) for t in page["tasks"]] == [
        (task_id, "queued", 7)
    ]
    table = cli("task", "list", "--status", "queued").stdout
    assert str(task_id) in table and "agent:idle" in table

    shown = json.loads(cli("task", "show", str(task_id)).stdout)
    assert (shown["id"], shown["payload"], shown["target"]) == (task_id, [1, 2], "idle")

    assert cli("task", "cancel", str(task_id)).stdout.strip() == f"Task {task_id}: cancelled"
    assert cli("task", "requeue", str(task_id)).stdout.strip() == f"Task {task_id}: queued"
    assert cli("task", "cancel", str(task_id)).returncode == 0


def test_logs_and_follow(cli: Callable[..., Any]) -> None:
    task_id = submit(cli, "echo", '"hi"', "--agent", "busy")
    followed = cli("task", "logs", str(task_id), "--follow")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == f"working on {task_id}\n"
    assert cli("task", "logs", str(task_id)).stdout == followed.stdout


def test_agents_and_events(cli: Callable[..., Any]) -> None:
    task_id = submit(cli, "echo", "--agent", "busy")
    assert cli("task", "submit", "echo", "--agent", "busy", "--wait").returncode == 0

    table = cli("agent", "list").stdout
    assert "busy" in table and "idle" in table
    agents = {a["name"]: a for a in json.loads(cli("agent", "list", "--json").stdout)}
    assert agents["busy"]["online"] is True

    shown = json.loads(cli("agent", "show", "idle").stdout)
    assert shown["name"] == "idle" and shown["enabled"] is True

    lines = cli("events", "busy").stdout
    assert f'{{"ran": {task_id}}}' in lines
    newest = json.loads(cli("events", "busy", "--limit", "1", "--json").stdout)
    assert len(newest) == 1 and newest[0]["data"]["ran"] > task_id


def test_errors_are_one_clean_line(cli: Callable[..., Any], fleet: ServerProcess) -> None:
    def error_of(done: Any, code: int = 1) -> str:
        assert done.returncode == code, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return str(done.stderr.strip().splitlines()[-1])

    assert error_of(cli("task", "show", "999999")) == "Error: no task 999999"
    assert error_of(cli("events", "nobody")) == "Error: no agent named 'nobody'"
    assert "unreachable" in error_of(cli("--server", f"127.0.0.1:{free_port()}", "task", "list"))
    assert "not valid JSON" in error_of(cli("task", "submit", "echo", "{nope"), code=2)
    assert "--broadcast needs --group" in error_of(cli("task", "submit", "x", "--broadcast"), 2)
    refused = error_of(cli("task", "list", "--token", "wrong"))
    assert "unknown or expired session" in refused


def test_an_api_key_works_without_login(fleet: ServerProcess, tmp_path: Path) -> None:
    env = scrubbed_env(tmp_path / "fresh-home", TASKFLEET_SERVER_URL=fleet.url)
    assert run_cli(env, "task", "list").returncode == 1
    with_flag = run_cli(env, "task", "list", "--json", "--token", API_KEY)
    assert with_flag.returncode == 0, with_flag.stderr
    env["TASKFLEET_TOKEN"] = API_KEY
    assert run_cli(env, "agent", "list", "--json").returncode == 0
