"""The native agent protocol's framing, shared by the server (`api/agent_ws.py`) and the
agent (`agent/transports/websocket.py`). See docs/agent-protocol.md.

Teeth's framing (seed 003, PROTOCOLS.md §4) carried in websocket text messages: one JSON
object per message, either a request `{"id", "version", "method", "params"}`, a response
`{"id", "version", "result"}` or `{"id", "version", "error": {"msg", "code"}}`, or
`{"version", "fatal_error"}` after which the sender closes. Anything else is a protocol
violation: the receiver answers with `fatal_error` and closes. This module only checks the
envelope; each side checks the params of the methods it serves through `Params`.

taskfleet's one extension: a peer that says `"batch": true` in its `hello` (the agent) or
in the `hello` result (the server) also reads a JSON array of such objects in one message.
A busy agent's results, and the tasks pushed to it, then travel several to a message: on
a loopback socket the write and the wake-up per message cost more than the JSON in it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from taskfleet.core import errors

VERSION: Final = "v1"
WS_PATH: Final = "/api/v1/agent/ws"
#: Room for the largest payload or result (1 MiB of JSON) and the envelope around it.
MAX_MESSAGE_BYTES: Final = 2 * 1024 * 1024
#: The most messages one array may carry (see `Writer`).
MAX_BATCH: Final = 1000

#: Error codes carried in `error.code`, one per kind of domain error (see core/errors.py).
INVALID: Final = "invalid"
TOO_LARGE: Final = "too_large"
UNAUTHORIZED: Final = "unauthorized"
FORBIDDEN: Final = "forbidden"
NOT_FOUND: Final = "not_found"
CONFLICT: Final = "conflict"
INTERNAL: Final = "internal"
BUSY: Final = "busy"  #: nothing was done; the agent keeps the report and sends it again
CODES: dict[type[errors.Error], str] = {
    errors.TooLarge: TOO_LARGE,
    errors.Invalid: INVALID,
    errors.Unauthorized: UNAUTHORIZED,
    errors.Forbidden: FORBIDDEN,
    errors.NotFound: NOT_FOUND,
    errors.Conflict: CONFLICT,
    errors.Busy: BUSY,
}


def code_of(error: errors.Error) -> str:
    """The `error.code` for a domain error (the most specific kind that has one)."""
    return next((CODES[k] for k in type(error).__mro__ if k in CODES), INVALID)


class ProtocolError(Exception):
    """A message that breaks the protocol: the receiver sends `fatal_error` and closes."""


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    id: str
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def code(self) -> str:
        return str((self.error or {}).get("code", INTERNAL))

    @property
    def message(self) -> str:
        return str((self.error or {}).get("msg", ""))


@dataclass(frozen=True, slots=True)
class Fatal:
    message: str


Frame = Request | Response | Fatal


def decode(data: str | bytes, limit: int = MAX_MESSAGE_BYTES) -> list[Frame]:
    """Parses one websocket message: one frame, or an array of them from a peer that
    batches. Raises `ProtocolError` with the message to send back."""
    if isinstance(data, bytes):
        raise ProtocolError("protocol error: binary messages are not part of the protocol")
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ProtocolError(f"protocol error: a message of {size} bytes is over {limit} bytes")
    try:
        message = json.loads(data)
    except ValueError:
        raise ProtocolError("protocol error: unable to decode message.") from None
    if isinstance(message, list) and 0 < len(message) <= MAX_BATCH:
        if all(isinstance(m, dict) for m in message):
            return [_classify(m) for m in message]
    elif isinstance(message, dict):
        return [_classify(message)]
    raise ProtocolError(
        f"protocol error: a message must be a JSON object, or an array of 1 to {MAX_BATCH}."
    )


def _classify(message: dict[str, Any]) -> Frame:
    version = message.get("version")
    if not version:
        raise ProtocolError("protocol violation: missing message version.")
    if version != VERSION:
        raise ProtocolError(f"protocol violation: unknown message version {version!r}.")
    if "fatal_error" in message:
        return Fatal(str(message["fatal_error"]))
    msg_id = message.get("id")
    if not isinstance(msg_id, str) or not msg_id:
        raise ProtocolError("protocol violation: missing message id.")
    if "method" in message:
        method, params = message["method"], message.get("params")
        if not isinstance(method, str) or not method:
            raise ProtocolError("protocol violation: method must be a non-empty string.")
        if not isinstance(params, dict):
            raise ProtocolError(f"protocol violation: params of {method!r} must be an object.")
        return Request(msg_id, method, params)
    if "result" in message:
        return Response(msg_id, result=message["result"])
    if "error" in message:
        error = message["error"]
        return Response(msg_id, error=error if isinstance(error, dict) else {"msg": str(error)})
    raise ProtocolError("protocol error: malformed message.")


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def request(msg_id: str, method: str, params: dict[str, Any]) -> str:
    return _dump({"id": msg_id, "version": VERSION, "method": method, "params": params})


def result(msg_id: str, value: Any) -> str:
    return _dump({"id": msg_id, "version": VERSION, "result": value})


def error(msg_id: str, message: str, code: str) -> str:
    return _dump({"id": msg_id, "version": VERSION, "error": {"msg": message, "code": code}})


def fatal(message: str) -> str:
    return _dump({"version": VERSION, "fatal_error": message})


#: Event-loop turns a `Writer` lets pass before it writes, so that what they produce goes
#: in the same message: on the server the answer to a result and the task that refills
#: the freed slot, on a busy agent a task's acknowledgement and its result. In the
#: throughput bench the server reads a fifth fewer messages per task; on an idle loop
#: the wait is a few microseconds.
COALESCE_TURNS = 2


class Writer:
    """Sends one side's messages in order; those put within a few event-loop iterations
    (`COALESCE_TURNS`) go out together, as one array message, once the peer has said it
    reads arrays.

    `put` never waits: a background task (alive only while there is something to send)
    does the writing. A send that fails ends the writing, and the next `put` or `flush`
    raises what broke it; the reader sees the broken connection too.
    """

    __slots__ = ("_error", "_limit", "_queue", "_send", "_task", "_urgent", "batch")

    def __init__(
        self, send: Callable[[str], Awaitable[None]], limit: int = MAX_MESSAGE_BYTES
    ) -> None:
        self._send = send
        self._limit = limit  #: the peer's message size limit (no array goes over it)
        self.batch = False  #: the peer reads arrays
        self._queue: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._urgent = False

    def put(self, text: str, urgent: bool = False) -> None:
        """Queues a message; `urgent` sends what is queued without waiting for more
        (`COALESCE_TURNS`): a task just submitted, whose latency counts."""
        if self._error is not None:
            raise self._error
        self._queue.append(text)
        self._urgent |= urgent
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._write())

    async def flush(self) -> None:
        """Waits until everything put so far is sent."""
        while (task := self._task) is not None:
            await asyncio.shield(task)
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _write(self) -> None:
        try:
            for _ in range(COALESCE_TURNS):
                if self._urgent:
                    break
                await asyncio.sleep(0)
            self._urgent = False
            while self._queue:
                if not self.batch:
                    await self._send(self._queue.pop(0))
                    continue
                await self._send(self._array())
        except Exception as exc:
            self._error = exc
            self._queue.clear()
        finally:
            self._task = None

    def _array(self) -> str:
        """Takes the longest run of queued messages that fits in one message."""
        size, count = len(self._queue[0]), 1
        for text in self._queue[1:MAX_BATCH]:
            size += len(text) + 1
            if size + 2 > self._limit // 4:  # up to 4 bytes of UTF-8 per character
                break
            count += 1
        texts = self._queue[:count]
        del self._queue[:count]
        return texts[0] if count == 1 else "[" + ",".join(texts) + "]"


_MISSING: Any = object()


class Params:
    """Typed access to a request's params; a missing or mistyped one is a `ProtocolError`."""

    def __init__(self, method: str, params: dict[str, Any]) -> None:
        self.method = method
        self.raw = params

    def _get(self, key: str, default: Any) -> Any:
        if key in self.raw and self.raw[key] is not None:
            return self.raw[key]
        if default is _MISSING:
            raise ProtocolError(f'missing parameter "{key}" in "{self.method}" message')
        return default

    def invalid(self, key: str, kind: str) -> ProtocolError:
        return ProtocolError(f'parameter "{key}" in "{self.method}" must be {kind}')

    def integer(self, key: str, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.invalid(key, "an integer")
        return value

    def number(self, key: str) -> float | None:
        value = self._get(key, None)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(key, "a number")
        return float(value)

    def text(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self.invalid(key, "a string")
        return value

    def strings(self, key: str) -> list[str] | None:
        value = self._get(key, None)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.invalid(key, "a list of strings")
        return value

    def value(self, key: str, default: Any = _MISSING) -> Any:
        """Any JSON value; an explicit null counts as given."""
        if key in self.raw:
            return self.raw[key]
        return self._get(key, default)
