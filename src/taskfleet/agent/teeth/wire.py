"""teeth-agent's framing (seed 003, PROTOCOLS.md §4), shared by the server's dialect
(`dialects/teeth`) and the agent's teeth transport (`agent/transports/teeth.py`).

One JSON object per `\\n`-terminated line of at most 512 KiB; received lines are stripped
and blank ones ignored. A line is a command `{"id", "version", "method", "params"}`, a
response `{"id", "version", "result"}` or `{"id", "version", "error"}`, or
`{"fatal_error"}`, after which its sender closes. A receiver checks every line in the
original's order and answers the first violation with a fatal error (the texts below, as
teeth-agent sends them); a parameter a command lacks gets a plain error response instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

VERSION: Final = "v1"
MAX_LINE_BYTES: Final = 512 * 1024  #: Twisted LineReceiver.MAX_LENGTH in the original
IDLE_TIMEOUT_SECONDS: Final = 60.0  #: without a received line, the connection is closed
PING_INTERVAL_SECONDS: Final = 20.0  #: how often teeth-agent pings the server
CLOSE_TIMEOUT_SECONDS: Final = 5.0  #: for a last fatal error and the close (TLS's goodbye)

#: The fatal errors, in the order a receiver checks for them.
UNDECODABLE: Final = "protocol error: unable to decode message."
NO_VERSION: Final = "protocol violation: missing message version."
NO_ID: Final = "protocol violation: missing message id."
NO_PARAMS: Final = "protocol violation: missing message params."
PARAMS_NOT_OBJECT: Final = "protocol violation: message params must be an object."
UNKNOWN_ID: Final = "protocol violation: unknown message id referenced."
MALFORMED: Final = "protocol error: malformed message."
#: Checked when a command is dispatched.
UNKNOWN_VERSION: Final = "unknown message version"
UNKNOWN_METHOD: Final = "unknown message method"
#: Not the original's (it dropped such connections without a word), but as plain.
TOO_LONG: Final = f"protocol error: a message is longer than {MAX_LINE_BYTES} bytes."

#: The commands a server sends a teeth agent, as teeth-agent's code spells them.
COMMANDS: Final = (
    "status",
    "standby.cache_images",
    "standby.prepare_image",
    "standby.run_image",
    "decom.disk_erase",
    "decom.firmware_secure",
    "decom.qc",
)
#: The seed's README spells the standby commands `standbye.`; both are accepted.
SEED_SPELLINGS: Final = {
    "standbye." + name.removeprefix("standby."): name
    for name in COMMANDS
    if name.startswith("standby.")
}
TASK_TYPES: Final = (*COMMANDS, *SEED_SPELLINGS)
#: Commands answered in their response; the others run on and report with `task_status`.
IMMEDIATE: Final = frozenset({"status"})
#: What each command needs in its params (a missing one gets an error response).
REQUIRED: Final = {
    "standby.cache_images": ("task_id", "image_ids"),
    "standby.prepare_image": ("task_id", "image_id"),
    "standby.run_image": ("task_id", "image_id"),
    "decom.disk_erase": ("task_id",),
    "decom.firmware_secure": ("task_id",),
    "decom.qc": ("task_id",),
}


def method_of(task_type: str) -> str:
    """The method sent on the wire for a task type (`standbye.x` goes out as `standby.x`)."""
    return SEED_SPELLINGS.get(task_type, task_type)


class Violation(Exception):
    """A line that breaks the protocol: the receiver sends `fatal_error` and closes."""


class CommandError(Exception):
    """A command refused without closing the connection: an error response."""


class Closed(ConnectionError):
    """The peer closed the connection."""


@dataclass(frozen=True, slots=True)
class Command:
    id: Any
    version: Any
    method: Any
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    id: Any
    result: Any = None
    error: Any = None
    failed: bool = False

    @property
    def message(self) -> str:
        """The error's text: teeth-agent sends a plain string, the overlord `{"msg": …}`."""
        if isinstance(self.error, dict) and "msg" in self.error:
            return str(self.error["msg"])
        if isinstance(self.error, str):
            return self.error
        return json.dumps(self.error)


@dataclass(frozen=True, slots=True)
class Fatal:
    message: str


Frame = Command | Response | Fatal


def decode(line: bytes) -> Frame | None:
    """One received line; None for a blank one. Raises `Violation` with the fatal text."""
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Violation(UNDECODABLE) from None
    if not text:
        return None
    try:
        message = json.loads(text)
    except ValueError:
        raise Violation(UNDECODABLE) from None
    if not isinstance(message, dict):
        raise Violation(MALFORMED)
    if "fatal_error" in message:
        return Fatal(str(message["fatal_error"]))
    return _classify(message)


def _classify(message: dict[str, Any]) -> Frame:
    if not message.get("version"):
        raise Violation(NO_VERSION)
    if not message.get("id"):
        raise Violation(NO_ID)
    msg_id, version = message["id"], message["version"]
    if "method" in message:
        if "params" not in message:
            raise Violation(NO_PARAMS)
        if not isinstance(message["params"], dict):
            raise Violation(PARAMS_NOT_OBJECT)
        return Command(msg_id, version, message["method"], message["params"])
    if "error" in message:
        return Response(msg_id, error=message["error"], failed=True)
    if "result" in message:
        return Response(msg_id, result=message["result"])
    raise Violation(MALFORMED)


def check_command(command: Command, methods: Collection[str]) -> None:
    """Raises `Violation` for another version than v1, or a method the receiver lacks."""
    if command.version != VERSION:
        raise Violation(UNKNOWN_VERSION)
    if not isinstance(command.method, str) or command.method not in methods:
        raise Violation(UNKNOWN_METHOD)


def require(command: Command, *names: str) -> None:
    """Raises `CommandError` for the first missing parameter, in the original's words."""
    for name in names:
        if name not in command.params:
            raise CommandError(f'missing parameter "{name}" in "{command.method}" command')


# -- encoding: Python's json.dumps, as the original (", " and ": " separators) -------------


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def command(msg_id: str, method: str, params: dict[str, Any]) -> bytes:
    return _line({"id": msg_id, "version": VERSION, "method": method, "params": params})


def result(to: Command, value: Any) -> bytes:
    return _line({"id": to.id, "version": to.version, "result": value})


def error(to: Command, value: Any) -> bytes:
    """`value` as given: a plain string (teeth-agent) or `{"msg": …}` (the overlord)."""
    return _line({"id": to.id, "version": to.version, "error": value})


def fatal(message: str) -> bytes:
    return _line({"fatal_error": message})


# -- task ids -------------------------------------------------------------------------------


def task_ref(task_id: int, attempt: int) -> str:
    """The `task_id` a command carries: taskfleet's task id and attempt, as `"42.1"`, so
    that a report from an earlier attempt stays stale."""
    return f"{task_id}.{attempt}"


def parse_task_ref(value: object) -> tuple[int, int]:
    """Raises `CommandError` for anything `task_ref` does not make."""
    task, dot, attempt = str(value).partition(".")
    if not (isinstance(value, str) and dot and task.isdecimal() and attempt.isdecimal()):
        raise CommandError(f"unknown task_id {value!r}: taskfleet's look like 42.1")
    return int(task), int(attempt)


# -- a connection's lines -------------------------------------------------------------------


class Channel:
    """Reads lines with a deadline and writes whole lines, one writer at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self.closing = False

    @property
    def peer(self) -> str:
        address = self._writer.get_extra_info("peername")
        return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)

    async def read(self, timeout: float) -> Frame | None:
        """The next line's frame (None for a blank line). Raises `Violation`, `Closed`, or
        TimeoutError after `timeout` seconds without a line."""
        try:
            async with asyncio.timeout(timeout):
                line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise Closed("the peer closed the connection") from None
        except asyncio.LimitOverrunError:
            raise Violation(TOO_LONG) from None
        return decode(line)

    async def send(self, line: bytes) -> None:
        async with self._lock:
            self._writer.write(line)
            await self._writer.drain()

    async def fatal(self, message: str) -> None:
        """Sends a fatal error (best effort) and closes."""
        if not self.closing:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await self.send(fatal(message))
        await self.close()

    async def close(self) -> None:
        self.closing = True
        self._writer.close()
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._writer.wait_closed()
