"""The agent's composition root: `build(settings)` wires spool, handlers, runner and agent."""

from __future__ import annotations

from collections.abc import Mapping

from taskfleet.agent import handlers as handler_registry
from taskfleet.agent.agent import Agent
from taskfleet.agent.handlers import Handler
from taskfleet.agent.settings import AgentSettings
from taskfleet.agent.spool import Spool


def build(settings: AgentSettings, handlers: Mapping[str, Handler] | None = None) -> Agent:
    """An agent ready to `run()`: built-in and plugin handlers unless `handlers` is given."""
    found = handler_registry.registry() if handlers is None else dict(handlers)
    return Agent(settings, Spool(settings.spool_path), found)
