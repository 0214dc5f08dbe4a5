"""raintank's wire format: what Go's encoding/json writes, RFC3339Nano times, the
`{"meta": …, "body": …}` envelope, the agent and task DTOs, request decoding, and the
agent socket's binary event framing (PROTOCOLS.md §2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from taskfleet.core import errors
from taskfleet.core.models import Agent, NewSchedule, Route, RouteKind, Schedule

ZERO_TIME = "0001-01-01T00:00:00Z"  #: Go's zero time.Time
ORG_ID = 1  #: the org the original gave its admin key
EVENT_V1 = 0  #: the version byte of every event frame
MIN_FRAME_BYTES = 9  #: task-agent-ng panics on anything shorter
AGENT_NAME_RE = re.compile(r"^[0-9a-zA-Z_-]+$")
ROUTE_TYPES = {RouteKind.ANY: "any", RouteKind.TAGS: "byTags", RouteKind.AGENTS: "byIds"}
ROUTE_KINDS = {name: kind for kind, name in ROUTE_TYPES.items()}
MAX_INT64 = 2**63 - 1
GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028"}
GO_ESCAPES["\u2029"] = "\\u2029"
GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


# -- Go's encoding/json -----------------------------------------------------------------------


class Struct(dict[str, Any]):
    """A JSON object written in field order, as Go writes a struct (maps come out sorted)."""


def go_json(value: Any) -> str:
    """`value` as Go's json.Marshal writes it: compact, map keys sorted, `<`, `>` and `&`
    escaped, floats in Go's shortest form (`1`, not `1.0`)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, Struct):
        return "{" + ",".join(f"{_go_string(k)}:{go_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{_go_string(str(k))}:{go_json(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _go_string(text: str) -> str:
    return GO_ESCAPE_RE.sub(lambda m: GO_ESCAPES[m.group()], json.dumps(text, ensure_ascii=False))


def _go_float(number: float) -> str:
    if number != 0 and not 1e-6 <= abs(number) < 1e21:
        mantissa, _, exponent = repr(number).partition("e")
        sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
        return f"{mantissa}e{sign}{digits}"
    return format(Decimal(repr(number)).normalize(), "f")


def go_time(ts: float | None) -> str:
    """RFC3339Nano in UTC, as Go writes a time.Time (`…:05.1618Z`; zero: year 1)."""
    if ts is None:
        return ZERO_TIME
    moment = datetime.fromtimestamp(ts, UTC)
    fraction = f".{moment.microsecond:06d}".rstrip("0").rstrip(".")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def go_time_string(ts: float, monotonic: float) -> str:
    """time.Time.String(): `2018-03-17 05:09:17.25672063 +0000 UTC m=+2.532669118`."""
    moment = datetime.fromtimestamp(ts, UTC)
    fraction = f".{moment.microsecond:06d}".rstrip("0").rstrip(".")
    return f"{moment:%Y-%m-%d %H:%M:%S}{fraction} +0000 UTC m=+{monotonic:.9f}"


# -- the envelope -------------------------------------------------------------------------------


def envelope(kind: str, body: Any) -> str:
    """`{"meta":{"code":200,"message":"success","type":kind},"body":…}`."""
    meta = Struct(code=200, message="success", type=kind)
    return go_json(Struct(meta=meta, body=body))


def error_envelope(code: int, message: str) -> str:
    return go_json(Struct(meta=Struct(code=code, message=message, type="error"), body=None))


# -- DTOs ---------------------------------------------------------------------------------------


def agent_dto(agent: Agent) -> Struct:
    """The stored agent as GET answers it. `enabledChange` is not kept (zero time);
    `onlineChange` is when the agent was last seen, which for raintank agents is when it
    connected or disconnected; `updated` is its creation time."""
    return Struct(
        id=agent.id,
        name=agent.name,
        enabled=agent.enabled,
        enabledChange=ZERO_TIME,
        public=bool(agent.metadata.get("public", False)),
        tags=list(agent.tags),
        online=agent.online,
        onlineChange=go_time(agent.last_seen),
        created=go_time(agent.created_at),
        updated=go_time(agent.created_at),
    )


def new_agent_dto(agent: Agent, tags: list[str] | None) -> Struct:
    """What POST answers: the original echoed its input with the new id and times, so the
    change times are zero and `tags` is null unless some were given."""
    dto = agent_dto(agent)
    dto.update(enabledChange=ZERO_TIME, tags=tags, online=False, onlineChange=ZERO_TIME)
    return dto


def route_dto(route: Route) -> Struct:
    config: dict[str, Any] = {}
    if route.kind is RouteKind.TAGS:
        config = {"tags": list(route.tags)}
    elif route.kind is RouteKind.AGENTS:
        config = {"ids": list(route.agent_ids)}
    return Struct(type=ROUTE_TYPES[route.kind], config=config)


def task_dto(schedule: Schedule) -> Struct:
    return Struct(
        id=schedule.id,
        name=schedule.name,
        taskType=schedule.type,
        orgId=ORG_ID,
        config=schedule.config,
        interval=schedule.interval,
        route=route_dto(schedule.route),
        enabled=schedule.enabled,
        created=go_time(schedule.created_at),
        updated=go_time(schedule.updated_at),
    )


def agent_can_decode(schedule: Schedule) -> bool:
    """Whether task-agent-ng can decode and schedule this task: its `config` must be an
    object of objects (Go's map[string]map[string]interface{}) and its interval positive
    and within a time.Duration. Schedules made through the native API may be neither."""
    config_ok = all(isinstance(v, dict) for v in schedule.config.values())
    return config_ok and 0 < schedule.interval <= MAX_INT64 // 1_000_000_000


# -- the agent socket's events --------------------------------------------------------------------


def event_frame(name: str, payload: bytes) -> bytes:
    """One binary message: version byte 0, the name's length, the name, the payload."""
    encoded = name.encode()
    frame = bytes((EVENT_V1, len(encoded))) + encoded + payload
    if not 1 <= len(encoded) <= 255 or len(frame) < MIN_FRAME_BYTES:
        raise ValueError(f"event {name!r} cannot be framed for task-agent-ng")
    return frame


# -- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentIn:
    """An AgentDTO as a client sends it (form fields or JSON)."""

    id: int = 0
    name: str = ""
    enabled: bool = False
    public: bool = False
    tags: list[str] | None = None


def parse_json(body: bytes) -> Any:
    def refuse(constant: str) -> None:
        raise errors.Invalid(f"{constant} is not JSON")

    try:
        return json.loads(body, parse_constant=refuse)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise errors.Invalid(f"the body is not valid JSON: {exc}") from None


def _integer(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_INT64:
        raise errors.Invalid(f"{key} must be a whole number")
    return value


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise errors.Invalid(f"{key} must be a string")
    return value


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise errors.Invalid(f"{key} must be true or false")
    return value


def _strings(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.Invalid(f"{key} must be a list of strings")
    return value


def agent_from_json(data: Any) -> AgentIn:
    if not isinstance(data, dict):
        raise errors.Invalid("send the agent as a JSON object")
    return AgentIn(
        id=_integer(data, "id"),
        name=_text(data, "name"),
        enabled=_flag(data, "enabled"),
        public=_flag(data, "public"),
        tags=_strings(data.get("tags"), "tags"),
    )


GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False", ""})


def _form_flag(form: Mapping[str, list[str]], key: str) -> bool:
    value = (form.get(key) or [""])[-1]
    if value not in GO_TRUE | GO_FALSE:
        raise errors.Invalid(f"{key} must be true or false, not {value!r}")
    return value in GO_TRUE


def agent_from_form(form: Mapping[str, list[str]]) -> AgentIn:
    """Form or multipart fields: name, enabled, public, id, and `tags` once per tag."""
    raw_id = (form.get("id") or ["0"])[-1] or "0"
    if not raw_id.isdigit():
        raise errors.Invalid("id must be a whole number")
    return AgentIn(
        id=int(raw_id),
        name=(form.get("name") or [""])[-1],
        enabled=_form_flag(form, "enabled"),
        public=_form_flag(form, "public"),
        tags=form.get("tags"),
    )


def check_agent_name(name: str) -> str:
    if not name:
        raise errors.Invalid("name is required")
    if not AGENT_NAME_RE.match(name):
        raise errors.Invalid(f"invalid agent name {name!r}: it must match ^[0-9a-zA-Z_-]+$")
    return name


def route_from_json(raw: Any) -> Route:
    """`{"type": "any"}`, `{"type": "byTags", "config": {"tags": […]}}` or
    `{"type": "byIds", "config": {"ids": […]}}`."""
    if not isinstance(raw, dict):
        raise errors.Invalid('route is required, e.g. {"type": "any"}')
    kind = ROUTE_KINDS.get(raw.get("type"))  # type: ignore[arg-type]
    if kind is None:
        raise errors.Invalid(f"unknown route type {raw.get('type')!r}: use any, byTags or byIds")
    if kind is RouteKind.ANY:
        return Route()  # the original ignores an `any` route's config
    config = raw.get("config")
    key = "tags" if kind is RouteKind.TAGS else "ids"
    if not isinstance(config, dict) or set(config) != {key}:
        raise errors.Invalid(f'invalid route config: a {raw["type"]} route takes {{"{key}": […]}}')
    if kind is RouteKind.TAGS:
        return Route(kind=kind, tags=tuple(_strings(config[key], "route tags") or ()))
    ids = config[key]
    if not isinstance(ids, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise errors.Invalid("route ids must be a list of agent ids")
    return Route(kind=kind, agent_ids=tuple(ids))


def _config(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise errors.Invalid(
            "config must map each task type to an object of settings, e.g. "
            '{"/raintank/apps/ns1": {"zone": "example.com"}}'
        )
    return raw


def task_from_json(data: Any) -> tuple[int, NewSchedule]:
    """A TaskDTO as clients send it: (its id, or 0; the definition). `metrics`, `orgId`,
    `created` and `updated` are ignored; an empty `taskType` is the first key of `config`."""
    if not isinstance(data, dict):
        raise errors.Invalid("send the task as a JSON object")
    name = _text(data, "name")
    if not name:
        raise errors.Invalid("name is required")
    interval = _integer(data, "interval")
    if interval <= 0:
        raise errors.Invalid(
            f"interval must be a whole number of seconds greater than 0 (got {interval}); "
            "task-agent-ng cannot run a task with interval 0"
        )
    config = _config(data.get("config"))
    task_type = _text(data, "taskType") or next(iter(config), "")
    if not task_type:
        raise errors.Invalid("taskType is required when config is empty")
    definition = NewSchedule(
        name=name,
        type=task_type,
        interval=interval,
        route=route_from_json(data.get("route")),
        config=config,
        enabled=_flag(data, "enabled"),
    )
    return _integer(data, "id"), definition
