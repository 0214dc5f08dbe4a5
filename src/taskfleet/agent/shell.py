"""The `shell` handler: runs a command, streams its output to the task log.

Payload: a shell string (run with `/bin/sh -c`), an argv list, or an object
`{"cmd": str | [str], "env": {str: str}, "cwd": str, "timeout": seconds, "tail": lines}`.
The result is `{"exit_code": 0, "output": "<the last lines>"}`; a non-zero exit, a
timeout or a command that cannot start fails the task with the exit code and the tail.

The command runs in a session of its own (`start_new_session`), so cancelling or timing
out kills the whole process group, children included, not just the shell. Processes the
command leaves behind in its group when it exits are killed as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from dataclasses import dataclass

from taskfleet.agent.handlers import HandlerError, Reporter, TaskContext
from taskfleet.core.models import JSONValue

READ_CHUNK = 64 * 1024
MAX_LINE = 64 * 1024  #: longer lines are logged in pieces
TAIL_LINES = 20
TERM_GRACE_SECONDS = 3.0  #: between SIGTERM and SIGKILL to the group


@dataclass(frozen=True, slots=True)
class Command:
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    timeout: float | None = None
    tail: int = TAIL_LINES


def _argv(cmd: JSONValue) -> list[str]:
    if isinstance(cmd, str) and cmd.strip():
        return ["/bin/sh", "-c", cmd]
    if isinstance(cmd, list) and cmd and all(isinstance(a, str) for a in cmd):
        return list(cmd)
    raise HandlerError("shell needs a command: a string, or a non-empty list of strings")


def parse(payload: JSONValue) -> Command:
    """Checks the payload before anything runs. Raises `HandlerError`."""
    spec = payload if isinstance(payload, dict) else {"cmd": payload}
    env, cwd, timeout = spec.get("env"), spec.get("cwd"), spec.get("timeout")
    tail = spec.get("tail", TAIL_LINES)
    if env is not None and not (
        isinstance(env, dict) and all(isinstance(v, str) for v in env.values())
    ):
        raise HandlerError("shell env must be an object of strings")
    if cwd is not None and not isinstance(cwd, str):
        raise HandlerError("shell cwd must be a string")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise HandlerError("shell timeout must be a number of seconds")
    if isinstance(tail, bool) or not isinstance(tail, int) or not 0 <= tail <= 10_000:
        raise HandlerError("shell tail must be a number of lines (0-10000)")
    return Command(_argv(spec.get("cmd")), env, cwd, timeout, tail)


async def run(task: TaskContext, report: Reporter) -> JSONValue:
    command = parse(task.payload)
    tail: deque[str] = deque(maxlen=command.tail)
    proc = await _spawn(command)
    try:
        async with asyncio.timeout(command.timeout):
            async with asyncio.TaskGroup() as streams:
                assert proc.stdout is not None and proc.stderr is not None
                streams.create_task(_pump(proc.stdout, "", report, tail), name="shell-stdout")
                streams.create_task(_pump(proc.stderr, "stderr: ", report, tail), name="shell-err")
                code = await proc.wait()
                _kill_group(proc.pid, signal.SIGKILL)  # leftovers would hold the pipes open
    except TimeoutError:
        raise HandlerError(f"timed out after {command.timeout:g} s\n" + "".join(tail)) from None
    finally:
        await _stop(proc)
    if code != 0:
        raise HandlerError(f"exit code {code}\n" + "".join(tail))
    return {"exit_code": code, "output": "".join(tail)}


async def _spawn(command: Command) -> asyncio.subprocess.Process:
    # The child's environment is the agent's own plus the task's: that is what a shell
    # user expects, and it is not configuration of the agent.
    env = {**os.environ, **command.env} if command.env is not None else None
    try:
        return await asyncio.create_subprocess_exec(
            *command.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=command.cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise HandlerError(f"cannot run {command.argv[0]!r}: {exc.strerror or exc}") from exc


async def _pump(
    stream: asyncio.StreamReader, prefix: str, report: Reporter, tail: deque[str]
) -> None:
    """Sends the stream to the task log one line at a time, keeping the last lines."""
    pending = b""
    while chunk := await stream.read(READ_CHUNK):
        pending += chunk
        while (end := pending.find(b"\n")) >= 0 or len(pending) >= MAX_LINE:
            cut = end + 1 if end >= 0 else MAX_LINE
            await _line(pending[:cut], prefix, report, tail)
            pending = pending[cut:]
    if pending:
        await _line(pending + b"\n", prefix, report, tail)


async def _line(raw: bytes, prefix: str, report: Reporter, tail: deque[str]) -> None:
    text = prefix + raw.decode("utf-8", "replace")
    tail.append(text)
    await report.log(text)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Makes sure nothing of the command is left: SIGTERM to the group, then SIGKILL."""
    if proc.returncode is not None:
        _kill_group(proc.pid, signal.SIGKILL)
        return
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), TERM_GRACE_SECONDS)
    finally:
        # Also reached when cancelled again while waiting: never leave the group alive.
        _kill_group(proc.pid, signal.SIGKILL)
    await proc.wait()
