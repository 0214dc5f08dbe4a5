"""The agent's settings: built once by `agent/cli.py` from flags and `taskfleet.config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from taskfleet.agent import protocol as wire
from taskfleet.agent.teeth.config import TeethConfig

Transport = Literal["auto", "ws", "http"]
Protocol = Literal["native", "teeth"]


def default_spool(name: str) -> Path:
    return Path.home() / ".taskfleet" / f"agent-{name}.spool"


def default_secret_file(name: str) -> Path:
    return Path.home() / ".taskfleet" / f"agent-{name}.secret"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    server: str  #: http(s)://host:port of the taskfleet server
    name: str
    secret: str = field(repr=False)
    tags: tuple[str, ...] = ()
    concurrency: int = 1  #: tasks run at once
    spool: Path | None = None  #: the report spool file; default ~/.taskfleet/agent-NAME.spool
    transport: Transport = "auto"  #: websocket first, long-poll when the upgrade is refused
    burst: bool = False  #: exit once the server has no work for this agent
    long_poll_seconds: float = 25.0  #: how long one HTTP claim waits for work
    spool_limit: int = 1000  #: no new work while more reports than this wait to be sent
    drain_seconds: float = 30.0  #: on SIGTERM, how long running tasks may finish
    flush_seconds: float = 30.0  #: after that, how long to try to deliver the spool
    backoff_seconds: float = 0.5  #: first reconnect delay (doubles, jittered)
    backoff_max_seconds: float = 30.0
    max_message_bytes: int = wire.MAX_MESSAGE_BYTES
    #: "teeth": speak teeth-agent's TCP protocol to a teeth server (`server` is HOST:PORT).
    protocol: Protocol = "native"
    teeth: TeethConfig = field(default_factory=TeethConfig)
    #: PEM private key that opens payloads the server sealed to this agent's public key.
    private_key: Path | None = None

    @property
    def spool_path(self) -> Path:
        return self.spool or default_spool(self.name)
