"""A small admin client for the native REST API (/api/v1), used by the CLI.

It speaks plain JSON over httpx and turns every failure (problem+json answers, a server
that cannot be reached) into one `ClientError` carrying a message fit for an operator.
Credentials saved by `taskfleet login` live in `<home>/credentials.json`, mode 0600.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from taskfleet.config import Settings

DEFAULT_SERVER = "http://127.0.0.1:8080"
CREDENTIALS_FILE = "credentials.json"
REQUEST_TIMEOUT_SECONDS = 30.0
TERMINAL = frozenset({"completed", "failed", "cancelled"})  #: task statuses that are final


class ClientError(Exception):
    """A failure to show the operator as is: an API error or an unreachable server."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status  #: the HTTP status, when the server answered


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    server: str
    name: str
    token: str


def normalize(url: str) -> str:
    """`host:port` or a URL, as a base URL without a trailing slash."""
    scheme, _, rest = (url.strip() if "://" in url else f"http://{url.strip()}").partition("://")
    if not rest.strip("/"):
        raise ClientError(f"invalid server URL {url!r}")
    return f"{scheme}://{rest.rstrip('/')}"


def credentials_path(home: str) -> Path:
    return Path(home).expanduser() / CREDENTIALS_FILE


def load_credentials(home: str) -> Credentials | None:
    """The saved credentials, or None when not logged in."""
    path = credentials_path(home)
    try:
        data = json.loads(path.read_text())
        return Credentials(server=data["server"], name=data["name"], token=data["token"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClientError(f"cannot read {path} ({exc}); run `taskfleet login` again") from exc


def save_credentials(home: str, credentials: Credentials) -> Path:
    """Writes the credentials readable by their owner only (0600), replacing any others."""
    path = credentials_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # the umask or an old leftover must not widen it
        json.dump(asdict(credentials), fh, indent=2)
    os.replace(partial, path)
    return path


def forget_credentials(home: str) -> bool:
    """Removes the saved credentials; False when there were none."""
    try:
        credentials_path(home).unlink()
    except FileNotFoundError:
        return False
    return True


def connect(settings: Settings) -> AdminClient:
    """A client for the configured server: flags and settings first, then the saved login.

    The saved token is sent only to the server it was issued by.
    """
    saved = load_credentials(settings.home)
    if settings.server_url:
        server = normalize(settings.server_url)
    else:
        server = saved.server if saved else DEFAULT_SERVER
    token = settings.token or (saved.token if saved and saved.server == server else "")
    hint = "" if settings.server_url or saved else "; give --server URL or log in first"
    return AdminClient(server, token, hint)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    status = f"HTTP {response.status_code} {response.reason_phrase}"
    plain = response.headers.get("content-type", "").startswith("text/plain")
    text = response.text.strip()[:200] if plain else ""
    return f"{status}: {text}" if text else status


class AdminClient:
    """Blocking calls to /api/v1 with a session token or API key."""

    def __init__(self, server: str, token: str = "", hint: str = "") -> None:
        self.server = normalize(server)
        self.token = token
        self._hint = hint  #: appended when the server cannot be reached
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            self._http = httpx.Client(
                base_url=f"{self.server}/api/v1",
                headers=headers,
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except httpx.InvalidURL as exc:
            raise ClientError(f"invalid server URL {server!r} ({exc})") from exc

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, timeout: float | None = None, **kwargs: Any) -> Any:
        """Sends one request; returns the decoded JSON body (None for an empty one).

        Raises `ClientError` for an error answer or when the server cannot be reached.
        """
        limit = httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
        try:
            response = self._http.request(method, path, timeout=limit, **kwargs)
        except httpx.ConnectError as exc:
            reason = f"the server at {self.server} is unreachable ({exc}){self._hint}"
            raise ClientError(reason) from exc
        except httpx.TransportError as exc:
            raise ClientError(f"request to {self.server} failed: {exc!r}") from exc
        if response.is_error:
            raise ClientError(self._explain(path, response), response.status_code)
        try:
            return response.json() if response.content else None
        except ValueError as exc:
            reason = f"{self.server} answered without JSON; is it a taskfleet server?"
            raise ClientError(reason) from exc

    def _explain(self, path: str, response: httpx.Response) -> str:
        detail = _detail(response)
        if response.status_code != 401 or path == "/login":
            return detail
        how = f"`taskfleet login --server {self.server} NAME`"
        if self.token:
            return f"{detail}; log in again with {how}"
        return f"{detail}; log in with {how}, or pass an API key with --token"

    # -- sessions ---------------------------------------------------------------------

    def login(self, name: str, secret: str) -> str:
        """Returns a new session token."""
        session = self.call("POST", "/login", json={"name": name, "secret": secret})
        return str(session["token"])

    def logout(self) -> None:
        self.call("POST", "/logout")

    # -- tasks --------------------------------------------------------------------------

    def submit(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        """Queues a task (one per group member with `broadcast`); returns what was queued."""
        return list(self.call("POST", "/tasks", json=task))

    def tasks(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return dict(self.call("GET", "/tasks", params=params))

    def task(self, task_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/tasks/{task_id}"))

    def wait(self, task_id: int, timeout: float) -> dict[str, Any]:
        """The task once finished, or as it stands after `timeout` seconds."""
        return dict(
            self.call(
                "GET",
                f"/tasks/{task_id}/wait",
                params={"timeout": timeout},
                timeout=timeout + REQUEST_TIMEOUT_SECONDS,
            )
        )

    def cancel(self, task_id: int) -> dict[str, Any]:
        return dict(self.call("POST", f"/tasks/{task_id}/cancel"))

    def requeue(self, task_id: int) -> dict[str, Any]:
        return dict(self.call("POST", f"/tasks/{task_id}/requeue"))

    def logs(self, task_id: int, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        params = {"after": after, "limit": limit}
        return list(self.call("GET", f"/tasks/{task_id}/logs", params=params))

    # -- the fleet ----------------------------------------------------------------------

    def agents(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/agents"))

    def agent(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/agents/{quote(name, safe='')}"))

    def events(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        params = {} if limit is None else {"limit": limit}
        return list(self.call("GET", f"/agents/{quote(name, safe='')}/events", params=params))
