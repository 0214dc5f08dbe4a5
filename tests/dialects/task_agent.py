"""A websocket client that frames, parses and decodes exactly as raintank's task-agent-ng
does (pkg/message, pkg/session, task_cache.go), and records as a crash every message the
real agent would crash on:

* a text frame, a binary frame shorter than 9 bytes, or a version byte other than 0:
  `ToEvent` returns an error and `socketReader` then reads `e.Event` from nil (panic);
* a name length of 0 or longer than the frame: the same;
* a task whose `interval` is 0 or negative (divide by zero / a non-positive ticker).

A payload Go's json.Unmarshal would refuse for the event's type is recorded as an error
too: the real agent would only log it, but it would then miss that task list or task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

EVENT_V1 = 0
MIN_FRAME_BYTES = 9
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
#: time.Time.String(), with the monotonic clock reading Go appends
GO_TIME_STRING = re.compile(
    r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,9})? [+-]\d{4} [A-Z]+( m=[+-]\d+\.\d{9})?$"
)
#: the item type of each route's config lists (Go: map[string][]string, map[string][]int64)
ROUTE_CONFIG: dict[str, type | None] = {"any": None, "byTags": str, "byIds": int}


class AgentCrash(AssertionError):
    """The real task-agent-ng would have panicked (or failed to decode) here."""


def parse_frame(message: str | bytes) -> tuple[str, bytes]:
    """message.Message.ToEvent, failing where the Go agent would crash."""
    if isinstance(message, str):
        raise AgentCrash(f"text frame (Events must use BinaryMessage type): {message[:80]!r}")
    if len(message) < MIN_FRAME_BYTES:
        raise AgentCrash(f"frame of {len(message)} bytes (Message Payload too small)")
    if message[0] != EVENT_V1:
        raise AgentCrash(f"version byte {message[0]} (Invalid Message Body)")
    name_length = message[1]
    if name_length < 1 or len(message) - name_length - 2 < 0:
        raise AgentCrash(f"event name length {name_length} (Invalid Message Body)")
    return message[2 : 2 + name_length].decode(), bytes(message[2 + name_length :])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_task(value: Any) -> dict[str, Any]:
    """json.Unmarshal into model.TaskDTO, plus the checks task_cache.go depends on."""
    if not isinstance(value, dict):
        raise AgentCrash(f"a TaskDTO must be an object, got {value!r}")
    checks: dict[str, Callable[[Any], object]] = {
        "id": _is_int,
        "name": lambda v: isinstance(v, str),
        "taskType": lambda v: isinstance(v, str),
        "orgId": _is_int,
        "interval": _is_int,
        "enabled": lambda v: isinstance(v, bool),
        "created": lambda v: isinstance(v, str) and RFC3339.match(v),
        "updated": lambda v: isinstance(v, str) and RFC3339.match(v),
    }
    for key, ok in checks.items():
        if key in value and value[key] is not None and not ok(value[key]):
            raise AgentCrash(f"TaskDTO.{key} cannot be decoded: {value[key]!r}")
    config = value.get("config")
    if config is not None and (
        not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values())
    ):
        raise AgentCrash(f"TaskDTO.config is not a map of maps: {config!r}")
    _decode_route(value.get("route"))
    if value.get("interval", 0) <= 0:
        raise AgentCrash(f"interval {value.get('interval')} (integer divide by zero)")
    return value


def _decode_route(route: Any) -> None:
    if route is None:
        return
    if not isinstance(route, dict) or route.get("type") not in ROUTE_CONFIG:
        raise AgentCrash(f"unknown route type: {route!r}")
    kind = ROUTE_CONFIG[route["type"]]
    if kind is None:
        return
    config = route.get("config")
    if not isinstance(config, dict) or not all(
        isinstance(items, list) and all(isinstance(i, kind) for i in items)
        for items in config.values()
    ):
        raise AgentCrash(f"route config cannot be decoded: {route!r}")


class TaskAgent:
    """One task-agent-ng connection and the task cache it keeps."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.tasks: dict[int, dict[str, Any]] = {}
        self.events: list[tuple[str, bytes]] = []
        self.crash: AgentCrash | None = None
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="task-agent-ng reader")

    @classmethod
    async def connect(cls, base_url: str, name: str, key: str, version: int = 1) -> TaskAgent:
        """Dials `<server-url>/socket/<name>/<version>` with `Authorization: Bearer <key>`,
        like gorilla's DefaultDialer (no compression)."""
        url = base_url.replace("http://", "ws://") + f"/socket/{name}/{version}"
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {key}"},
            compression=None,
            proxy=None,
            open_timeout=5,
        )
        return cls(ws)

    def check(self) -> None:
        """Fails the test if anything so far would have crashed the real agent."""
        if self.crash is not None:
            raise self.crash

    def named(self, event: str) -> list[bytes]:
        self.check()
        return [payload for name, payload in self.events if name == event]

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self._handle(message)
        except AgentCrash as crash:
            self.crash = crash
        except Exception as exc:  # the connection dropped: the agent would redial
            if self.crash is None and not self.ws.close_code:
                self.crash = AgentCrash(f"reader failed: {exc!r}")
        finally:
            self.closed.set()

    def _handle(self, message: str | bytes) -> None:
        event, payload = parse_frame(message)
        self.events.append((event, payload))
        if event == "heartbeat":
            if not GO_TIME_STRING.match(payload.decode()):
                raise AgentCrash(f"heartbeat is not a Go time string: {payload!r}")
        elif event == "taskList":
            listed = json.loads(payload)
            if listed is not None and not isinstance(listed, list):
                raise AgentCrash(f"taskList is not a list: {payload!r}")
            decoded = [decode_task(t) for t in listed or []]
            self.tasks = {t["id"]: t for t in decoded}
        elif event in ("taskAdd", "taskUpdate"):
            task = decode_task(json.loads(payload))
            self.tasks[task["id"]] = task
        elif event == "taskRemove":
            self.tasks.pop(decode_task(json.loads(payload))["id"], None)
