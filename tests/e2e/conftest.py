"""End-to-end fixtures: the server and the CLI as real subprocesses on loopback.

Each server gets its own folder, SQLite file, port and credentials folder (TASKFLEET_HOME),
and a scrubbed environment, so nothing leaks between tests or from the developer's shell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.server_process import ServerProcess, run_cli, scrubbed_env

AGENT_SECRET = "agent-secret-1"
#: Short leases and sweeps, so that an expired lease shows within a test's time, yet long
#: enough for a loaded CI machine to claim and report within one lease.
FAST_LEASES = {
    "TASKFLEET_LEASE_SECONDS": "3",
    "TASKFLEET_REAP_INTERVAL": "0.2",
    "TASKFLEET_POLL_INTERVAL": "0.5",
}


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Builds servers (not yet started) in `tmp_path`; stops them all at the end."""
    made: list[ServerProcess] = []

    def make(*argv: str, **settings: str) -> ServerProcess:
        workdir = tmp_path / f"server-{len(made) + 1}"
        workdir.mkdir()
        env = scrubbed_env(workdir / "home", **settings)
        made.append(ServerProcess(workdir=workdir, env=env, argv=list(argv)))
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A running server on a fresh SQLite database, with default settings."""
    return make_server().start()


def add_agent_account(server: ServerProcess, name: str, secret: str = AGENT_SECRET) -> None:
    """`taskfleet account add NAME agent` on the server's database, secret on stdin."""
    done = run_cli(
        server.env, "account", "add", name, "agent", "--db", str(server.db), stdin=secret + "\n"
    )
    assert done.returncode == 0, done.stderr
