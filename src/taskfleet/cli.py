"""The one entry point: `taskfleet server | account … | task … | agent … | events …`."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from taskfleet import __version__, config
from taskfleet.config import Settings
from taskfleet.core import errors
from taskfleet.core.accounts import AccountService
from taskfleet.core.models import Role
from taskfleet.core.ports import SystemClock
from taskfleet.store.sql import open_store

T = TypeVar("T")


def _settings(ctx: click.Context, **flags: Any) -> Settings:
    try:
        return config.load(ctx.obj.get("config"), **flags)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _run(coro: Awaitable[T]) -> T:
    """Runs a coroutine, turning domain errors into a clean CLI error."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except errors.Error as exc:
        raise click.ClickException(exc.message) from exc


async def _with_accounts(settings: Settings, use: Callable[[AccountService], Awaitable[T]]) -> T:
    store = await open_store(settings.db, settings.sqlite_synchronous)
    try:
        return await use(AccountService(store, SystemClock()))
    finally:
        await store.close()


@click.group()
@click.version_option(__version__, prog_name="taskfleet")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML settings file.",
)
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """taskfleet: run work on a fleet of machines."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_file


@main.command()
@click.argument("positional", nargs=-1)
@click.option("--host", default=None, help="Address to listen on [127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [8080].")
@click.option("--db", default=None, help="SQLite file or postgresql:// URL [taskfleet.db].")
@click.pass_context
def server(
    ctx: click.Context,
    positional: tuple[str, ...],
    host: str | None,
    port: int | None,
    db: str | None,
) -> None:
    """Run the server. Also accepts dutserver's form: `server PORT DBFILE`."""
    if positional:
        if len(positional) != 2 or not positional[0].isdigit():
            raise click.UsageError("positional form is `taskfleet server PORT DBFILE`")
        port, db = int(positional[0]), positional[1]
        host = host or "0.0.0.0"  # dutserver listened on every interface
    settings = _settings(ctx, host=host, port=port, db=db)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    password = _run(_with_accounts(settings, lambda accounts: accounts.ensure_admin()))
    base = f"http://{settings.host}:{settings.port}"
    if password is not None:
        click.echo(
            f"Created the first admin account.\n"
            f"  name:     admin\n  password: {password}\n"
            f"Log in:  curl -X POST {base}/api/v1/login -H 'content-type: application/json' "
            f'-d \'{{"name": "admin", "password": "…"}}\'\n'
            f"         or: taskfleet login --server {base} admin\n"
            f"This password is shown only once."
        )
    click.echo(f"taskfleet {__version__} on {base} (database: {settings.db})")
    click.echo(f"API docs: {base}/api/v1/docs")
    import uvicorn

    from taskfleet.app import build

    uvicorn.run(
        build(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )


@main.group()
def account() -> None:
    """Manage accounts directly in the database."""


def _read_secret() -> str:
    if sys.stdin.isatty():
        return str(
            click.prompt("Enter password for account", hide_input=True, confirmation_prompt=True)
        )
    click.echo("Enter password for account: ", nl=False, err=True)
    return sys.stdin.readline().rstrip("\r\n")


@account.command("add")
@click.argument("name")
@click.argument("role", type=click.Choice([r.value for r in Role]))
@click.option("--db", default=None)
@click.pass_context
def account_add(ctx: click.Context, name: str, role: str, db: str | None) -> None:
    """Add an account; the secret is prompted for, or read as one line from stdin."""
    settings = _settings(ctx, db=db)
    secret = _read_secret()
    _run(_with_accounts(settings, lambda accounts: accounts.add(name, Role(role), secret)))
    click.echo("OK.", err=True)


@account.command("remove")
@click.argument("name")
@click.option("--db", default=None)
@click.pass_context
def account_remove(ctx: click.Context, name: str, db: str | None) -> None:
    """Remove an account with its sessions and agent record."""
    settings = _settings(ctx, db=db)
    _run(_with_accounts(settings, lambda accounts: accounts.remove(name)))
    click.echo("OK.", err=True)


@account.command("list")
@click.option("--db", default=None)
@click.pass_context
def account_list(ctx: click.Context, db: str | None) -> None:
    """List accounts."""
    settings = _settings(ctx, db=db)
    for found in _run(_with_accounts(settings, lambda accounts: accounts.all())):
        click.echo(
            f"{found.name}\t{found.role.value}\t{'enabled' if found.enabled else 'disabled'}"
        )
