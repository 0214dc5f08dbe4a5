"""Settings: defaults, then a TOML file, then `TASKFLEET_*` environment, then flags.

This is the only module that reads the environment; everything else gets a `Settings`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "TASKFLEET_"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    db: str = "taskfleet.db"  #: a file path, sqlite:///… or postgresql://…
    sqlite_synchronous: str = "NORMAL"
    api_keys: tuple[str, ...] = ()  #: admin API keys, accepted as `Authorization: Bearer …`
    lease_seconds: float = 60.0
    poll_interval: float = 5.0  #: seconds; the longest a lost wake-up can delay a task
    reap_interval: float = 1.0  #: seconds between lease-expiry sweeps
    event_bound: int = 512
    max_body_bytes: int = 4 * 1024 * 1024
    long_poll_seconds: float = 25.0
    agent_grace_seconds: float = 30.0  #: a lost agent's tasks are requeued after this
    agent_ping_interval: float = 20.0  #: seconds between pings on an agent websocket
    agent_idle_timeout: float = 60.0  #: seconds of silence before an agent socket is closed
    #: The largest agent websocket message: room for a 1 MiB payload or result and its envelope.
    agent_max_message_bytes: int = 2 * 1024 * 1024
    agent_secret: str = ""  #: the agent's secret (`taskfleet agent run`), if no file is given
    log_level: str = "info"
    # -- the dutserver dialect --
    dut_poll_seconds: float = 26.0  #: GET /tasks long-poll, as the original
    dut_result_wait_seconds: float = 26.0  #: POST /tasks waits this long for the result
    dut_lease_seconds: float = 300.0  #: dut agents never heartbeat: redeliver after this
    # -- the CLI's admin commands (HTTP client side) --
    server_url: str = ""  #: e.g. http://127.0.0.1:8080; empty: the logged-in server, or that
    token: str = ""  #: a session token or API key; empty: the one stored by `taskfleet login`
    home: str = "~/.config/taskfleet"  #: where `taskfleet login` keeps credentials.json


def _cast(name: str, value: Any, default: Any) -> Any:
    """Casts a file or environment value to the default's type, with a clear error."""
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, tuple):
            items = value if isinstance(value, list | tuple) else str(value).split(",")
            return tuple(str(v).strip() for v in items if str(v).strip())
        return type(default)(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Config {name!r} has value {value!r}. Not a valid {type(default).__name__}."
        ) from None


def load(
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> Settings:
    """Builds the settings; later sources win. Flags that are None are ignored."""
    defaults = Settings()
    known = {f.name: getattr(defaults, f.name) for f in fields(Settings)}
    values: dict[str, Any] = {}
    if file is not None:
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
        data = data.get("taskfleet", data)
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown setting {key!r} in {file}")
            values[name] = _cast(name, value, known[name])
    environ = os.environ if env is None else env
    for name, default in known.items():
        if (raw := environ.get(ENV_PREFIX + name.upper())) is not None:
            values[name] = _cast(name, raw, default)
    for name, value in flags.items():
        if value is not None:
            values[name] = _cast(name, value, known[name])
    return dataclasses.replace(defaults, **values)
