"""The one entry point: `taskfleet server | account … | login | task … | agent … | events …`.

`server` and `account` work on the database directly. `login`, `logout`, `task`, `agent`
and `events` are admin commands over the native REST API (`taskfleet.client`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import click

from taskfleet import __version__, cli_jobs, cli_remotes, client, config, logs, remotes_client
from taskfleet.cli_common import (
    CLIENT_FLAGS,
    print_json,
    remember,
    remote,
    server_option,
    table,
    when,
)
from taskfleet.client import TERMINAL, AdminClient, ClientError
from taskfleet.config import Settings
from taskfleet.core import errors
from taskfleet.core.models import Role, TaskStatus

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from taskfleet.core.accounts import AccountService

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
WAIT_POLL_SECONDS = 1.0  #: how often `--wait` and `--follow` refresh (the server answers early)
LOG_PAGE = 1000  #: log chunks per request
EXIT_TASK_FAILED = 3  #: `task submit --wait`: a task failed or was cancelled
EXIT_INTERRUPTED = 130


class _Main(click.Group):
    """The root group: API and connection errors become a clean `Error: …` and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            raise click.ClickException(exc.message) from exc


def _settings(ctx: click.Context, **flags: Any) -> Settings:
    obj = ctx.find_root().obj or {}
    values = {name: obj.get(name) for name in CLIENT_FLAGS}
    values.update({name: value for name, value in flags.items() if value is not None})
    try:
        return config.load(obj.get("config"), **values)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _api(ctx: click.Context) -> AdminClient:
    return client.connect(_settings(ctx))


def _run(coro: Awaitable[T]) -> T:
    """Runs a coroutine, turning domain errors into a clean CLI error."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except errors.Error as exc:
        raise click.ClickException(exc.message) from exc


async def _with_accounts(settings: Settings, use: Callable[[AccountService], Awaitable[T]]) -> T:
    # Imported here so that the HTTP commands start without loading SQLAlchemy.
    from taskfleet.core.accounts import AccountService
    from taskfleet.core.ports import SystemClock
    from taskfleet.store.sql import open_store

    store = await open_store(settings.db, settings.sqlite_synchronous)
    try:
        return await use(AccountService(store, SystemClock()))
    finally:
        await store.close()


def _read_secret(prompt: str, confirm: bool) -> str:
    """Prompts without echo on a terminal; otherwise reads one line from stdin, silently."""
    if sys.stdin.isatty():
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))
    return sys.stdin.readline().rstrip("\r\n")


@click.group(cls=_Main)
@click.version_option(__version__, prog_name="taskfleet")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML settings file.",
)
@remote
@click.option(
    "--home",
    default=None,
    expose_value=False,
    callback=remember,
    help="Folder for the saved login [~/.config/taskfleet].",
)
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """taskfleet: run work on a fleet of machines."""
    ctx.ensure_object(dict)["config"] = config_file


# -- the server and the accounts in its database ------------------------------------------


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
    try:
        logs.configure(settings.log_level, settings.log_format)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    password = _run(_with_accounts(settings, lambda accounts: accounts.ensure_admin()))
    base = f"http://{settings.host}:{settings.port}"
    if password is not None:
        _announce_admin(settings, password)
    click.echo(f"taskfleet {__version__} on {base} (database: {settings.db})")
    click.echo(f"API docs: {base}/api/v1/docs")
    from taskfleet import app

    app.serve(settings)


def _announce_admin(settings: Settings, password: str) -> None:
    wildcard = settings.host in ("0.0.0.0", "::", "")
    url = f"http://{'127.0.0.1' if wildcard else settings.host}:{settings.port}"
    click.echo(
        f"Created the first admin account.\n"
        f"  name:     admin\n  password: {password}\n"
        f"Log in:  taskfleet login --server {url} admin\n"
        f"    or:  curl -X POST {url}/api/v1/login -H 'content-type: application/json' "
        f'-d \'{{"name": "admin", "secret": "…"}}\'\n'
        f"This password is shown only once."
    )


@main.group()
def account() -> None:
    """Manage accounts directly in the database."""


@account.command("add")
@click.argument("name")
@click.argument("role", type=click.Choice([r.value for r in Role]))
@click.option("--db", default=None)
@click.pass_context
def account_add(ctx: click.Context, name: str, role: str, db: str | None) -> None:
    """Add an account; the secret is prompted for, or read as one line from stdin."""
    settings = _settings(ctx, db=db)
    secret = _read_secret("Enter password for account", confirm=True)
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


# -- sessions ---------------------------------------------------------------------------------


@main.command()
@click.argument("name")
@server_option
@click.pass_context
def login(ctx: click.Context, name: str) -> None:
    """Log in to a server as NAME and save the session token.

    The password is prompted for, or read as one line from stdin when it is not a terminal.
    """
    settings = _settings(ctx)
    saved = client.load_credentials(settings.home)
    server_url = settings.server_url or (saved.server if saved else client.DEFAULT_SERVER)
    secret = _read_secret("Password", confirm=False)
    with AdminClient(server_url) as api:
        token = api.login(name, secret)
        credentials = client.Credentials(server=api.server, name=name, token=token)
    path = client.save_credentials(settings.home, credentials)
    click.echo(f"Logged in to {credentials.server} as {name} (saved in {path}).", err=True)


@main.command()
@click.pass_context
def logout(ctx: click.Context) -> None:
    """End the saved session and forget it."""
    settings = _settings(ctx)
    saved = client.load_credentials(settings.home)
    if saved is None:
        click.echo("Not logged in.", err=True)
        return
    try:
        with AdminClient(saved.server, saved.token) as api:
            api.logout()
    except ClientError as exc:
        click.echo(f"The server did not end the session: {exc.message}", err=True)
    client.forget_credentials(settings.home)
    click.echo(f"Logged out of {saved.server}.", err=True)


# -- tasks ------------------------------------------------------------------------------------


@main.group()
def task() -> None:
    """Submit, list, inspect and cancel tasks (over the API)."""


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint="PAYLOAD_JSON") from exc


@task.command("submit")
@click.argument("task_type", metavar="TYPE")
@click.argument("payload", metavar="[PAYLOAD_JSON]", required=False)
@click.option("--agent", default=None, help="Run on this agent.")
@click.option("--group", default=None, help="Run on any one member of this group.")
@click.option("--broadcast", is_flag=True, help="With --group: one task per member.")
@click.option("--tag", "tags", multiple=True, help="Run on an agent with every such tag.")
@click.option("--priority", type=int, default=None, help="Higher runs first [0].")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=None, help="[3]")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), help="Seconds it may run.")
@click.option("--wait", is_flag=True, help="Show progress until done, then print the result.")
@remote
@click.pass_context
def task_submit(ctx: click.Context, /, task_type: str, payload: str | None, **options: Any) -> None:
    """Queue a task of TYPE with an optional JSON payload (`-` reads it from stdin).

    Prints the new task ids, or with --wait the result; exits with 3 when a task failed
    or was cancelled.
    """
    _check_target(options)
    wait = options.pop("wait")
    body = {"type": task_type, "payload": _payload(payload), **options}
    body["tags"] = list(body["tags"]) or None
    body["timeout_seconds"] = body.pop("timeout")
    with _api(ctx) as api:
        queued = api.submit({k: v for k, v in body.items() if v is not None})
        if not wait:
            for found in queued:
                click.echo(found["id"])
            return
        try:
            finished = _watch(api, queued)
        except KeyboardInterrupt:
            ids = " ".join(str(t["id"]) for t in queued)
            click.echo(f"\nStopped waiting; the server keeps running task {ids}.", err=True)
            ctx.exit(EXIT_INTERRUPTED)
    _print_outcome(ctx, finished)


def _check_target(options: dict[str, Any]) -> None:
    flags = {"--agent": options["agent"], "--group": options["group"], "--tag": options["tags"]}
    given = [flag for flag, value in flags.items() if value]
    if len(given) > 1:
        got = " and ".join(given)
        raise click.UsageError(f"give only one of --agent, --group and --tag (got {got})")
    if options["broadcast"] and not options["group"]:
        raise click.UsageError("--broadcast needs --group")


def _watch(api: AdminClient, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Shows a live progress bar per task until every one of them has finished."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    current = {t["id"]: t for t in tasks}
    columns = (
        TextColumn("task {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[state]}"),
    )
    with Progress(*columns, console=Console(stderr=True)) as bars:
        rows = {i: bars.add_task(str(i), total=None, state="") for i in current}
        while True:
            for i, found in current.items():
                _show(bars, rows[i], found)
            pending = [i for i, t in current.items() if t["status"] not in TERMINAL]
            if not pending:
                return list(current.values())
            current[pending[0]] = api.wait(pending[0], WAIT_POLL_SECONDS)
            current.update((i, api.task(i)) for i in pending[1:])


def _show(bars: Progress, row: TaskID, found: dict[str, Any]) -> None:
    percent = found["progress"]["percent"]
    if found["status"] == TaskStatus.COMPLETED:
        percent = 100.0
    state = " ".join(filter(None, [found["status"], found["progress"]["activity"]]))
    total = None if percent is None and found["status"] not in TERMINAL else 100.0
    bars.update(row, total=total, completed=percent or 0.0, state=state)


def _print_outcome(ctx: click.Context, tasks: list[dict[str, Any]]) -> None:
    if len(tasks) == 1:
        if tasks[0]["status"] == TaskStatus.COMPLETED:
            print_json(tasks[0]["result"])
    else:
        keys = ("id", "target", "status", "result", "error")
        print_json([{k: t[k] for k in keys} for t in tasks])
    failed = [t for t in tasks if t["status"] != TaskStatus.COMPLETED]
    for found in failed:
        click.echo(f"Task {found['id']} {found['status']}: {found['error'] or ''}", err=True)
    if failed:
        ctx.exit(EXIT_TASK_FAILED)


@task.command("list")
@click.option("--status", type=click.Choice([s.value for s in TaskStatus]), default=None)
@click.option("--type", "task_type", default=None, help="Only tasks of this type.")
@click.option("--agent", default=None, help="Only tasks run by this agent.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--after", type=click.IntRange(0), default=None, help="Only ids above this one.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON page.")
@remote
@click.pass_context
def task_list(ctx: click.Context, /, task_type: str | None, as_json: bool, **filters: Any) -> None:
    """List tasks in id order."""
    with _api(ctx) as api:
        page = api.tasks(type=task_type, **filters)
    if as_json:
        print_json(page)
        return
    rows = [_task_row(t) for t in page["tasks"]]
    if rows:
        headers = ["ID", "TYPE", "STATUS", "TARGET", "TRY", "PROGRESS", "UPDATED"]
        table(headers, rows)
    else:
        click.echo("No tasks.", err=True)
    if page["next_after"] is not None:
        click.echo(f"More: taskfleet task list --after {page['next_after']}", err=True)


def _task_row(t: dict[str, Any]) -> list[str]:
    percent = t["progress"]["percent"]
    target = t["target_kind"] if t["target_kind"] == "any" else f"{t['target_kind']}:{t['target']}"
    return [
        str(t["id"]),
        t["type"],
        t["status"],
        target,
        f"{t['attempt']}/{t['max_attempts']}",
        "" if percent is None else f"{percent:.0f}%",
        when(t["updated_at"]),
    ]


@task.command("show")
@click.argument("task_id", type=int)
@remote
@click.pass_context
def task_show(ctx: click.Context, task_id: int) -> None:
    """Print a task as JSON."""
    with _api(ctx) as api:
        print_json(api.task(task_id))


@task.command("cancel")
@click.argument("task_id", type=int)
@remote
@click.pass_context
def task_cancel(ctx: click.Context, task_id: int) -> None:
    """Cancel a queued task, or ask the agent running it to stop."""
    with _api(ctx) as api:
        found = api.cancel(task_id)
    click.echo(f"Task {task_id}: {found['status']}")


@task.command("requeue")
@click.argument("task_id", type=int)
@remote
@click.pass_context
def task_requeue(ctx: click.Context, task_id: int) -> None:
    """Put a finished task back in the queue, with fresh attempts."""
    with _api(ctx) as api:
        found = api.requeue(task_id)
    click.echo(f"Task {task_id}: {found['status']}")


@task.command("logs")
@click.argument("task_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task ends.")
@remote
@click.pass_context
def task_logs(ctx: click.Context, task_id: int, follow: bool) -> None:
    """Print a task's log."""
    with _api(ctx) as api:
        after = _print_logs(api, task_id, 0)
        while follow:
            finished = api.wait(task_id, WAIT_POLL_SECONDS)["status"] in TERMINAL
            after = _print_logs(api, task_id, after)
            follow = not finished


def _print_logs(api: AdminClient, task_id: int, after: int) -> int:
    """Prints the chunks after id `after`; returns the last id printed."""
    while True:
        chunks = api.logs(task_id, after, LOG_PAGE)
        for chunk in chunks:
            click.echo(chunk["text"], nl=False)
        if chunks:
            after = chunks[-1]["id"]
        if len(chunks) < LOG_PAGE:
            return after


# -- the fleet --------------------------------------------------------------------------------


class _AgentGroup(click.Group):
    """`agent list|show` live here; the agent's own commands (`agent run`, `agent register`,
    in `taskfleet.agent.cli`) are loaded only when asked for."""

    def _host_commands(self) -> click.Group:
        from taskfleet.agent.cli import agent as host_agent

        return host_agent

    def list_commands(self, ctx: click.Context) -> list[str]:
        theirs = self._host_commands().list_commands(ctx)
        return sorted({*super().list_commands(ctx), *theirs})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        return found or self._host_commands().get_command(ctx, cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # `taskfleet agent --server URL --name NAME` is short for `taskfleet agent run …`.
        if args and args[0].startswith("-") and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_AgentGroup)
def agent() -> None:
    """Run an agent on this host, or look at the fleet's agents."""


@agent.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@remote
@click.pass_context
def agent_list(ctx: click.Context, as_json: bool) -> None:
    """List agents."""
    with _api(ctx) as api:
        found = api.agents()
    if as_json:
        print_json(found)
    elif not found:
        click.echo("No agents.", err=True)
    else:
        headers = ["NAME", "STATUS", "ONLINE", "LAST SEEN", "TAGS", "GROUPS", "TYPES"]
        table(headers, [_agent_row(a) for a in found])


def _agent_row(a: dict[str, Any]) -> list[str]:
    return [
        a["name"] if a["enabled"] else f"{a['name']} (disabled)",
        a["status"],
        "yes" if a["online"] else "no",
        when(a["last_seen"]),
        ",".join(a["tags"]),
        ",".join(a["groups"]),
        ",".join(a["task_types"]) or "any",
    ]


@agent.command("show")
@click.argument("name")
@remote
@click.pass_context
def agent_show(ctx: click.Context, name: str) -> None:
    """Print an agent as JSON."""
    with _api(ctx) as api:
        print_json(api.agent(name))


@agent.command("enable")
@click.argument("name")
@remote
@click.pass_context
def agent_enable(ctx: click.Context, name: str) -> None:
    """Enable an agent: accept one pending approval (a new teeth agent under the
    `approval` policy, say), or give work to a disabled one again."""
    with _api(ctx) as api:
        api.call("PATCH", f"/agents/{quote(name, safe='')}", json={"enabled": True})
    click.echo(f"Agent {name} is enabled.")


@agent.command("disable")
@click.argument("name")
@remote
@click.pass_context
def agent_disable(ctx: click.Context, name: str) -> None:
    """Disable an agent: it stays connected but gets no new work."""
    with _api(ctx) as api:
        api.call("PATCH", f"/agents/{quote(name, safe='')}", json={"enabled": False})
    click.echo(f"Agent {name} is disabled.")


@main.command()
@click.argument("agent_name", metavar="AGENT")
@click.option("--limit", type=click.IntRange(1, 10_000), default=None, help="Newest N only.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@remote
@click.pass_context
def events(ctx: click.Context, agent_name: str, limit: int | None, as_json: bool) -> None:
    """Print the events AGENT reported, oldest first."""
    with _api(ctx) as api:
        found = api.events(agent_name, limit)
    if as_json:
        print_json(found)
        return
    for event in found:
        click.echo(f"{when(event['time'])}  {json.dumps(event['data'], ensure_ascii=False)}")


main.add_command(cli_jobs.job)
main.add_command(cli_jobs.worker)
for extra in (*cli_remotes.GROUPS, remotes_client.remotes_client):
    main.add_command(extra)
