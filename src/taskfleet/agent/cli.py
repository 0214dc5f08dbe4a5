"""`taskfleet agent run | register`: click commands, wired into the main CLI as a group.

The secret comes from `--secret-file`, else from the file `register` wrote
(~/.taskfleet/agent-NAME.secret), else from `TASKFLEET_AGENT_SECRET` (through
`taskfleet.config`), else from a prompt.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import click
import httpx

from taskfleet import config, loops
from taskfleet.agent.app import build
from taskfleet.agent.settings import AgentSettings, Protocol, Transport, default_secret_file
from taskfleet.agent.spool import SpoolBusy
from taskfleet.agent.teeth import mode as teeth_mode
from taskfleet.agent.teeth.config import TeethConfig
from taskfleet.core import errors

REGISTER_TIMEOUT_SECONDS = 30.0


def _config_file(ctx: click.Context) -> Any:
    root = ctx.find_root().obj
    return root.get("config") if isinstance(root, dict) else None


def _read_secret(ctx: click.Context, name: str, secret_file: Path | None) -> str:
    path = secret_file or default_secret_file(name)
    if secret_file is not None or path.exists():
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise click.ClickException(f"cannot read the secret file: {exc}") from exc
        if not secret:
            raise click.ClickException(f"the secret file {path} is empty")
        return secret
    try:
        settings = config.load(_config_file(ctx))
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if settings.agent_secret:
        return settings.agent_secret
    return str(click.prompt(f"Secret for agent {name}", hide_input=True))


@click.group("agent")
def agent() -> None:
    """Run a taskfleet agent on this host, or register one."""


@agent.command("run")
@click.option(
    "--server", required=True, help="The server, e.g. http://taskfleet:8080 (teeth: HOST:PORT)."
)
@click.option("--name", help="This agent's account name (teeth: its id, [primary MAC]).")
@click.option(
    "--secret-file", type=click.Path(dir_okay=False, path_type=Path), help="File with the secret."
)
@click.option(
    "--protocol",
    type=click.Choice(["native", "teeth"]),
    default="native",
    show_default=True,
    help="teeth: stand in for teeth-agent (no secret; see docs/dialects/teeth.md).",
)
@click.option(
    "--teeth-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --protocol teeth: the image cache, devices and boot settings (TOML).",
)
@click.option(
    "--private-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM private key that opens payloads sealed to this agent's public key.",
)
@click.option("--tags", default="", help="Comma-separated tags, e.g. gpu,linux.")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--spool", type=click.Path(dir_okay=False, path_type=Path), help="Spool file.")
@click.option(
    "--transport", type=click.Choice(["auto", "ws", "http"]), default="auto", show_default=True
)
@click.option("--burst", is_flag=True, help="Exit once the server has no work for this agent.")
@click.option(
    "--spool-limit",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Take no new work while more reports than this wait to be sent.",
)
@click.option("--drain-seconds", type=float, default=30.0, show_default=True)
@click.option("--backoff-max", type=float, default=30.0, show_default=True)
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def run(
    ctx: click.Context,
    server: str,
    name: str | None,
    secret_file: Path | None,
    protocol: Protocol,
    teeth_config: Path | None,
    private_key: Path | None,
    tags: str,
    concurrency: int,
    spool: Path | None,
    transport: Transport,
    burst: bool,
    spool_limit: int,
    drain_seconds: float,
    backoff_max: float,
    log_level: str,
) -> None:
    """Take tasks from the server and run them until stopped (SIGTERM: finish, then exit)."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    teeth = _teeth_mode(server, name, teeth_config, burst) if protocol == "teeth" else None
    if teeth is None and not name:
        raise click.UsageError("Missing option '--name'.")
    name = teeth.name if teeth else str(name)
    settings = AgentSettings(
        server=server,
        name=name,
        secret="" if teeth else _read_secret(ctx, name, secret_file),
        tags=tuple(t.strip() for t in tags.split(",") if t.strip()),
        concurrency=concurrency,
        spool=spool,
        transport=transport,
        burst=burst,
        spool_limit=spool_limit,
        drain_seconds=drain_seconds,
        backoff_max_seconds=backoff_max,
        protocol=protocol,
        teeth=teeth.config if teeth else TeethConfig(),
        private_key=private_key,
    )
    try:
        agent_ = build(settings, teeth.handlers if teeth else None)
    except errors.Invalid as exc:
        raise click.ClickException(f"cannot load the private key: {exc.message}") from exc
    except (SpoolBusy, OSError, sqlite3.Error) as exc:
        raise click.ClickException(f"cannot open the spool: {exc}") from exc
    ctx.exit(loops.run(agent_.run()))


def _teeth_mode(
    server: str, name: str | None, config_file: Path | None, burst: bool
) -> teeth_mode.TeethMode:
    if burst:
        raise click.UsageError("--burst needs the native protocol: teeth has no idle message")
    try:
        return teeth_mode.prepare(server, name, config_file)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from exc


def write_secret(path: Path, secret: str) -> None:
    """Writes the secret to a file only its owner can read (mode 0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secret + "\n").encode())
    finally:
        os.close(fd)


@agent.command("register")
@click.option("--server", required=True, help="The server, e.g. http://taskfleet:8080.")
@click.option("--name", required=True, help="The name to register this agent under.")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to keep the credentials [~/.taskfleet/agent-NAME.secret].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing secret file.")
def register(server: str, name: str, secret_file: Path | None, force: bool) -> None:
    """Register this agent with a generated secret, where the server's policy allows."""
    path = secret_file or default_secret_file(name)
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; use --force to replace it")
    secret = secrets.token_urlsafe(32)
    write_secret(path, secret)
    try:
        response = httpx.post(
            server.rstrip("/") + "/api/v1/register",
            json={"name": name, "secret": secret},
            timeout=REGISTER_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as exc:
        path.unlink(missing_ok=True)
        raise click.ClickException(f"cannot reach {server}: {exc}") from exc
    if response.status_code != 201:
        path.unlink(missing_ok=True)
        raise click.ClickException(f"registration refused: {_detail(response)}")
    click.echo(f"Registered agent {name}; its secret is in {path} (mode 0600).")
    if not response.json().get("enabled", True):
        click.echo("An admin has to enable it before it gets work.")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    detail = body.get("detail") if isinstance(body, dict) else None
    return f"HTTP {response.status_code}: {detail or body}"
