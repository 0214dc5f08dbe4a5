"""`dutserver`, the original command line, on the same database as `taskfleet`."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.server_process import CLI_SECONDS, free_port, poll, run_cli, scrubbed_env


def dutserver(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("dutserver"))
    return subprocess.run(
        [exe, *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_SECONDS,
        check=False,
    )


def test_usage_and_unknown_subcommands(tmp_path: Path) -> None:
    env = scrubbed_env(tmp_path / "home")
    usage = dutserver(env)
    assert usage.returncode == 0 and "server PORT DBFILE" in usage.stderr
    unknown = dutserver(env, "frobnicate")
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "Unknown subcommand.")
    bad = dutserver(env, "addaccount", "x.db", "n", "superuser")
    assert bad.returncode == 1 and "agent|admin" in bad.stderr


def test_accounts_are_shared_with_taskfleet(tmp_path: Path) -> None:
    env = scrubbed_env(tmp_path / "home")
    db = str(tmp_path / "fleet.db")
    added = dutserver(env, "addaccount", db, "agent1", "agent", stdin="s3cret\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "Enter password for account: "
    assert added.stderr.strip() == "OK."
    assert dutserver(env, "addaccount", db, "boss", "admin", stdin="pw\n").returncode == 0
    listed = run_cli(env, "account", "list", "--db", db).stdout.splitlines()
    assert listed == ["agent1\tagent\tenabled", "boss\tadmin\tenabled"]
    again = dutserver(env, "addaccount", db, "agent1", "agent", stdin="x\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert dutserver(env, "remove", db, "agent1").returncode == 0
    assert dutserver(env, "delaccount", db, "boss").returncode == 0
    assert run_cli(env, "account", "list", "--db", db).stdout == ""
    gone = dutserver(env, "remove", db, "agent1")
    assert gone.returncode == 1 and "no account named" in gone.stderr


def test_the_server_form_serves_the_dut_routes(tmp_path: Path) -> None:
    env = scrubbed_env(tmp_path / "home")
    db = str(tmp_path / "fleet.db")
    assert dutserver(env, "addaccount", db, "boss", "admin", stdin="pw\n").returncode == 0
    port = free_port()
    exe = str(Path(sys.executable).with_name("dutserver"))
    server = subprocess.Popen(
        [exe, "server", str(port), db],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            def login() -> httpx.Response | None:
                try:
                    return client.get("/login", params={"user": "boss", "pass": "pw"})
                except httpx.TransportError:
                    return None

            answer = poll(login, "dutserver's /login")
            assert answer.json()["msg"] == "Logged in"
    finally:
        server.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert server.wait(15) in (0, -signal.SIGTERM)
