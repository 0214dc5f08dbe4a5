"""Commands: Python sources that hosts run once each (Django Remotes' commands).

Commands live in command groups, which run in `order` on the members of their host groups
while active and inside their time window. Each host lists only what it has not run yet.
A host fetching a command starts a run: an engine task of type `command`, targeted at the
host and leased to it, so the run shows in the native API like any task. Its report
completes the task with `{"output": stdout, "result": the result list}`, and item i of the
result list becomes the host's variable `result_variables[i]`, which later commands read.
A report whose result is not JSON (the script died before writing it) fails the task.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

from taskfleet.core import errors
from taskfleet.core.agents import check_labels
from taskfleet.core.models import (
    Agent,
    Command,
    CommandGroup,
    JSONValue,
    NewCommand,
    NewCommandGroup,
    NewTask,
    TargetKind,
    Task,
)
from taskfleet.core.ports import Clock, Store
from taskfleet.core.tasks import MAX_PAYLOAD_BYTES, TaskService

TASK_TYPE = "command"  #: the type of a run's task
LEASE_SECONDS = 3600.0  #: a fetched command stays with its host this long without a report
TIMEOUT_GRACE_SECONDS = 30.0  #: a run with a timeout fails this long after it
RUN_ATTEMPTS = 3  #: fetches (after leases ran out) before a run fails for good
MAX_NAME = 200
MAX_ORDER = 2**31 - 1
MAX_SOURCE_BYTES = 512 * 1024
MAX_ITEMS = 1000  #: settings, variables, result variables
MAX_TIMEOUT_SECONDS = 30 * 86400
MAX_ERROR = 10_000
#: Text PostgreSQL cannot keep: NUL, and lone surrogates that JSON escapes can produce.
BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME or BAD_TEXT.search(value):
        raise errors.Invalid(f"{what} must be 1-{MAX_NAME} characters")
    return value


def _check_order(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_ORDER:
        raise errors.Invalid(f"order must be a whole number between -{MAX_ORDER} and {MAX_ORDER}")
    return value


def _check_window(starts_at: float | None, ends_at: float | None) -> None:
    for bound in (starts_at, ends_at):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
            raise errors.Invalid("a time window's bounds must be times")
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise errors.Invalid("a time window must end after it starts")


def check_group(new: NewCommandGroup) -> NewCommandGroup:
    _check_name(new.name, "a command group's name")
    _check_order(new.order)
    _check_window(new.starts_at, new.ends_at)
    return replace(
        new, active=bool(new.active), host_groups=check_labels(new.host_groups, "host groups")
    )


def _check_names(values: object, what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, tuple | list) or len(values) > MAX_ITEMS:
        raise errors.Invalid(f"{what} must be a list of at most {MAX_ITEMS} names")
    return tuple(_check_name(v, f"each of {what}") for v in values)


def check_command(new: NewCommand) -> NewCommand:
    _check_name(new.name, "a command's name")
    _check_order(new.order)
    if not isinstance(new.source, str) or len(new.source.encode()) > MAX_SOURCE_BYTES:
        raise errors.Invalid(f"a command's source must be text of at most {MAX_SOURCE_BYTES} bytes")
    settings = new.settings
    if not isinstance(settings, dict) or len(settings) > MAX_ITEMS:
        raise errors.Invalid(f"settings must be an object of at most {MAX_ITEMS} entries")
    if not all(isinstance(v, str) and not BAD_TEXT.search(v) for v in settings.values()):
        raise errors.Invalid("every setting's value must be text")
    _check_names(tuple(settings), "settings' names")
    timeout = new.timeout_seconds
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int)
        or not 0 < timeout <= MAX_TIMEOUT_SECONDS
    ):
        raise errors.Invalid(f"timeout_seconds must be between 1 and {MAX_TIMEOUT_SECONDS}")
    return replace(
        new,
        active=bool(new.active),
        variables=_check_names(new.variables, "variables"),
        result_variables=_check_names(new.result_variables, "result variables"),
    )


def clean(value: JSONValue) -> JSONValue:
    """The value with text every backend can keep: NUL and lone surrogates become U+FFFD."""
    if isinstance(value, str):
        return BAD_TEXT.sub("\ufffd", value)
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    return value


def _refuse_constant(name: str) -> JSONValue:
    raise ValueError(f"{name} is not JSON")


def parse_result(text: str) -> list[JSONValue] | None:
    """The result list a host reports (a lone value becomes a list of one), or None when
    the text is not JSON."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    items = value if isinstance(value, list) else [value]
    return [clean(v) for v in items]


def variable_text(value: JSONValue) -> str:
    """A host variable's text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


class CommandService:
    def __init__(
        self, store: Store, clock: Clock, tasks: TaskService, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self._store = store
        self._clock = clock
        self._tasks = tasks
        self.lease_seconds = lease_seconds

    # -- the operator's side --------------------------------------------------------------

    async def add_group(self, new: NewCommandGroup) -> CommandGroup:
        """Raises `Invalid`, or `Conflict` when the name is taken. Missing host groups are
        created."""
        return await self._store.add_command_group(check_group(new), self._clock.now())

    async def update_group(self, group_id: int, new: NewCommandGroup) -> CommandGroup:
        return await self._store.update_command_group(group_id, check_group(new), self._clock.now())

    async def group(self, group_id: int) -> CommandGroup:
        found = await self._store.get_command_group(group_id)
        if found is None:
            raise errors.NotFound(f"no command group {group_id}")
        return found

    async def groups(self) -> list[CommandGroup]:
        return await self._store.list_command_groups()

    async def delete_group(self, group_id: int) -> None:
        """Deletes the group with its commands; the tasks of their runs stay."""
        if not await self._store.delete_command_group(group_id):
            raise errors.NotFound(f"no command group {group_id}")

    async def add(self, new: NewCommand) -> Command:
        """Raises `Invalid`, or `NotFound` for an unknown group."""
        return await self._store.add_command(check_command(new), self._clock.now())

    async def update(self, command_id: int, new: NewCommand) -> Command:
        """Replaces the definition. Hosts that ran it do not run it again."""
        return await self._store.update_command(command_id, check_command(new), self._clock.now())

    async def get(self, command_id: int) -> Command:
        found = await self._store.get_command(command_id)
        if found is None:
            raise errors.NotFound(f"no command {command_id}")
        return found

    async def all(self, group_id: int | None = None) -> list[Command]:
        return await self._store.list_commands(group_id)

    async def delete(self, command_id: int) -> None:
        if not await self._store.delete_command(command_id):
            raise errors.NotFound(f"no command {command_id}")

    async def runs(self, command_id: int, limit: int = 100) -> list[Task]:
        """The tasks of the command's runs on every host, newest first."""
        await self.get(command_id)
        return await self._store.command_runs(command_id, limit)

    # -- the host's side --------------------------------------------------------------------

    async def pending(self, agent: Agent) -> list[tuple[int, int]]:
        """(group id, command id) of what the host should run now, in order."""
        if not agent.enabled:
            return []
        return await self._store.pending_commands(agent.id, self._clock.now())

    async def fetch(self, agent: Agent, command_id: int) -> tuple[Command, dict[str, str | None]]:
        """The command and the host's values of its variables (None when unset); starts
        (or continues) the host's run of it. Raises `NotFound` for a command not offered
        to this host now."""
        command = await self._offered(agent, command_id, available=True)
        if command is None:
            raise errors.NotFound(f"no command {command_id} for this host")
        await self._start_run(agent, command)
        values = await self._store.host_variables(agent.id)
        return command, {name: values.get(name) for name in command.variables}

    async def report(self, agent: Agent, command_id: int, output: str, result: str) -> Task:
        """Records the host's run: its stdout and the JSON result list it wrote. Raises
        `Forbidden` for a command whose group is not assigned to the host, `TooLarge`;
        nothing is stored then."""
        command = await self.assigned(agent, command_id)
        output, result = clean(output), clean(result)
        if len(output.encode()) + len(result.encode()) > MAX_PAYLOAD_BYTES:
            raise errors.TooLarge(f"output and result must be at most {MAX_PAYLOAD_BYTES} bytes")
        task = await self._start_run(agent, command)
        items = parse_result(result)
        if items is None:
            await self._tasks.add_output(agent, task.id, task.attempt, {"output": output})
            reason = f"the command's result is not JSON: {result[-MAX_ERROR:]}"
            return await self._tasks.fail(agent, task.id, task.attempt, reason)
        values = {
            name: variable_text(items[i]) if i < len(items) else ""
            for i, name in enumerate(command.result_variables)
        }
        if values:
            await self._store.set_host_variables(agent.id, values, self._clock.now())
        body = {"output": output, "result": items}
        return await self._tasks.complete(agent, task.id, task.attempt, body)

    async def assigned(self, agent: Agent, command_id: int) -> Command:
        """The command, when its group is assigned to a host group of the agent (active or
        not, in its window or not). Raises `Forbidden`."""
        command = await self._offered(agent, command_id, available=False)
        if command is None:
            raise errors.Forbidden(f"command {command_id} is not assigned to this host")
        return command

    async def _offered(self, agent: Agent, command_id: int, available: bool) -> Command | None:
        if not agent.enabled or not 0 < command_id < 2**63:
            return None
        now = self._clock.now()
        return await self._store.command_for_agent(command_id, agent.id, now, available)

    async def _start_run(self, agent: Agent, command: Command) -> Task:
        now = self._clock.now()
        timeout = command.timeout_seconds
        task = NewTask(
            type=TASK_TYPE,
            payload={"command": command.id, "group": command.group_id, "name": command.name},
            target_kind=TargetKind.AGENT,
            target=agent.name,
            max_attempts=RUN_ATTEMPTS,
            timeout_seconds=None if timeout is None else timeout + TIMEOUT_GRACE_SECONDS,
        )
        lease_until = now + self.lease_seconds
        return await self._store.start_command_run(command.id, agent.id, task, now, lease_until)
