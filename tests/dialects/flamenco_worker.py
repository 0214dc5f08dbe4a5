"""Flamenco Worker 2.5 on the wire, as PROTOCOLS.md's appendix recorded it: the same
headers, bodies serialized as `requests` does (`json.dumps` with its default separators),
and empty POSTs with `Content-Length: 0` and no content type. Tests drive it step by step."""

from __future__ import annotations

import json
import secrets
import string
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.api.conftest import Live

HEADERS = {
    "User-Agent": "Flamenco-Worker/2.5",
    "Accept-Encoding": "gzip, deflate",
    "Accept": "*/*",
    "Connection": "keep-alive",
}
TYPES = ["sleep", "debug", "file-management", "exec"]
REGISTRATION_SECRET = "a-registration-secret-of-at-least-32-bytes"


def hex_id(number: int) -> str:
    return f"{number:024x}"


def log_lines(*texts: str) -> str:
    """The worker's log format: "<ISO 8601 UTC>: text" lines joined with newlines."""
    now = datetime.now(UTC).isoformat()
    return "\n".join(f"{now}: {text}" for text in texts)


class Worker:
    def __init__(self, live: Live, nickname: str, task_types: list[str] | None = None) -> None:
        self.http = live.client(headers=HEADERS)
        self.nickname = nickname
        self.task_types = TYPES if task_types is None else task_types
        self.secret = "".join(
            secrets.choice(string.ascii_letters + string.digits) for _ in "x" * 64
        )
        self.id = ""

    @property
    def auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.id, self.secret)

    async def send(self, method: str, path: str, doc: Any = None, **kw: Any) -> httpx.Response:
        """One request with Basic auth; `doc` goes out as `requests` would send `json=doc`."""
        auth = kw.pop("auth", self.auth)
        if doc is not None:
            kw["content"] = json.dumps(doc).encode()
            kw["headers"] = {"Content-Type": "application/json", **kw.get("headers", {})}
        request = self.http.build_request(method, path, **kw)
        if doc is None and method == "POST" and "content" not in kw:  # the worker's "no body"
            assert request.headers["content-length"] == "0", request.headers
            assert "content-type" not in request.headers, request.headers
        return await self.http.send(request, auth=auth)

    async def register(self, **headers: str) -> httpx.Response:
        doc = {
            "secret": self.secret,
            "platform": "linux",
            "supported_task_types": self.task_types,
            "nickname": self.nickname,
        }
        response = await self.send("POST", "/register-worker", doc, auth=None, headers=headers)
        if response.status_code == 200:
            self.id = response.json()["_id"]
        return response

    async def sign_on(self) -> httpx.Response:
        doc = {"supported_task_types": self.task_types, "nickname": self.nickname}
        return await self.send("POST", "/sign-on", doc)

    async def fetch(self) -> httpx.Response:
        """`POST /task`: Content-Length 0, no content type."""
        return await self.send("POST", "/task")

    async def task(self) -> dict[str, Any]:
        """Fetches a task that must be there."""
        response = await self.fetch()
        assert response.status_code == 200, (response.status_code, response.text)
        doc: dict[str, Any] = response.json()
        return doc

    async def update(self, task_id: str, status: str | None = None, **doc: Any) -> httpx.Response:
        body = {
            "activity": "",
            "current_command_idx": 0,
            "task_progress_percentage": 0,
            "command_progress_percentage": 0,
            "metrics": {"timing": {}},
            **doc,
        }
        if status is not None:
            body["task_status"] = status
        return await self.send("POST", f"/tasks/{task_id}/update", body)

    async def finish(self, task_id: str, status: str = "completed", *log: str) -> None:
        activity = {"completed": "Task completed", "failed": "Command exec failed: exit 1"}
        doc: dict[str, Any] = {"activity": activity.get(status, status)}
        if log:
            doc["log"] = log_lines(*log)
        response = await self.update(task_id, status, **doc)
        assert response.status_code == 204, (response.status_code, response.text)

    async def may_i_run(self, task_id: str) -> dict[str, Any]:
        response = await self.send("GET", f"/may-i-run/{task_id}")
        assert response.status_code == 200, (response.status_code, response.text)
        doc: dict[str, Any] = response.json()
        return doc
