"""`taskfleet remotes-client` (the Django Remotes client replaced) and the admin commands
`taskfleet token|command-group|command` against a real server: the click commands run in a
thread (they block on HTTP) while the server serves on the test's loop."""

from __future__ import annotations

import asyncio
import configparser
import json
import stat
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from taskfleet.cli import main
from taskfleet.remotes_client import remotes_client
from tests.api.conftest import Live
from tests.dialects.test_remotes import (
    PREFIX,
    SAY_HI,
    add_command,
    command_group,
    command_tasks,
    registration_token,
)

API_KEY = "remotes-cli-key"


async def client(settings: Path, *args: str) -> Result:
    argv = ["--settings", str(settings), "--python", sys.executable, *args]
    return await asyncio.to_thread(CliRunner().invoke, remotes_client, argv)


async def admin_cli(live: Live, home: Path, *args: str, stdin: str = "") -> Result:
    obj = {"server_url": live.base_url, "token": API_KEY, "home": str(home)}
    env = {"COLUMNS": "200"}
    return await asyncio.to_thread(
        CliRunner().invoke, main, list(args), input=stdin, obj=obj, env=env
    )


async def test_the_remotes_client_registers_and_runs_commands(
    live: Live, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    group = await command_group(admin)
    command_id = await add_command(
        admin, group, "say hi", SAY_HI, settings={"who": "cli"}, result_variables=["greeting"]
    )
    token = await registration_token(admin)
    settings = tmp_path / "client.ini"
    keys = ["--private_key", str(tmp_path / "host.key"), "--public_key", str(tmp_path / "host.pub")]

    new_host = await client(
        settings, "--action", "new_host", "--url", live.base_url + PREFIX, "--token", token,
        *keys, "--key-bits", "2048",
    )  # fmt: skip
    assert new_host.exit_code == 0, new_host.output
    assert json.loads(new_host.stdout)["status"] == "OK"
    saved = configparser.RawConfigParser()
    saved.read(settings)
    assert saved.get("server", "server_url") == live.base_url + PREFIX
    assert saved.get("endpoints", "command_post") == "/remotes/api/v1/commands/post/"
    assert {"private_key", "public_key", "uuid", "token"} <= set(saved.options("host"))
    assert stat.S_IMODE((tmp_path / "host.key").stat().st_mode) == 0o600

    status = await client(settings, "--action", "host_status")
    assert json.loads(status.stdout)["user_name"] == "host-000001"
    listed = json.loads((await client(settings, "--action", "commands_list")).stdout)
    assert listed["results"] == [{"group": group, "command": command_id}]
    processed = await client(settings, "--action", "commands_process")
    assert processed.exit_code == 0, processed.output
    ran = json.loads(processed.stdout)["commands_results"][str(command_id)]
    assert (ran["stdout"], ran["output"]["status"]) == ("hello from cli\n", "OK")
    ((task),) = await command_tasks(admin)
    assert task["status"] == "completed" and task["result"]["output"] == "hello from cli\n"

    monitor = await client(
        settings, "--action", "commands_monitor", "--interval", "1", "--iterations", "1"
    )
    assert (monitor.exit_code, monitor.stdout) == (0, "")
    again = await client(settings, "--action", "command_get", "--command", str(command_id))
    assert again.exit_code == 0 and json.loads(again.stdout)["output"]["status"] == "OK"
    assert len(await command_tasks(admin)) == 2  # asked for by id, it runs again

    registered = await client(settings, "--action", "host_register", "--token", token)
    assert registered.exit_code == 1 and "Host UUID already set" in registered.stdout
    assert json.loads((await client(settings, "--action", "discover")).stdout)["status"] == "OK"


async def test_remotes_client_errors_are_clean(live: Live, tmp_path: Path) -> None:
    settings = tmp_path / "client.ini"
    missing = await client(settings, "--action", "status")
    assert missing.exit_code == 2 and "missing URL argument" in missing.output
    missing = await client(settings, "--action", "commands_monitor")
    assert missing.exit_code == 2 and "missing monitoring interval" in missing.output
    unreachable = await client(settings, "--action", "status", "--url", "http://127.0.0.1:9/")
    assert unreachable.exit_code == 1 and unreachable.output.startswith("Error: GET")
    not_remotes = await client(settings, "--action", "status", "--url", live.base_url + "/metrics/")
    assert not_remotes.exit_code == 1 and "unexpected answer" in not_remotes.output
    unverified = await client(settings, "--action", "commands_list")
    assert unverified.exit_code == 1 and "not verified" in unverified.output


@pytest.mark.settings(api_keys=(API_KEY,))
async def test_tokens_and_commands_from_the_admin_cli(live: Live, tmp_path: Path) -> None:
    created = await admin_cli(live, tmp_path, "token", "create", "--name", "lab")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert len(token) == 40 and "only time" not in created.stdout
    table = await admin_cli(live, tmp_path, "token", "list")
    assert "lab" in table.stdout and token not in table.stdout
    revoked = await admin_cli(live, tmp_path, "token", "revoke", "1")
    assert revoked.stdout == "Registration token 1 revoked.\n"
    listed = json.loads((await admin_cli(live, tmp_path, "token", "list", "--json")).stdout)
    assert listed[0]["revoked_at"] is not None
    assert (await admin_cli(live, tmp_path, "token", "revoke", "9")).exit_code == 1

    group = await admin_cli(
        live, tmp_path, "command-group", "add", "nightly", "--order", "3",
        "--host-group", "linux", "--starts", "2030-01-01T00:00:00",
    )  # fmt: skip
    assert group.exit_code == 0, group.output
    group_id = group.stdout.strip()
    shown = json.loads((await admin_cli(live, tmp_path, "command-group", "show", group_id)).stdout)
    assert (shown["host_groups"], shown["starts_at"]) == (["linux"], "2030-01-01T00:00:00+00:00")
    assert "nightly" in (await admin_cli(live, tmp_path, "command-group", "list")).stdout

    added = await admin_cli(
        live, tmp_path, "command", "add", group_id, "hello", "-", "--setting", "who=me",
        "--result-variable", "out", "--timeout", "30", stdin="print('hi')\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    command = json.loads((await admin_cli(live, tmp_path, "command", "show", "1")).stdout)
    assert (command["source"], command["settings"], command["timeout_seconds"]) == (
        "print('hi')\n",
        {"who": "me"},
        30,
    )
    assert "hello" in (await admin_cli(live, tmp_path, "command", "list")).stdout
    assert (await admin_cli(live, tmp_path, "command", "runs", "1")).stdout == ""
    bad = await admin_cli(live, tmp_path, "command", "add", group_id, "x", "-", "--setting", "oops")
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.output
    assert (await admin_cli(live, tmp_path, "command", "remove", "1")).exit_code == 0
    assert (await admin_cli(live, tmp_path, "command-group", "remove", group_id)).exit_code == 0
    assert (await admin_cli(live, tmp_path, "command", "list", "--json")).stdout.strip() == "[]"
