"""The TCP listener teeth agents dial: one per app, started and stopped by its lifespan.

It owns every connection's task (named `taskfleet-teeth:<peer>`), so that stopping it
ends them all, and knows which connection speaks for which agent: a newer connection of
the same agent replaces the older one (a rebooted agent must not wait for its old
connection to time out).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from taskfleet.agent.teeth import wire
from taskfleet.api.agent_hub import Hub
from taskfleet.config import Settings
from taskfleet.dialects.teeth.connection import Connection
from taskfleet.services import Services

log = logging.getLogger(__name__)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS when a certificate is configured; client certificates when a CA is, too."""
    if not settings.teeth_tls_cert:
        if settings.teeth_tls_key or settings.teeth_tls_client_ca:
            raise ValueError("teeth_tls_key and teeth_tls_client_ca need teeth_tls_cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.teeth_tls_cert, settings.teeth_tls_key or None)
    if settings.teeth_tls_client_ca:
        context.load_verify_locations(settings.teeth_tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class Listener:
    def __init__(self, found: Services, hub: Hub) -> None:
        self._found = found
        self._hub = hub
        self._server: asyncio.Server | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self._by_name: dict[str, Connection] = {}
        self.port: int | None = None  #: the port listened on, once started

    async def start(self) -> None:
        """Listens, when `teeth_enabled` is set. Raises OSError when the port is taken."""
        settings = self._found.settings
        if not settings.teeth_enabled:
            return
        self._server = await asyncio.start_server(
            self._accept,
            settings.teeth_host or settings.host,
            settings.teeth_port,
            limit=wire.MAX_LINE_BYTES,
            ssl=tls_context(settings),
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("teeth agents connect on port %s", self.port, extra={"action": "teeth_listen"})

    async def stop(self) -> None:
        """Stops listening and closes every connection (their agents' grace starts)."""
        if self._server is None:
            return
        self._server.close()
        serving = list(self._serving)
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        channel = wire.Channel(reader, writer)
        task.set_name(f"taskfleet-teeth:{channel.peer}")
        self._serving.add(task)
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:  # the original agent asked for keepalive, too
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            await Connection(channel, self._found, self._hub, self).serve()
        except Exception:
            log.exception("teeth connection failed", extra={"action": "teeth_error"})
        finally:
            self._serving.discard(task)
            await channel.close()

    async def claim_name(self, connection: Connection) -> None:
        """Makes `connection` the one that speaks for its agent, closing an older one."""
        assert connection.agent is not None
        older = self._by_name.get(connection.agent.name)
        self._by_name[connection.agent.name] = connection
        if older is not None and older is not connection:
            await older.replaced()

    def release_name(self, connection: Connection) -> None:
        if connection.agent is not None and self._by_name.get(connection.agent.name) is connection:
            del self._by_name[connection.agent.name]
