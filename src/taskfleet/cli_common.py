"""What the admin commands share: `--server`/`--token` wherever they are given, one API call
with clean errors, and the two ways of printing an answer (JSON, or a table)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from taskfleet import client, config
from taskfleet.client import ClientError

F = TypeVar("F", bound=Callable[..., Any])
CLIENT_FLAGS = ("server_url", "token", "home")
PIPE_WIDTH = 250  #: columns for tables when stdout is not a terminal


def remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keeps a client flag for later, wherever on the command line it was given."""
    if value is not None and param.name is not None:
        ctx.find_root().ensure_object(dict)[param.name] = value
    return value


def server_option(f: F) -> F:
    return click.option(
        "--server",
        "server_url",
        default=None,
        expose_value=False,
        callback=remember,
        help="Server URL [the logged-in one, else http://127.0.0.1:8080].",
    )(f)


def remote(f: F) -> F:
    """`--server` and `--token` on an admin command (they are accepted before it, too)."""
    token = click.option(
        "--token",
        default=None,
        expose_value=False,
        callback=remember,
        help="API key or session token [the one saved by `taskfleet login`].",
    )
    return server_option(token(f))


def call(ctx: click.Context, method: str, path: str, **kwargs: Any) -> Any:
    """One API call; API and connection errors become a clean `Error: …` and exit 1."""
    obj = ctx.find_root().obj or {}
    try:
        settings = config.load(obj.get("config"), **{n: obj.get(n) for n in CLIENT_FLAGS})
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        with client.connect(settings) as api:
            return api.call(method, path, **kwargs)
    except ClientError as exc:
        raise click.ClickException(exc.message) from exc


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def when(iso: str | None) -> str:
    return "" if iso is None else iso[:19].replace("T", " ")


def table(headers: list[str], rows: list[list[str]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    shown = Table(*headers, box=box.SIMPLE_HEAD)
    for row in rows:
        shown.add_row(*row)
    # Piped output has no terminal width to fit; keep rows whole for grep and friends.
    Console(width=None if sys.stdout.isatty() else PIPE_WIDTH).print(shown)
