"""Schedules in the store, on SQLite and PostgreSQL (`store` is parametrized): definitions
and their route indexes, which agent a route selects, and starting runs exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from taskfleet.core import errors
from taskfleet.core.models import (
    Agent,
    NewSchedule,
    NewTask,
    Route,
    RouteKind,
    ScheduleFilter,
    TargetKind,
    TaskStatus,
)
from taskfleet.core.schedules import routes_to
from taskfleet.store.sql import SqlStore, open_store

NOW = 1_700_000_000.0


async def make_agent(
    store: SqlStore, name: str, *, tags: Sequence[str] = (), online: bool = False
) -> Agent:
    agent = await store.add_agent(name, None, NOW)
    return await store.update_agent(agent.id, tags=tuple(tags), online=online, last_seen=NOW)


def definition(name: str = "ping", route: Route | None = None, **fields: object) -> NewSchedule:
    values: dict[str, object] = {"type": "/raintank/apps/ns1", "interval": 60}
    values.update(fields)
    return NewSchedule(name=name, route=route or Route(), **values)  # type: ignore[arg-type]


def run_task(agent: Agent) -> NewTask:
    return NewTask(type="ping", target_kind=TargetKind.AGENT, target=agent.name, max_attempts=1)


async def test_a_definition_round_trips_with_its_route(store: SqlStore) -> None:
    agent = await make_agent(store, "a1")
    by_tags = Route(kind=RouteKind.TAGS, tags=("dns", "eu"))
    created = await store.add_schedule(
        definition("t1", by_tags, config={"/x": {"k": [1, "v"]}}), None, NOW + 60, NOW
    )
    assert created.route == by_tags
    assert created.config == {"/x": {"k": [1, "v"]}}
    assert (created.next_run, created.created_at, created.updated_at) == (NOW + 60, NOW, NOW)
    assert await store.get_schedule(created.id) == created

    by_ids = Route(kind=RouteKind.AGENTS, agent_ids=(agent.id,))
    updated = await store.update_schedule(
        created.id, definition("t1", by_ids, enabled=False), None, NOW + 65, NOW + 5
    )
    assert updated.route == by_ids and updated.enabled is False
    assert updated.updated_at == NOW + 5 and updated.created_at == NOW
    assert updated.next_run == NOW + 65
    assert await store.get_schedule(created.id) == updated

    deleted = await store.delete_schedule(created.id)
    assert deleted == updated
    assert await store.get_schedule(created.id) is None
    assert await store.delete_schedule(created.id) is None


async def test_names_are_unique(store: SqlStore) -> None:
    first = await store.add_schedule(definition("same"), None, NOW, NOW)
    other = await store.add_schedule(definition("other"), None, NOW, NOW)
    with pytest.raises(errors.Conflict, match="'same' already exists"):
        await store.add_schedule(definition("same"), None, NOW, NOW)
    with pytest.raises(errors.Conflict):
        await store.update_schedule(other.id, definition("same"), None, None, NOW)
    renamed = await store.update_schedule(first.id, definition("same"), None, None, NOW)
    assert renamed.name == "same" and renamed.next_run == NOW
    with pytest.raises(errors.NotFound):
        await store.update_schedule(9999, definition("new"), None, None, NOW)


async def test_listing_filters_orders_and_pages(store: SqlStore) -> None:
    for name, task_type, enabled in [("b", "x", True), ("a", "y", False), ("c", "x", True)]:
        await store.add_schedule(definition(name, type=task_type, enabled=enabled), None, NOW, NOW)

    async def names(**query: object) -> list[str]:
        found = await store.list_schedules(ScheduleFilter(**query))  # type: ignore[arg-type]
        return [s.name for s in found]

    assert await names() == ["b", "a", "c"]
    assert await names(order_by="name") == ["a", "b", "c"]
    assert await names(type="x") == ["b", "c"]
    assert await names(enabled=False) == ["a"]
    assert await names(name_like="%b%") == ["b"]
    assert await names(order_by="name", offset=1, limit=1) == ["b"]


async def test_routes_select_agents_the_same_in_sql_and_in_core(store: SqlStore) -> None:
    dns = await make_agent(store, "dns", tags=["dns", "eu"])
    web = await make_agent(store, "web", tags=["web"])
    bare = await make_agent(store, "bare")
    any_dns = await store.add_schedule(definition("any"), dns.id, NOW, NOW)
    by_tag = await store.add_schedule(
        definition("tags", Route(kind=RouteKind.TAGS, tags=("dns", "web"))), None, NOW, NOW
    )
    by_id = await store.add_schedule(
        definition("ids", Route(kind=RouteKind.AGENTS, agent_ids=(bare.id, web.id))),
        None,
        NOW,
        NOW,
    )
    await store.add_schedule(definition("off", enabled=False), dns.id, NOW, NOW)
    expected = {
        "dns": [any_dns.id, by_tag.id],
        "web": [by_tag.id, by_id.id],
        "bare": [by_id.id],
    }
    every = await store.list_schedules(ScheduleFilter())
    for agent in (dns, web, bare):
        routed = [s.id for s in await store.schedules_for_agent(agent)]
        assert routed == expected[agent.name]
        assert [s.id for s in every if s.enabled and routes_to(s, agent)] == routed


async def test_routes_follow_the_agents_tags(store: SqlStore) -> None:
    agent = await make_agent(store, "a1")
    route = Route(kind=RouteKind.TAGS, tags=("gpu",))
    schedule = await store.add_schedule(definition("t", route), None, NOW, NOW)
    assert await store.schedules_for_agent(agent) == []
    agent = await store.update_agent(agent.id, tags=("gpu", "linux"))
    assert [s.id for s in await store.schedules_for_agent(agent)] == [schedule.id]
    agent = await store.update_agent(agent.id, tags=("linux",))
    assert await store.schedules_for_agent(agent) == []


async def test_deleting_an_agent_takes_it_off_its_routes(store: SqlStore) -> None:
    gone = await make_agent(store, "gone")
    stays = await make_agent(store, "stays")
    by_ids = Route(kind=RouteKind.AGENTS, agent_ids=(gone.id, stays.id))
    listed = await store.add_schedule(definition("ids", by_ids), None, NOW, NOW)
    assigned = await store.add_schedule(definition("any"), gone.id, NOW, NOW)
    await store.delete_agent(gone.id)
    after = await store.get_schedule(listed.id)
    assert after is not None and after.route.agent_ids == (stays.id,)
    moved = await store.get_schedule(assigned.id)
    assert moved is not None and moved.assigned_agent is None


async def test_a_run_starts_once_even_when_replicas_race(store: SqlStore, db_url: str) -> None:
    agent = await make_agent(store, "a1")
    schedule = await store.add_schedule(definition("t"), agent.id, NOW, NOW)
    assert [s.id for s in await store.due_schedules(NOW, 10)] == [schedule.id]
    other = await open_store(db_url)  # a second replica on the same database
    try:
        outcomes = await asyncio.gather(
            store.start_run(schedule.id, NOW, NOW + 60, [(agent.id, run_task(agent))], NOW),
            other.start_run(schedule.id, NOW, NOW + 60, [(agent.id, run_task(agent))], NOW),
        )
    finally:
        await other.close()
    started = [o for o in outcomes if o is not None]
    assert len(started) == 1 and len(started[0]) == 1
    assert outcomes.count(None) == 1
    assert await store.due_schedules(NOW + 59, 10) == []
    runs = await store.schedule_runs(schedule.id, 0, 10)
    assert [t.id for t in runs] == [started[0][0].id]
    assert runs[0].target == "a1" and runs[0].status is TaskStatus.QUEUED


async def test_an_agent_gets_no_new_run_while_its_last_one_waits(store: SqlStore) -> None:
    agent = await make_agent(store, "a1")
    schedule = await store.add_schedule(definition("t"), agent.id, NOW, NOW)
    runs = [(agent.id, run_task(agent))]
    first = await store.start_run(schedule.id, NOW, NOW + 60, runs, NOW)
    assert first is not None and len(first) == 1
    assert await store.start_run(schedule.id, NOW + 60, NOW + 120, runs, NOW + 60) == []
    claimed = await store.claim_task(agent, NOW + 61, 30)
    assert claimed is not None and claimed.id == first[0].id
    third = await store.start_run(schedule.id, NOW + 120, NOW + 180, runs, NOW + 120)
    assert third is not None and len(third) == 1
    assert [t.id for t in await store.schedule_runs(schedule.id, 0, 10)] == [
        first[0].id,
        third[0].id,
    ]
    assert [t.id for t in await store.schedule_runs(schedule.id, first[0].id, 10)] == [third[0].id]


async def test_stranded_any_routes_are_found_and_moved_by_compare_and_set(
    store: SqlStore,
) -> None:
    online = await make_agent(store, "on", online=True)
    lost = await make_agent(store, "lost")  # offline, last seen at NOW
    kept = await store.add_schedule(definition("kept"), online.id, NOW, NOW)
    stranded = await store.add_schedule(definition("stranded"), lost.id, NOW, NOW)
    unassigned = await store.add_schedule(definition("unassigned"), None, NOW, NOW)
    await store.add_schedule(
        definition("tags", Route(kind=RouteKind.TAGS, tags=("x",))), None, NOW, NOW
    )

    assert [s.id for s in await store.stranded_schedules(NOW, 10)] == [unassigned.id]
    found = await store.stranded_schedules(NOW + 1, 10)
    assert [s.id for s in found] == [stranded.id, unassigned.id]

    assert await store.assign_schedule(stranded.id, lost.id, online.id)
    assert not await store.assign_schedule(stranded.id, lost.id, online.id)
    assert await store.assign_schedule(unassigned.id, None, online.id)
    assert await store.stranded_schedules(NOW + 1, 10) == []
    assert [s.id for s in await store.schedules_for_agent(online)] == [
        kept.id,
        stranded.id,
        unassigned.id,
    ]
    await store.update_agent(online.id, enabled=False)
    assert len(await store.stranded_schedules(NOW, 10)) == 3


async def test_agents_that_run_schedules_themselves_are_marked(store: SqlStore) -> None:
    raintank = await store.add_agent("rt", None, NOW, runs_schedules=True)
    native = await store.add_agent("native", None, NOW)
    assert raintank.runs_schedules and not native.runs_schedules
    assert (await store.update_agent(native.id, runs_schedules=True)).runs_schedules


async def test_a_run_never_repeats_for_the_same_due_time(store: SqlStore) -> None:
    agent = await make_agent(store, "a1")
    schedule = await store.add_schedule(definition("t"), agent.id, NOW, NOW)
    runs = [(agent.id, run_task(agent))]
    first = await store.start_run(schedule.id, NOW, NOW + 60, runs, NOW)
    assert first is not None and len(first) == 1
    await store.claim_task(agent, NOW, 30)
    # Were `next_run` ever moved back onto a due time already run, nothing repeats.
    await store.update_schedule(schedule.id, definition("t"), agent.id, NOW, NOW)
    assert await store.start_run(schedule.id, NOW, NOW + 60, runs, NOW) == []
