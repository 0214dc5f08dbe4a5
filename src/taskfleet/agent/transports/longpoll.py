"""The HTTP long-poll fallback, for networks that block websockets.

The agent pulls: `POST /api/v1/agent/claim?wait=25` holds until a task is queued (or
answers 204), and every report is one request to the /api/v1/agent/... endpoints, in
order. Cancellation reaches the agent through the replies to its heartbeats, so the runner
beats at least every `heartbeat_cap` seconds while tasks run. Status changes
(`status_change`) are websocket-only.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import httpx

from taskfleet.agent import protocol as wire
from taskfleet.agent.transports import AuthFailed, Host, Offline, Reply, TaskSpec

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
HEARTBEAT_CAP_SECONDS = 5.0
CODES = {
    400: wire.INVALID,
    401: wire.UNAUTHORIZED,
    403: wire.FORBIDDEN,
    404: wire.NOT_FOUND,
    409: wire.CONFLICT,
    413: wire.TOO_LARGE,
    422: wire.INVALID,
}
HELLO_KEYS = ("version", "platform", "task_types", "tags")


async def open_session(
    server: str, name: str, secret: str, host: Host, wait: float = 25.0, burst: bool = False
) -> LongPollSession:
    """Says hello over HTTP. Raises `AuthFailed` or `Offline`."""
    timeout = httpx.Timeout(CONNECT_TIMEOUT_SECONDS, read=wait + CONNECT_TIMEOUT_SECONDS)
    client = httpx.AsyncClient(
        base_url=server.rstrip("/"),
        auth=(name, secret),
        timeout=timeout,
        headers={"user-agent": "taskfleet-agent"},
    )
    session = LongPollSession(client, host, 0.0 if burst else wait, burst)
    try:
        reply = await session.post("/api/v1/agent/hello", {k: host.hello()[k] for k in HELLO_KEYS})
        if not reply.ok:
            raise Offline(f"hello refused ({reply.code}): {reply.message}")
    except BaseException:
        await client.aclose()
        raise
    return session


class LongPollSession:
    window = 1  # one request at a time keeps the reports in order
    heartbeat_cap = HEARTBEAT_CAP_SECONDS

    def __init__(self, client: httpx.AsyncClient, host: Host, wait: float, burst: bool) -> None:
        self._client = client
        self._host = host
        self._wait = wait
        self._burst = burst

    async def post(self, path: str, body: Any = None, **params: Any) -> Reply:
        """One request; refusals come back as a `Reply`, a lost server as `Offline`."""
        try:
            response = await self._client.post(path, json=body, params=params or None)
        except httpx.TransportError as exc:
            raise Offline(f"cannot reach the server: {exc!r}") from exc
        if response.status_code == 401:
            raise AuthFailed("the server refused this agent's name and secret")
        if response.is_success:
            return Reply(True, response.json() if response.content else None)
        code = CODES.get(response.status_code)
        if code is None:
            raise Offline(f"the server answered {response.status_code}: {response.text[:200]}")
        return Reply(False, code=code, message=_detail(response))

    async def submit(self, method: str, params: dict[str, Any]) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        future.set_result(await self._send(method, params))
        return future

    async def _send(self, method: str, params: dict[str, Any]) -> Reply:
        task = f"/api/v1/agent/tasks/{params.get('task_id')}"
        attempt = {"attempt": params.get("attempt")}
        if method == "task_status" and params.get("state") == "running":
            keys = ("percent", "eta", "activity")
            return await self.post(f"{task}/progress", {**attempt, **_some(params, keys)})
        if method == "task_status":
            body = {"status": params.get("state"), **_some(params, ("result", "msg"))}
            return await self.post(f"{task}/result", {**attempt, **body})
        if method == "log":
            return await self.post(f"{task}/log", {**attempt, "text": params.get("text")})
        if method == "output":
            return await self.post(f"{task}/outputs", {**attempt, "data": params.get("data")})
        if method == "event":
            return await self.post("/api/v1/events", params.get("data"))
        return Reply(True, {})  # ping and capacity mean nothing over HTTP

    async def sign_off(self) -> None:
        reply = await self.post("/api/v1/agent/sign-off")
        if not reply.ok:
            raise Offline(f"sign-off refused: {reply.message}")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def serve(self) -> None:
        """Claims while the agent has free slots; each claim waits for work."""
        host = self._host
        while True:
            host.changed.clear()
            if host.free_slots() <= 0:
                await host.changed.wait()
                continue
            task = await self._claim()
            if task is not None:
                host.start_task(task)
            elif self._burst:
                host.idle()
                await host.changed.wait()  # until a slot frees or the agent stops

    async def _claim(self) -> TaskSpec | None:
        """One long-poll; given up when the agent stops wanting work meanwhile."""
        claim = asyncio.ensure_future(self.post("/api/v1/agent/claim", wait=self._wait))
        try:
            while not await self._claimed_or_changed(claim):
                self._host.changed.clear()
                if self._host.free_slots() <= 0:
                    # A task claimed in this moment is returned by the sign-off or the lease.
                    return None
            return _task_spec(claim.result())
        finally:
            if not claim.done():
                claim.cancel()
                await asyncio.gather(claim, return_exceptions=True)

    async def _claimed_or_changed(self, claim: asyncio.Future[Reply]) -> bool:
        changed = asyncio.ensure_future(self._host.changed.wait())
        either: set[asyncio.Future[Any]] = {claim, changed}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
        return claim.done()


def _task_spec(reply: Reply) -> TaskSpec | None:
    if not reply.ok:
        raise Offline(f"claim refused ({reply.code}): {reply.message}")
    task = reply.result
    if not isinstance(task, dict):
        return None
    return TaskSpec(
        task_id=int(task["id"]),
        attempt=int(task["attempt"]),
        type=str(task["type"]),
        payload=task.get("payload"),
        lease_seconds=_lease(task.get("claimed_at"), task.get("lease_expires")),
        timeout_seconds=task.get("timeout_seconds"),
    )


def _lease(claimed: object, expires: object) -> float:
    try:
        seconds = (
            datetime.fromisoformat(str(expires)) - datetime.fromisoformat(str(claimed))
        ).total_seconds()
    except ValueError:
        return 60.0
    return seconds if seconds > 0 else 60.0


def _some(params: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: params[k] for k in keys if params.get(k) is not None}


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
