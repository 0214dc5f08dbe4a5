"""The fleet: agents, their groups, their events, and who may see what."""

from __future__ import annotations

import json
from collections.abc import Sequence

from taskfleet.core import errors
from taskfleet.core.accounts import check_name
from taskfleet.core.models import Agent, AgentStatus, Event, Group, JSONValue, Principal
from taskfleet.core.ports import Bus, Clock, Store

EVENT_BOUND = 512  #: events kept per agent; dutserver's ring buffer size
MAX_EVENT_BYTES = 64 * 1024
MAX_TAGS = 64


def check_labels(values: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) > MAX_TAGS:
        raise errors.Invalid(f"{what} must be a list of at most {MAX_TAGS} names")
    return tuple(sorted({check_name(v) for v in values}))


def agent_channel(name: str) -> str:
    """Bus channel that wakes one agent: new work for it, or a control change."""
    return f"agent:{name}"


def control_channel(name: str) -> str:
    """Bus channel woken only when the agent's record or a cancel request for one of its
    tasks changes: a woken connection re-reads those only then, not for each new task."""
    return f"agent-control:{name}"


def is_control_channel(channel: str) -> bool:
    return channel.startswith(control_channel(""))


def control_channels(name: str) -> list[str]:
    """Both channels of one agent: every control change is also news on `agent_channel`,
    which the protocols without a control channel of their own watch."""
    return [agent_channel(name), control_channel(name)]


class AgentService:
    def __init__(self, store: Store, bus: Bus, clock: Clock, event_bound: int = EVENT_BOUND):
        self._store = store
        self._bus = bus
        self._clock = clock
        self.event_bound = event_bound

    async def get(self, name: str) -> Agent:
        """Raises `NotFound`."""
        agent = await self._store.get_agent(name) if isinstance(name, str) else None
        if agent is None:
            raise errors.NotFound(f"no agent named {name!r}")
        return agent

    async def get_by_id(self, agent_id: int) -> Agent:
        """Raises `NotFound`."""
        agent = await self._store.get_agent_by_id(agent_id)
        if agent is None:
            raise errors.NotFound(f"no agent with id {agent_id}")
        return agent

    async def add(
        self,
        name: str,
        *,
        enabled: bool = True,
        tags: Sequence[str] = (),
        metadata: dict[str, JSONValue] | None = None,
        runs_schedules: bool = False,
    ) -> Agent:
        """Creates an agent record without an account, for protocols whose agents carry no
        credentials of their own (raintank's). Raises `Invalid`, or `Conflict` when the
        name is taken."""
        checked_tags = check_labels(tags, "tags")
        if await self._store.get_agent(check_name(name)) is not None:
            raise errors.Conflict(f"an agent named {name!r} already exists")
        agent = await self._store.add_agent(
            name, None, self._clock.now(), runs_schedules=runs_schedules
        )
        fields: dict[str, object] = {"enabled": bool(enabled), "tags": checked_tags}
        if metadata:
            fields["metadata"] = metadata
        return await self._store.update_agent(agent.id, **fields)

    async def for_principal(self, principal: Principal) -> Agent:
        """The agent record of the calling agent account. Raises `Forbidden` for admins."""
        if principal.is_admin:
            raise errors.Forbidden("this endpoint is for agents")
        agent = await self._store.get_agent(principal.name)
        if agent is None:
            agent = await self._store.add_agent(
                principal.name, principal.account_id, self._clock.now()
            )
        return agent

    async def all(self) -> list[Agent]:
        return await self._store.list_agents()

    async def hello(
        self,
        agent: Agent,
        *,
        version: str = "",
        platform: str = "",
        task_types: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        status: AgentStatus = AgentStatus.AWAKE,
        runs_schedules: bool | None = None,
    ) -> Agent:
        """Marks the agent online with what it says about itself."""
        fields: dict[str, object] = {
            "online": True,
            "last_seen": self._clock.now(),
            "status": status,
            "version": str(version)[:100],
            "platform": str(platform)[:200],
        }
        if runs_schedules is not None:
            fields["runs_schedules"] = runs_schedules
        if task_types is not None:
            fields["task_types"] = check_labels(task_types, "task types")
        if tags is not None:
            fields["tags"] = check_labels(tags, "tags")
        return await self._store.update_agent(agent.id, **fields)

    async def touch(self, agent_ids: Sequence[int]) -> None:
        """Notes that these connected agents are still there (`last_seen`), in one write
        for a whole fleet rather than one per agent and ping."""
        if agent_ids:
            await self._store.touch_agents(agent_ids, self._clock.now())

    async def left(self, agent_ids: Sequence[int]) -> None:
        """These agents' connections closed together (the server is stopping): one write
        marks them all offline, not one per agent."""
        if agent_ids:
            await self._store.agents_offline(agent_ids, self._clock.now())

    async def seen(self, agent: Agent, online: bool = True) -> Agent:
        fields: dict[str, object] = {"online": online, "last_seen": self._clock.now()}
        if not online:
            fields["status"] = AgentStatus.OFFLINE
        return await self._store.update_agent(agent.id, **fields)

    async def update(
        self,
        name: str,
        *,
        enabled: bool | None = None,
        tags: Sequence[str] | None = None,
        nickname: str | None = None,
        metadata: dict[str, JSONValue] | None = None,
    ) -> Agent:
        agent = await self.get(name)
        fields: dict[str, object] = {}
        if enabled is not None:
            fields["enabled"] = bool(enabled)
        if tags is not None:
            fields["tags"] = check_labels(tags, "tags")
        if nickname is not None:
            fields["nickname"] = str(nickname)[:200]
        if metadata is not None:
            fields["metadata"] = metadata
        if not fields:
            return agent
        agent = await self._store.update_agent(agent.id, **fields)
        await self._bus.notify(control_channels(name))
        return agent

    async def request_status(self, name: str, status: AgentStatus, lazy: bool = False) -> Agent:
        """Queues a status change (asleep, awake, shutdown...) for the agent to acknowledge."""
        agent = await self.get(name)
        agent = await self._store.update_agent(
            agent.id, requested_status=AgentStatus(status), requested_lazy=bool(lazy)
        )
        await self._bus.notify(control_channels(name))
        return agent

    async def acknowledge_status(self, agent: Agent, status: AgentStatus) -> Agent:
        """The agent confirms it is now in `status`; a matching request is cleared."""
        fields: dict[str, object] = {"status": AgentStatus(status)}
        if agent.requested_status is status:
            fields.update(requested_status=None, requested_lazy=False)
        return await self._store.update_agent(agent.id, **fields)

    async def sign_off(self, agent: Agent) -> Agent:
        """The agent leaves: it is offline. Leaving answers a pending shutdown request; an
        agent that was asleep is asked to sleep again when it comes back, as Flamenco's
        manager keeps sleeping workers asleep across restarts."""
        fields: dict[str, object] = {
            "online": False,
            "last_seen": self._clock.now(),
            "status": AgentStatus.OFFLINE,
        }
        if agent.requested_status is AgentStatus.SHUTDOWN:
            fields.update(requested_status=None, requested_lazy=False)
        elif agent.status is AgentStatus.ASLEEP and agent.requested_status is None:
            fields.update(requested_status=AgentStatus.ASLEEP, requested_lazy=False)
        return await self._store.update_agent(agent.id, **fields)

    async def delete(self, name: str) -> None:
        agent = await self.get(name)
        await self._store.delete_agent(agent.id)
        await self._bus.notify(control_channels(name))

    async def set_groups(self, name: str, groups: Sequence[str]) -> Agent:
        agent = await self.get(name)
        names = check_labels(groups, "groups")
        agent = await self._store.set_agent_groups(agent.id, names, self._clock.now())
        await self._bus.notify(control_channels(name))  # it may take other tasks now
        return agent

    async def add_group(self, name: str) -> Group:
        return await self._store.add_group(check_name(name), self._clock.now())

    async def list_groups(self) -> list[Group]:
        return await self._store.list_groups()

    async def group_members(self, name: str) -> list[Agent]:
        """Raises `NotFound` for an unknown group (an empty group lists nothing)."""
        if name not in {g.name for g in await self._store.list_groups()}:
            raise errors.NotFound(f"no group named {name!r}")
        return await self._store.group_members(name)

    async def delete_group(self, name: str) -> None:
        await self._store.delete_group(name)

    async def post_event(self, agent: Agent, data: JSONValue) -> Event:
        """Records an agent's event; the agent keeps at most `event_bound`, oldest dropped."""
        if len(json.dumps(data)) > MAX_EVENT_BYTES:
            raise errors.TooLarge(f"an event must be at most {MAX_EVENT_BYTES} bytes of JSON")
        return await self._store.add_event(agent.id, self._clock.now(), data, self.event_bound)

    async def list_events(self, name: str, limit: int | None = None) -> list[Event]:
        agent = await self.get(name)
        return await self._store.list_events(agent.id, limit or self.event_bound)
