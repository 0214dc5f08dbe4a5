"""Many idle agents in one process, for the fleet bench.

`python bench/fleet_client.py ws|dut HOST PORT FIRST COUNT STATUS_FILE`

`ws`: COUNT native-protocol agents (`fleet<FIRST>` … ), each a websocket that says `hello`
(docs/agent-protocol.md) with HTTP Basic credentials on the upgrade, answers every request
of the server (`status`, `ping`, `idle`, `task.run` …) and otherwise stays idle.
`dut`: COUNT dutserver agents, each holding a `GET /tasks` long-poll on a raw HTTP/1.1
connection (polling again when one ends empty).

The process writes its counts to STATUS_FILE (JSON, replaced atomically) as they change:
connected agents, tasks received, the wall-clock time of the first and last task received,
and errors. It runs until killed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from websockets.asyncio.client import connect

SECRET = "pw"
HANDSHAKES = 100  #: connections being opened at once
STATUS_EVERY = 0.1  #: seconds


@dataclass
class State:
    connected: int = 0
    received: int = 0
    first: float = 0.0
    last: float = 0.0
    errors: int = 0
    samples: list[str] = field(default_factory=list)

    def got_task(self) -> None:
        now = time.time()
        self.received += 1
        self.first = self.first or now
        self.last = now

    def failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(f"{what}: {type(exc).__name__}: {exc}"[:300])


def _hello() -> str:
    params = {
        "version": "bench",
        "platform": "bench",
        "task_types": ["noop"],
        "tags": [],
        "concurrency": 1,
        "running": [],
    }
    return json.dumps({"id": "a1", "version": "v1", "method": "hello", "params": params})


def _answer(state: State, method: str, params: dict[str, object]) -> object:
    if method == "task.run":
        state.got_task()
        return {"accepted": True}
    if method == "status":
        return {"version": "bench", "uptime": 0, "mode": "bench", "running": [], "spool": 0}
    if method == "task.cancel":
        return {"running": False}
    if method == "status_change":
        return {"status": params.get("status")}
    return {}


async def ws_agent(url: str, name: str, gate: asyncio.Semaphore, state: State) -> None:
    auth = "Basic " + base64.b64encode(f"{name}:{SECRET}".encode()).decode()
    try:
        async with gate:
            ws = await connect(
                url,
                additional_headers={"Authorization": auth},
                compression=None,
                ping_interval=None,
                open_timeout=120,
                max_size=2**21,
            )
            await ws.send(_hello())
            while json.loads(await ws.recv()).get("id") != "a1":
                pass
        state.connected += 1
        async for raw in ws:
            msg = json.loads(raw)
            if "method" in msg:
                result = _answer(state, msg["method"], msg.get("params") or {})
                await ws.send(json.dumps({"id": msg["id"], "version": "v1", "result": result}))
    except Exception as exc:
        state.failed(name, exc)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def dut_poller(
    host: str, port: int, name: str, gate: asyncio.Semaphore, state: State
) -> None:
    request = (
        f"GET /tasks HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {name}:{SECRET}\r\n\r\n"
    ).encode()
    try:
        async with gate:
            reader, writer = await asyncio.open_connection(host, port, limit=2**20)
        writer.write(request)
        await writer.drain()
        state.connected += 1
        while True:
            status, body = await _read_response(reader)
            events = json.loads(body).get("events") if status == 200 else None
            if status != 200:
                raise RuntimeError(f"GET /tasks: {status} {body[:200]!r}")
            if events:
                state.got_task()
                break
            writer.write(request)
            await writer.drain()
        await asyncio.sleep(3600)
    except Exception as exc:
        state.failed(name, exc)


async def report(status_file: Path, state: State) -> None:
    shown = None
    while True:
        now = asdict(state)
        if now != shown:
            part = status_file.with_suffix(".part")
            part.write_text(json.dumps(now))
            os.replace(part, status_file)
            shown = now
        await asyncio.sleep(STATUS_EVERY)


async def main(kind: str, host: str, port: int, first: int, count: int, status: Path) -> None:
    state = State()
    gate = asyncio.Semaphore(HANDSHAKES)
    names = [f"fleet{i}" for i in range(first, first + count)]
    if kind == "ws":
        url = f"ws://{host}:{port}/api/v1/agent/ws"
        agents = [ws_agent(url, n, gate, state) for n in names]
    else:
        agents = [dut_poller(host, port, n, gate, state) for n in names]
    await asyncio.gather(report(status, state), *agents)


if __name__ == "__main__":
    kind, host, port, first, count, status = sys.argv[1:7]
    asyncio.run(main(kind, host, int(port), int(first), int(count), Path(status)))
