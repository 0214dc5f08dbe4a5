"""The CLI in-process (click's runner) and its client settings and saved credentials.

The end-to-end CLI tests, against a real server, are in tests/e2e/.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from taskfleet import cli, cli_common, client, config
from tests.e2e.server_process import free_port


def invoke(*args: str, stdin: str | None = None, **env: str) -> click.testing.Result:
    return CliRunner().invoke(cli.main, list(args), input=stdin, env=env)


def test_client_settings_come_from_file_then_environment_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "taskfleet.toml"
    toml.write_text('server_url = "http://file:1"\ntoken = "from-file"\nhome = "/file"\n')
    env = {"TASKFLEET_SERVER_URL": "http://env:2", "TASKFLEET_HOME": "/env"}
    settings = config.load(toml, env, home="/flag")
    assert (settings.server_url, settings.token, settings.home) == (
        "http://env:2",
        "from-file",
        "/flag",
    )


def test_credentials_are_saved_for_the_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert client.load_credentials(str(home)) is None
    old = home / client.CREDENTIALS_FILE
    home.mkdir()
    old.write_text("{}")
    old.chmod(0o644)
    saved = client.Credentials(server="http://a:1", name="admin", token="t0k")

    path = client.save_credentials(str(home), saved)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert client.load_credentials(str(home)) == saved
    assert client.forget_credentials(str(home)) is True
    assert client.forget_credentials(str(home)) is False


def test_unreadable_credentials_say_how_to_recover(tmp_path: Path) -> None:
    (tmp_path / client.CREDENTIALS_FILE).write_text("not json")
    with pytest.raises(client.ClientError, match="run `taskfleet login` again"):
        client.load_credentials(str(tmp_path))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://fleet.example/", "https://fleet.example"),
        (" http://h:1// ", "http://h:1"),
    ],
)
def test_server_urls_are_normalized(given: str, expected: str) -> None:
    assert client.normalize(given) == expected
    assert client.normalize(expected) == expected


@pytest.mark.parametrize("given", ["http://", "https:///", "  "])
def test_an_empty_server_url_is_refused(given: str) -> None:
    with pytest.raises(client.ClientError, match="invalid server URL"):
        client.normalize(given)


def test_a_saved_token_goes_only_to_its_own_server(tmp_path: Path) -> None:
    home = str(tmp_path)
    client.save_credentials(home, client.Credentials(server="http://a:1", name="n", token="T"))
    defaults = config.load(env={}, home=home)

    with client.connect(defaults) as api:
        assert (api.server, api.token) == ("http://a:1", "T")
    with client.connect(config.load(env={}, home=home, server_url="a:1")) as api:
        assert api.token == "T"
    with client.connect(config.load(env={}, home=home, server_url="http://b:2")) as api:
        assert (api.server, api.token) == ("http://b:2", "")
    with client.connect(config.load(env={}, home=home, token="key")) as api:
        assert (api.server, api.token) == ("http://a:1", "key")


def test_an_unreachable_server_is_one_clean_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("--home", str(tmp_path), "login", "--server", url, "admin", stdin="pw\n")
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: the server at {url} is unreachable ([Errno 111] Connection refused)\n"
    )
    assert not (tmp_path / client.CREDENTIALS_FILE).exists()


def test_without_a_server_or_login_the_default_server_is_asked(tmp_path: Path) -> None:
    with client.connect(config.load(env={}, home=str(tmp_path))) as api:
        assert (api.server, api.token) == (client.DEFAULT_SERVER, "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "a", "--group", "g"], "give only one of --agent, --group and --tag"),
        (["--tag", "x", "--agent", "a"], "give only one of --agent, --group and --tag"),
        (["--broadcast"], "--broadcast needs --group"),
        (["{bad json"], "not valid JSON"),
        (["--max-attempts", "0"], "--max-attempts"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_submit_checks_its_arguments_before_calling(args: list[str], message: str) -> None:
    result = invoke("--server", f"127.0.0.1:{free_port()}", "task", "submit", "echo", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_payload_can_come_from_stdin() -> None:
    assert cli._payload(None) is None
    assert cli._payload('{"a": [1]}') == {"a": [1]}
    with pytest.raises(click.BadParameter):
        cli._payload("{")
    result = invoke(
        "--server", f"127.0.0.1:{free_port()}", "task", "submit", "echo", "-", stdin="{nope"
    )
    assert result.exit_code == 2 and "not valid JSON" in result.stderr


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group)
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


def test_every_command_has_help() -> None:
    commands = _commands(cli.main)
    for names in [(), *commands]:
        result = invoke(*names, "--help")
        assert result.exit_code == 0, (names, result.output)
        assert "Usage: " in result.output
    expected = {("login",), ("logout",), ("events",), ("server",), ("account", "add")}
    expected |= {("task", c) for c in ("submit", "list", "show", "cancel", "requeue", "logs")}
    expected |= {("agent", "list"), ("agent", "show")}
    assert expected <= set(commands)


def test_json_output_is_plain_json(capsys: pytest.CaptureFixture[str]) -> None:
    cli_common.print_json({"é": [1, None]})
    assert json.loads(capsys.readouterr().out) == {"é": [1, None]}


def test_agent_options_without_a_subcommand_run_the_agent(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.secret"
    result = invoke(
        "agent", "--server", "http://127.0.0.1:1", "--name", "w1", "--secret-file", str(missing)
    )
    assert result.exit_code != 0
    assert "cannot read the secret file" in result.output
