"""`taskfleet token …`, `taskfleet command …` and `taskfleet command-group …`: registration
tokens, and the commands hosts run (Django Remotes'), over the native REST API like the rest
of the admin CLI. `--server`/`--token` work as for `taskfleet job …`.
"""

from __future__ import annotations

import json
from typing import IO

import click

from taskfleet.cli_common import call, print_json, remote, table, when

# -- registration tokens ------------------------------------------------------------------------


@click.group()
def token() -> None:
    """Registration tokens hosts register with (over the API)."""


@token.command("create")
@click.option("--name", default="", help="What the token is for.")
@click.option("--expires-in", type=click.FloatRange(min=1), default=None, help="Seconds.")
@remote
@click.pass_context
def token_create(ctx: click.Context, name: str, expires_in: float | None) -> None:
    """Create a token and print it: this is the only time it is shown."""
    created = call(
        ctx, "POST", "/registration-tokens", json={"name": name, "expires_in": expires_in}
    )
    click.echo(created["token"])
    click.echo(f"Registration token {created['id']} created; keep it secret.", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@remote
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """List tokens (never the tokens themselves)."""
    found = call(ctx, "GET", "/registration-tokens")
    if as_json:
        print_json(found)
    elif not found:
        click.echo("No registration tokens.", err=True)
    else:
        headers = ["ID", "NAME", "CREATED", "EXPIRES", "REVOKED", "USES", "LAST USED"]
        rows = [
            [
                str(t["id"]),
                t["name"],
                when(t["created_at"]),
                when(t["expires_at"]),
                when(t["revoked_at"]),
                str(t["uses"]),
                when(t["last_used_at"]),
            ]
            for t in found
        ]
        table(headers, rows)


@token.command("revoke")
@click.argument("token_id", type=click.IntRange(1))
@remote
@click.pass_context
def token_revoke(ctx: click.Context, token_id: int) -> None:
    """No more registrations with TOKEN_ID; hosts registered with it stay."""
    call(ctx, "DELETE", f"/registration-tokens/{token_id}")
    click.echo(f"Registration token {token_id} revoked.")


# -- command groups -----------------------------------------------------------------------------


@click.group("command-group")
def command_group() -> None:
    """Groups of commands, run on the members of host groups (over the API)."""


@command_group.command("add")
@click.argument("name")
@click.option("--order", type=int, default=0, show_default=True, help="Groups run in order.")
@click.option("--inactive", is_flag=True, help="Create it inactive.")
@click.option("--starts", default=None, help="Run only after this time (ISO 8601, UTC).")
@click.option("--ends", default=None, help="Run only before this time (ISO 8601, UTC).")
@click.option("--host-group", "host_groups", multiple=True, help="Agent group; repeatable.")
@remote
@click.pass_context
def group_add(
    ctx: click.Context,
    name: str,
    order: int,
    inactive: bool,
    starts: str | None,
    ends: str | None,
    host_groups: tuple[str, ...],
) -> None:
    """Create a command group; prints its id."""
    body = {
        "name": name,
        "order": order,
        "active": not inactive,
        "starts_at": starts,
        "ends_at": ends,
        "host_groups": list(host_groups),
    }
    click.echo(call(ctx, "POST", "/command-groups", json=body)["id"])


@command_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@remote
@click.pass_context
def group_list(ctx: click.Context, as_json: bool) -> None:
    """List command groups in run order."""
    found = call(ctx, "GET", "/command-groups")
    if as_json:
        print_json(found)
    elif not found:
        click.echo("No command groups.", err=True)
    else:
        headers = ["ID", "NAME", "ORDER", "ACTIVE", "STARTS", "ENDS", "HOST GROUPS"]
        rows = [
            [
                str(g["id"]),
                g["name"],
                str(g["order"]),
                "yes" if g["active"] else "no",
                when(g["starts_at"]),
                when(g["ends_at"]),
                ",".join(g["host_groups"]),
            ]
            for g in found
        ]
        table(headers, rows)


@command_group.command("show")
@click.argument("group_id", type=click.IntRange(1))
@remote
@click.pass_context
def group_show(ctx: click.Context, group_id: int) -> None:
    """Print a command group as JSON."""
    print_json(call(ctx, "GET", f"/command-groups/{group_id}"))


@command_group.command("remove")
@click.argument("group_id", type=click.IntRange(1))
@remote
@click.pass_context
def group_remove(ctx: click.Context, group_id: int) -> None:
    """Delete a command group and its commands (the tasks of their runs stay)."""
    call(ctx, "DELETE", f"/command-groups/{group_id}")
    click.echo(f"Command group {group_id} removed.")


# -- commands --------------------------------------------------------------------------------


@click.group()
def command() -> None:
    """Python commands hosts run once each (Django Remotes' commands; over the API)."""


def _settings(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--setting")
        pairs[name] = value
    return pairs


@command.command("add")
@click.argument("group_id", type=click.IntRange(1))
@click.argument("name")
@click.argument("source", type=click.File("r"), metavar="SOURCE.py|-")
@click.option("--order", type=int, default=0, show_default=True, help="Commands run in order.")
@click.option("--inactive", is_flag=True, help="Create it inactive.")
@click.option("--setting", "settings", multiple=True, help="NAME=VALUE; repeatable.")
@click.option("--variable", "variables", multiple=True, help="Host variable it reads.")
@click.option(
    "--result-variable",
    "result_variables",
    multiple=True,
    help="Host variable set from its result list, in order; repeatable.",
)
@click.option("--timeout", type=click.IntRange(1), default=None, help="Seconds.")
@remote
@click.pass_context
def command_add(
    ctx: click.Context,
    group_id: int,
    name: str,
    source: IO[str],
    order: int,
    inactive: bool,
    settings: tuple[str, ...],
    variables: tuple[str, ...],
    result_variables: tuple[str, ...],
    timeout: int | None,
) -> None:
    """Add the Python in SOURCE (`-` reads stdin) to GROUP_ID; prints the command's id."""
    body = {
        "group_id": group_id,
        "name": name,
        "source": source.read(),
        "order": order,
        "active": not inactive,
        "settings": _settings(settings),
        "variables": list(variables),
        "result_variables": list(result_variables),
        "timeout_seconds": timeout,
    }
    click.echo(call(ctx, "POST", "/commands", json=body)["id"])


@command.command("list")
@click.option("--group", "group_id", type=click.IntRange(1), default=None, help="One group's.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@remote
@click.pass_context
def command_list(ctx: click.Context, group_id: int | None, as_json: bool) -> None:
    """List commands in run order."""
    params = {} if group_id is None else {"group": group_id}
    found = call(ctx, "GET", "/commands", params=params)
    if as_json:
        print_json(found)
    elif not found:
        click.echo("No commands.", err=True)
    else:
        headers = ["ID", "GROUP", "NAME", "ORDER", "ACTIVE", "TIMEOUT"]
        rows = [
            [
                str(c["id"]),
                str(c["group_id"]),
                c["name"],
                str(c["order"]),
                "yes" if c["active"] else "no",
                "" if c["timeout_seconds"] is None else str(c["timeout_seconds"]),
            ]
            for c in found
        ]
        table(headers, rows)


@command.command("show")
@click.argument("command_id", type=click.IntRange(1))
@remote
@click.pass_context
def command_show(ctx: click.Context, command_id: int) -> None:
    """Print a command as JSON."""
    print_json(call(ctx, "GET", f"/commands/{command_id}"))


@command.command("runs")
@click.argument("command_id", type=click.IntRange(1))
@remote
@click.pass_context
def command_runs(ctx: click.Context, command_id: int) -> None:
    """Print the command's runs (tasks), newest first: one JSON line each."""
    for task in call(ctx, "GET", f"/commands/{command_id}/runs"):
        click.echo(json.dumps(task, ensure_ascii=False))


@command.command("remove")
@click.argument("command_id", type=click.IntRange(1))
@remote
@click.pass_context
def command_remove(ctx: click.Context, command_id: int) -> None:
    """Delete a command (the tasks of its runs stay)."""
    call(ctx, "DELETE", f"/commands/{command_id}")
    click.echo(f"Command {command_id} removed.")


GROUPS: tuple[click.Command, ...] = (token, command, command_group)
