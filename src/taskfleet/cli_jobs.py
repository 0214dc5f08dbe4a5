"""`taskfleet job …` and `taskfleet worker status …`: jobs of dependent tasks and worker
control, over the native REST API like the rest of the admin CLI (`taskfleet.client`).

The groups read `--server`, `--token`, `--home` and `--config` from the root context
when `taskfleet.cli.main` carries them, and take `--server`/`--token` themselves too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any, TypeVar
from urllib.parse import quote

import click

from taskfleet import client, config
from taskfleet.client import ClientError

F = TypeVar("F", bound=Callable[..., Any])
CLIENT_FLAGS = ("server_url", "token", "home")
REQUESTABLE = ("asleep", "awake", "shutdown")  #: statuses an admin may ask a worker for


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and param.name is not None:
        ctx.find_root().ensure_object(dict)[param.name] = value
    return value


def _remote(f: F) -> F:
    """`--server` and `--token` on a command (also accepted before it, on `taskfleet`)."""
    server = click.option(
        "--server",
        "server_url",
        default=None,
        expose_value=False,
        callback=_remember,
        help="Server URL [the logged-in one, else http://127.0.0.1:8080].",
    )
    token = click.option(
        "--token",
        default=None,
        expose_value=False,
        callback=_remember,
        help="API key or session token [the one saved by `taskfleet login`].",
    )
    return server(token(f))


def _call(ctx: click.Context, method: str, path: str, **kwargs: Any) -> Any:
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


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _table(headers: list[str], rows: list[list[str]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=box.SIMPLE_HEAD)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


# -- jobs -------------------------------------------------------------------------------------


@click.group()
def job() -> None:
    """Submit jobs of dependent tasks, follow them, requeue their failures (over the API)."""


@job.command("submit")
@click.argument("file", type=click.File("r"), metavar="FILE.json|-")
@_remote
@click.pass_context
def job_submit(ctx: click.Context, file: IO[str]) -> None:
    """Queue the job described in FILE (`-` reads stdin); prints the new job's id.

    FILE holds {"name", "type", "priority", "settings", "tasks": [{"name", "task_type",
    "priority", "commands": [{"name", "settings"}], "parents": [index or name]}]}.
    """
    try:
        body = json.load(file)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint="FILE") from exc
    created = _call(ctx, "POST", "/jobs", json=body)
    click.echo(created["id"])
    click.echo(f"Job {created['id']} queued with {created['total']} tasks.", err=True)


@job.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@_remote
@click.pass_context
def job_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List jobs, newest first, with their tasks counted by status."""
    found = _call(ctx, "GET", "/jobs", params={"limit": limit})
    if as_json:
        _print_json(found)
    elif not found:
        click.echo("No jobs.", err=True)
    else:
        headers = ["ID", "NAME", "TYPE", "PRIO", "STATUS", "DONE", "ACTIVE", "FAILED"]
        _table(headers, [_job_row(j) for j in found])


def _job_row(j: dict[str, Any]) -> list[str]:
    counts = j["counts"]
    return [
        str(j["id"]),
        j["name"],
        j["type"],
        str(j["priority"]),
        j["status"],
        f"{counts.get('completed', 0)}/{j['total']}",
        str(counts.get("active", 0)),
        str(counts.get("failed", 0)),
    ]


@job.command("show")
@click.argument("job_id", type=click.IntRange(1))
@_remote
@click.pass_context
def job_show(ctx: click.Context, job_id: int) -> None:
    """Print a job with its task counts and blacklist as JSON."""
    _print_json(_call(ctx, "GET", f"/jobs/{job_id}"))


@job.command("requeue-failed")
@click.argument("job_id", type=click.IntRange(1))
@_remote
@click.pass_context
def job_requeue_failed(ctx: click.Context, job_id: int) -> None:
    """Queue every failed task of the job again, with a fresh blacklist."""
    requeued = _call(ctx, "POST", f"/jobs/{job_id}/requeue-failed")["requeued"]
    ids = " ".join(str(i) for i in requeued)
    click.echo(f"Job {job_id}: requeued {len(requeued)} tasks{': ' + ids if ids else ''}.")


@job.command("outputs")
@click.argument("job_id", type=click.IntRange(1))
@_remote
@click.pass_context
def job_outputs(ctx: click.Context, job_id: int) -> None:
    """Print the outputs the job's tasks produced, oldest first, as JSON."""
    _print_json(_call(ctx, "GET", f"/jobs/{job_id}/outputs"))


# -- workers ----------------------------------------------------------------------------------


@click.group()
def worker() -> None:
    """Control workers (agents): ask them to sleep, wake up or shut down."""


@worker.command("status")
@click.argument("name")
@click.argument("status", type=click.Choice(REQUESTABLE))
@click.option("--lazy", is_flag=True, help="Apply it after the current task.")
@_remote
@click.pass_context
def worker_status(ctx: click.Context, name: str, status: str, lazy: bool) -> None:
    """Ask worker NAME to change to STATUS; it acknowledges when it has."""
    body = {"requested_status": status, "lazy": lazy}
    found = _call(ctx, "PATCH", f"/agents/{quote(name, safe='')}", json=body)
    when = "after its current task" if lazy else "now"
    click.echo(f"{found['name']}: {status} requested ({when}); it is {found['status']}.")
