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

from taskfleet.cli_common import call, print_json, remote, table

F = TypeVar("F", bound=Callable[..., Any])
REQUESTABLE = ("asleep", "awake", "shutdown")  #: statuses an admin may ask a worker for


# -- jobs -------------------------------------------------------------------------------------


@click.group()
def job() -> None:
    """Submit jobs of dependent tasks, follow them, requeue their failures (over the API)."""


@job.command("submit")
@click.argument("file", type=click.File("r"), metavar="FILE.json|-")
@remote
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
    created = call(ctx, "POST", "/jobs", json=body)
    click.echo(created["id"])
    click.echo(f"Job {created['id']} queued with {created['total']} tasks.", err=True)


@job.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@remote
@click.pass_context
def job_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List jobs, newest first, with their tasks counted by status."""
    found = call(ctx, "GET", "/jobs", params={"limit": limit})
    if as_json:
        print_json(found)
    elif not found:
        click.echo("No jobs.", err=True)
    else:
        headers = ["ID", "NAME", "TYPE", "PRIO", "STATUS", "DONE", "ACTIVE", "FAILED"]
        table(headers, [_job_row(j) for j in found])


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
@remote
@click.pass_context
def job_show(ctx: click.Context, job_id: int) -> None:
    """Print a job with its task counts and blacklist as JSON."""
    print_json(call(ctx, "GET", f"/jobs/{job_id}"))


@job.command("requeue-failed")
@click.argument("job_id", type=click.IntRange(1))
@remote
@click.pass_context
def job_requeue_failed(ctx: click.Context, job_id: int) -> None:
    """Queue every failed task of the job again, with a fresh blacklist."""
    requeued = call(ctx, "POST", f"/jobs/{job_id}/requeue-failed")["requeued"]
    ids = " ".join(str(i) for i in requeued)
    click.echo(f"Job {job_id}: requeued {len(requeued)} tasks{': ' + ids if ids else ''}.")


@job.command("outputs")
@click.argument("job_id", type=click.IntRange(1))
@remote
@click.pass_context
def job_outputs(ctx: click.Context, job_id: int) -> None:
    """Print the outputs the job's tasks produced, oldest first, as JSON."""
    print_json(call(ctx, "GET", f"/jobs/{job_id}/outputs"))


# -- workers ----------------------------------------------------------------------------------


@click.group()
def worker() -> None:
    """Control workers (agents): ask them to sleep, wake up or shut down."""


@worker.command("status")
@click.argument("name")
@click.argument("status", type=click.Choice(REQUESTABLE))
@click.option("--lazy", is_flag=True, help="Apply it after the current task.")
@remote
@click.pass_context
def worker_status(ctx: click.Context, name: str, status: str, lazy: bool) -> None:
    """Ask worker NAME to change to STATUS; it acknowledges when it has."""
    body = {"requested_status": status, "lazy": lazy}
    found = call(ctx, "PATCH", f"/agents/{quote(name, safe='')}", json=body)
    when = "after its current task" if lazy else "now"
    click.echo(f"{found['name']}: {status} requested ({when}); it is {found['status']}.")
