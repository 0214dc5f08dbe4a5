"""Runs a taskfleet server for the agent tests: `python _serve.py PORT [--no-websocket]`.

Settings come from `TASKFLEET_*` variables, as for `taskfleet server`. With
`--no-websocket` every websocket upgrade is refused (HTTP 403), as a proxy that blocks
websockets would, so the agent has to fall back to long-poll.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from taskfleet import config
from taskfleet.app import UVICORN_OPTIONS, build


class RefuseWebsockets:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)


def main() -> None:
    port = int(sys.argv[1])
    settings = config.load()
    app: ASGIApp = build(settings)
    if "--no-websocket" in sys.argv:
        app = RefuseWebsockets(app)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_max_size=settings.agent_max_message_bytes * 2,
        timeout_graceful_shutdown=5,
        **UVICORN_OPTIONS,
    )


if __name__ == "__main__":
    main()
