"""The native taskfleet agent with one more handler, `stamp`, for the latency bench:
it returns the wall-clock time at which the handler started, i.e. when the agent had the
task in hand. Everything else is `taskfleet agent run`:
`python bench/agent_main.py SERVER NAME SECRET_FILE SPOOL`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

from taskfleet.agent import handlers
from taskfleet.agent.app import build
from taskfleet.agent.handlers import Reporter, TaskContext
from taskfleet.agent.settings import AgentSettings


async def stamp(task: TaskContext, report: Reporter) -> object:
    return {"t": time.time()}


def main() -> int:
    server, name, secret_file, spool = sys.argv[1:5]
    logging.basicConfig(level=logging.WARNING)
    settings = AgentSettings(
        server=server,
        name=name,
        secret=Path(secret_file).read_text().strip(),
        spool=Path(spool),
        transport="ws",
    )
    agent = build(settings, {**handlers.registry(), "stamp": stamp})
    return asyncio.run(agent.run())


if __name__ == "__main__":
    sys.exit(main())
