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
    log_format: str = "text"  #: "text", or "json" for one JSON object per line
    # -- the dutserver dialect --
    dut_poll_seconds: float = 26.0  #: GET /tasks long-poll, as the original
    dut_result_wait_seconds: float = 26.0  #: POST /tasks waits this long for the result
    dut_lease_seconds: float = 300.0  #: dut agents never heartbeat: redeliver after this
    # -- jobs (Flamenco's jobs of tasks) --
    task_fail_limit: int = 3  #: a job's task fails for good once this many agents failed it
    blacklist_threshold: int = 3  #: failed tasks of a job's type that blacklist an agent
    job_output_bound: int = 1000  #: produced outputs kept per job, oldest dropped first
    # -- the Flamenco dialect --
    #: When set, /register-worker needs `Authorization: Bearer <HS256 JWT signed with it>`.
    flamenco_registration_secret: str = ""
    #: A task stays with a Flamenco worker this long after its last update or may-i-run.
    flamenco_lease_seconds: float = 300.0
    # -- schedules (recurring routed tasks) --
    schedule_tick_seconds: float = 1.0  #: how often due runs are started and routes moved
    #: An `any` route moves to another agent once its agent has been offline this long.
    schedule_move_after_seconds: float = 2.0
    # -- statsd (alongside Prometheus /metrics) --
    statsd_enabled: bool = False
    statsd_addr: str = "localhost:8125"  #: host:port, UDP
    statsd_type: str = "standard"  #: standard or datadog (the same line format, no tags)
    statsd_prefix: str = "taskfleet."
    statsd_interval: float = 10.0  #: seconds between reports
    # -- the raintank dialect --
    raintank_prefix: str = "/raintank/api/v1"  #: `/api/v1` serves it where the original was
    #: The original's `admin-key`: accepted as `Authorization: Bearer …` by the raintank API
    #: and agent socket (besides `api_keys` and admin session tokens).
    raintank_admin_key: str = ""
    #: Create unknown agents when they connect, as the original did. Off: agents must be
    #: created first (POST …/agents), so that a typo cannot add a stray agent.
    raintank_auto_create_agents: bool = False
    raintank_heartbeat_seconds: float = 2.0  #: `heartbeat` events to each agent
    raintank_task_list_seconds: float = 60.0  #: a full `taskList` to each agent
    # -- the teeth dialect (teeth-agent's line-delimited JSON over TCP) --
    teeth_enabled: bool = False  #: listen for teeth agents
    teeth_host: str = ""  #: empty: the same address as `host`
    teeth_port: int = 8081  #: the original's agent port; 0 picks a free one
    teeth_tls_cert: str = ""  #: PEM certificate chain; with `teeth_tls_key`, agents use TLS
    teeth_tls_key: str = ""
    teeth_tls_client_ca: str = ""  #: set: agents must show a certificate this CA signed
    teeth_idle_timeout: float = 60.0  #: seconds without a line before a connection is closed
    #: Leases of tasks sent to teeth agents; each of the agent's pings extends them.
    teeth_lease_seconds: float = 90.0
    teeth_window: int = 8  #: commands sent to one agent and not answered yet
    # -- registration tokens and the Django Remotes dialect --
    #: Hosts registered with a registration token join this agent group ("": none).
    registration_group: str = "all-hosts"
    remotes_prefix: str = "/remotes/"  #: where the Django Remotes endpoints are served
    #: The `server_url` Remotes clients are told to use; empty: the request's own base URL
    #: and the prefix (set it behind a proxy that rewrites addresses).
    remotes_server_url: str = ""
    remotes_lease_seconds: float = 3600.0  #: a fetched command stays with its host this long
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
        for key, value in _read_file(file).items():
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


def _read_file(file: str | Path) -> dict[str, Any]:
    """The settings in a TOML file (its `[taskfleet]` table, or its top level), or in the
    raintank task-server's `key = value` format (`load_raintank_ini`)."""
    text = Path(file).read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return load_raintank_ini(file)
    if RAINTANK_ONLY_KEYS & set(data):
        return load_raintank_ini(file)
    table: dict[str, Any] = data.get("taskfleet", data)
    return table


# -- raintank task-server's config file (seed 001) ---------------------------------------------

#: Keys only task-server's files have: a file using any of them is read as one.
RAINTANK_ONLY_KEYS = frozenset(
    {"addr", "db-type", "db-connect-str", "admin-key", "app-api-key", "stats-enabled"}
    | {"statsd-addr", "statsd-type"}
)
#: The original's keys with no meaning here: read and ignored (`exchange` only when empty).
RAINTANK_IGNORED_KEYS = frozenset({"rabbitmq-url", "tsdb-url", "snap-url", "stats-prefix"})
#: task-server's numeric log levels (0 TRACE … 6 FATAL) as Python logging levels.
RAINTANK_LOG_LEVELS = ("debug", "debug", "info", "warning", "error", "critical", "critical")


def load_raintank_ini(path: str | Path) -> dict[str, Any]:
    """Reads a raintank task-server config file (`key = value` lines, `#`/`;` comments) and
    returns the settings it gives: `addr`, `db-type` (sqlite3 or postgres),
    `db-connect-str`, `admin-key` (or `app-api-key`), `log-level`, `stats-enabled`,
    `statsd-addr` and `statsd-type`. Keys under a `[section]` (the original's graphite
    `[stats]`) are ignored. Raises ValueError for an unknown key or a value taskfleet
    cannot honour (mysql, a RabbitMQ exchange)."""
    raw = _ini_pairs(Path(path).read_text(encoding="utf-8"))
    for key, value in raw.items():
        if key == "exchange" and value:
            raise ValueError(
                f"exchange = {value!r} in {path}: RabbitMQ is not supported; replicas that "
                "share a PostgreSQL database wake each other without it"
            )
        if key not in RAINTANK_ONLY_KEYS | RAINTANK_IGNORED_KEYS | {"log-level", "exchange"}:
            raise ValueError(f"unknown setting {key!r} in {path}")
    return _raintank_values(raw)


def _ini_pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"line {number}: expected `key = value`, got {line!r}")
        if not section:
            pairs[key.strip()] = value.strip().strip("\"'")
    return pairs


def _raintank_values(raw: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if raw.get("addr"):
        values["host"], values["port"] = _listen_address(raw["addr"])
    if raw.get("db-connect-str"):
        values["db"] = _raintank_db(raw.get("db-type") or "sqlite3", raw["db-connect-str"])
    elif raw.get("db-type"):
        _raintank_db(raw["db-type"], "")  # checks the type; keeps the default database
    if key := raw.get("admin-key") or raw.get("app-api-key"):
        values["raintank_admin_key"] = key
    if raw.get("log-level"):
        values["log_level"] = _log_level(raw["log-level"])
    for key, name in (
        ("stats-enabled", "statsd_enabled"),
        ("statsd-addr", "statsd_addr"),
        ("statsd-type", "statsd_type"),
    ):
        if raw.get(key):
            values[name] = raw[key]
    if values.get("statsd_type", "standard") not in ("standard", "datadog"):
        raise ValueError(f"statsd-type must be standard or datadog, not {raw['statsd-type']!r}")
    return values


def _listen_address(addr: str) -> tuple[str, int]:
    """`:8082` listens on every interface, as Go's net/http does."""
    host, colon, port = addr.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"addr must be [host]:port, not {addr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _raintank_db(db_type: str, connect: str) -> str:
    kind = db_type.strip().lower()
    if kind in ("sqlite3", "sqlite"):
        # go-sqlite3 takes `file:path?options`; the path is what matters here.
        path = connect.removeprefix("file:").partition("?")[0]
        return path or "task-server.db"
    if kind in ("postgres", "postgresql"):
        if "://" in connect:
            return connect
        if connect:
            return _postgres_url(connect)
        raise ValueError("db-type postgres needs db-connect-str (postgres://user:pw@host/db)")
    if kind == "mysql":
        raise ValueError("db-type mysql is not supported: use sqlite3 or postgres")
    raise ValueError(f"unknown db-type {db_type!r}: use sqlite3 or postgres")


def _postgres_url(dsn: str) -> str:
    """`host=h port=5432 user=u password=p dbname=d` (lib/pq's form) as a URL."""
    from urllib.parse import quote

    parts = dict(item.partition("=")[::2] for item in dsn.split())
    user = quote(parts.get("user", ""), safe="")
    password = parts.get("password")
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    port = f":{parts['port']}" if parts.get("port") else ""
    host = parts.get("host", "localhost")
    return f"postgresql://{auth}{host}{port}/{quote(parts.get('dbname', ''), safe='')}"


def _log_level(value: str) -> str:
    if value.isdigit():
        return RAINTANK_LOG_LEVELS[min(int(value), len(RAINTANK_LOG_LEVELS) - 1)]
    return value.lower()
