"""Starting up: the version, and settings errors that say what is wrong instead of a trace."""

from __future__ import annotations

from pathlib import Path

from taskfleet import __version__
from tests.e2e.server_process import run_cli, scrubbed_env


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_version(tmp_path: Path) -> None:
    done = run_cli(scrubbed_env(tmp_path), "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"taskfleet, version {__version__}"


def test_a_bad_environment_value_is_a_clear_error(tmp_path: Path) -> None:
    env = scrubbed_env(tmp_path, TASKFLEET_PORT="eighty")
    done = run_cli(env, "server", "--db", str(tmp_path / "t.db"))
    assert done.returncode == 1
    assert last_line(done.stderr) == "Error: Config 'port' has value 'eighty'. Not a valid int."
    assert not (tmp_path / "t.db").exists()


def test_a_bad_config_file_is_a_clear_error(tmp_path: Path) -> None:
    env = scrubbed_env(tmp_path)
    config = tmp_path / "taskfleet.toml"
    config.write_text('lease_seconds = "soon"\n')
    done = run_cli(env, "--config", str(config), "server")
    assert done.returncode == 1
    assert last_line(done.stderr) == (
        "Error: Config 'lease_seconds' has value 'soon'. Not a valid float."
    )

    config.write_text("colour = 'blue'\n")
    done = run_cli(env, "--config", str(config), "task", "list")
    assert done.returncode == 1
    assert last_line(done.stderr) == f"Error: unknown setting 'colour' in {config}"

    done = run_cli(env, "--config", str(tmp_path / "missing.toml"), "server")
    assert done.returncode == 1 and "missing.toml" in last_line(done.stderr)
    assert "Traceback" not in done.stderr


def test_a_bad_flag_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli(scrubbed_env(tmp_path), "server", "8080", "a.db", "extra")
    assert done.returncode == 2
    assert "positional form is `taskfleet server PORT DBFILE`" in done.stderr
