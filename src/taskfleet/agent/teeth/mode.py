"""`taskfleet agent run --protocol teeth`: what the CLI needs to start the agent in teeth mode."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taskfleet.agent.handlers import Handler
from taskfleet.agent.teeth import config as teeth_config
from taskfleet.agent.teeth import hardware
from taskfleet.agent.teeth.config import TeethConfig
from taskfleet.agent.teeth.handlers import handlers
from taskfleet.agent.transports.teeth import address


@dataclass(frozen=True, slots=True)
class TeethMode:
    name: str  #: the handshake id: the primary MAC address unless given
    config: TeethConfig
    handlers: dict[str, Handler]


def prepare(server: str, name: str | None, config_file: Path | None) -> TeethMode:
    """Checks the server address, reads the config file and picks the agent's id.
    Raises ValueError or OSError with a message for the operator."""
    address(server)
    config = teeth_config.load(config_file)
    name = name or hardware.primary_mac()
    if not name:
        raise ValueError("this host has no network interface with a MAC address: give --name")
    return TeethMode(name, config, handlers(config))
