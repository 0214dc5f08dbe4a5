"""statsd metrics over UDP, alongside Prometheus `/metrics` (raintank's task-server sent
statsd; seed 001's `stats-enabled`, `statsd-addr`, `statsd-type`).

Fire and forget: one datagram per line, never awaited, errors ignored, so a missing
statsd daemon costs nothing. Every `statsd_interval` seconds the `Reporter` sends

    <prefix>tasks.created:<n>|c     tasks queued since the last report
    <prefix>tasks.claimed:<n>|c     claims since the last report
    <prefix>tasks.<status>:<n>|g    tasks by status (queued, active, completed, …)
    <prefix>agents.connected:<n>|g  agent connections held by this server

`standard` and `datadog` types send the same lines (no tags).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from taskfleet.config import Settings
from taskfleet.core.models import TaskStatus
from taskfleet.services import Services

log = logging.getLogger(__name__)

MAX_DATAGRAM_BYTES = 1400  #: stays inside one Ethernet frame


class Sender:
    """A UDP socket aimed at one statsd daemon."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._sock: socket.socket | None = None
        self._target: Any = None  #: the resolved socket address

    async def open(self, addr: str) -> None:
        """Resolves `host:port` (IPv4 first) and opens a non-blocking socket."""
        host, _, port = addr.rpartition(":")
        infos = await asyncio.get_running_loop().getaddrinfo(
            host.strip("[]") or "127.0.0.1", int(port), type=socket.SOCK_DGRAM
        )
        family, kind, proto, _, target = sorted(infos, key=lambda i: i[0] != socket.AF_INET)[0]
        self._sock = socket.socket(family, kind, proto)
        self._sock.setblocking(False)
        self._target = target

    def count(self, name: str, value: int) -> None:
        self._send(f"{self._prefix}{name}:{value}|c")

    def gauge(self, name: str, value: float) -> None:
        self._send(f"{self._prefix}{name}:{value:g}|g")

    def _send(self, line: str) -> None:
        if self._sock is None or self._target is None:
            return
        with contextlib.suppress(OSError):  # fire and forget: nobody may be listening
            self._sock.sendto(line.encode()[:MAX_DATAGRAM_BYTES], self._target)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Reporter:
    """Sends the server's counters and gauges every `statsd_interval` seconds, from one
    named task; does nothing unless `statsd_enabled`."""

    def __init__(self, settings: Settings, found: Services) -> None:
        self._settings = settings
        self._found = found
        self._sender = Sender(settings.statsd_prefix)
        self._task: asyncio.Task[None] | None = None
        self._total = 0  #: tasks in the database at the last report
        self._claims = 0.0  #: claims counted at the last report

    async def start(self) -> None:
        """Starts reporting; a statsd address that does not resolve is logged, not fatal."""
        if not self._settings.statsd_enabled:
            return
        try:
            await self._sender.open(self._settings.statsd_addr)
        except (OSError, ValueError) as exc:
            log.error(
                "statsd disabled: cannot use %r: %s",
                self._settings.statsd_addr,
                exc,
                extra={"action": "statsd"},
            )
            return
        self._total = sum((await self._found.tasks.counts()).values())
        self._claims = self._claimed()
        self._task = asyncio.create_task(self._run(), name="taskfleet-statsd")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._sender.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.statsd_interval)
            try:
                await self.report()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("statsd report failed", extra={"action": "statsd"})

    async def report(self) -> None:
        counts = await self._found.tasks.counts()
        total, claims = sum(counts.values()), self._claimed()
        self._sender.count("tasks.created", max(0, total - self._total))
        self._sender.count("tasks.claimed", int(claims - self._claims))
        self._total, self._claims = total, claims
        for status in TaskStatus:
            self._sender.gauge(f"tasks.{status.value}", counts.get(status, 0))
        self._sender.gauge("agents.connected", self._sample("taskfleet_connected_agents"))

    def _claimed(self) -> float:
        return self._sample("taskfleet_claims_total")

    def _sample(self, name: str) -> float:
        return self._found.metrics.registry.get_sample_value(name) or 0.0
