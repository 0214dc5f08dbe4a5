"""The machine's floor, served by bare libraries: `python bench/floors.py ws PORT` echoes
websocket text messages (websockets, no compression, as the agent socket runs);
`python bench/floors.py http PORT` answers POST / with the JSON it was sent (a bare
Starlette route on uvicorn, with the loop and HTTP parser `taskfleet server` gets)."""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection, serve


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def serve_ws(port: int) -> None:
    async with serve(_echo, "127.0.0.1", port, compression=None, ping_interval=None) as server:
        await server.serve_forever()


async def _json(request: Request) -> JSONResponse:
    return JSONResponse(await request.json())


def serve_http(port: int) -> None:
    app = Starlette(routes=[Route("/", _json, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "ws":
        asyncio.run(serve_ws(port))
    else:
        serve_http(port)
