"""The store contract, run against SQLite and PostgreSQL (`store` is parametrized).

Times are explicit `now` values, so leases and expiry need no sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from taskfleet.bus.local import LocalBus
from taskfleet.config import Settings
from taskfleet.core import errors
from taskfleet.core.models import (
    Agent,
    AgentStatus,
    Job,
    NewTask,
    Outcome,
    Progress,
    Role,
    TargetKind,
    Task,
    TaskFilter,
    TaskStatus,
)
from taskfleet.services import Services, wire
from taskfleet.store import tables
from taskfleet.store.direct import InsertMany
from taskfleet.store.sql import SqlStore, open_store

NOW = 1_700_000_000.0
LEASE = 60.0  # seconds


class FixedClock:
    def __init__(self, now: float = NOW) -> None:
        self.time = now

    def now(self) -> float:
        return self.time


async def make_agent(
    store: SqlStore,
    name: str,
    *,
    tags: Sequence[str] = (),
    groups: Sequence[str] = (),
    task_types: Sequence[str] = (),
) -> Agent:
    agent = await store.add_agent(name, None, NOW)
    if tags or task_types:
        agent = await store.update_agent(agent.id, tags=tuple(tags), task_types=tuple(task_types))
    if groups:
        agent = await store.set_agent_groups(agent.id, groups, NOW)
    return agent


async def queue(store: SqlStore, *new: NewTask, now: float = NOW) -> list[Task]:
    return await store.add_tasks(list(new), now)


async def claim(store: SqlStore, agent: Agent, now: float = NOW) -> Task | None:
    return await store.claim_task(agent, now, LEASE)


async def claim_one(store: SqlStore, agent: Agent, now: float = NOW) -> Task:
    task = await claim(store, agent, now)
    assert task is not None, f"{agent.name} got no task"
    return task


async def stored(store: SqlStore, task_id: int) -> Task:
    task = await store.get_task(task_id)
    assert task is not None, f"no task {task_id}"
    return task


async def finish(
    store: SqlStore,
    task: Task,
    status: TaskStatus = TaskStatus.COMPLETED,
    result: object = None,
    *,
    agent_id: int | None = None,
    attempt: int | None = None,
    now: float = NOW + 1,
) -> tuple[Task, bool]:
    owner = task.lease_owner if agent_id is None else agent_id
    assert owner is not None
    return await store.finish_task(
        task.id,
        owner,
        task.attempt if attempt is None else attempt,
        status,
        result,
        "failed" if status is TaskStatus.FAILED else None,
        now,
    )


def services(store: SqlStore, clock: FixedClock) -> Services:
    return wire(Settings(lease_seconds=LEASE), store, LocalBus(), clock)


# -- accounts, sessions, settings ---------------------------------------------------------


async def test_accounts_are_listed_by_name(store: SqlStore) -> None:
    bob = await store.add_account("bob", Role.AGENT, "hash-b", NOW)
    alice = await store.add_account("alice", Role.ADMIN, "hash-a", NOW + 1)

    assert await store.list_accounts() == [alice, bob]
    assert alice.role is Role.ADMIN and alice.enabled and alice.created_at == NOW + 1
    assert alice.id != bob.id


async def test_duplicate_account_name_conflicts(store: SqlStore) -> None:
    await store.add_account("alice", Role.ADMIN, "h", NOW)

    with pytest.raises(errors.Conflict):
        await store.add_account("alice", Role.AGENT, "h2", NOW)
    assert [a.name for a in await store.list_accounts()] == ["alice"]


async def test_secret_hash_is_kept_and_replaced(store: SqlStore) -> None:
    account = await store.add_account("alice", Role.ADMIN, "old", NOW)
    assert await store.account_with_hash("alice") == (account, "old")

    await store.set_secret_hash(account.id, "new")

    assert await store.account_with_hash("alice") == (account, "new")
    assert await store.account_with_hash("nobody") is None


async def test_remove_account_takes_sessions_and_agent_along(store: SqlStore) -> None:
    account = await store.add_account("host1", Role.AGENT, "h", NOW)
    await store.add_agent("host1", account.id, NOW)
    await store.add_session("token", account.id, NOW + 100)

    await store.remove_account("host1")

    assert await store.list_accounts() == []
    assert await store.get_agent("host1") is None
    assert await store.session_account("token", NOW) is None
    with pytest.raises(errors.NotFound):
        await store.remove_account("host1")


async def test_session_is_valid_until_it_expires(store: SqlStore) -> None:
    account = await store.add_account("alice", Role.ADMIN, "h", NOW)
    await store.add_session("token", account.id, expires=NOW + 10)

    assert await store.session_account("token", NOW) == account
    assert await store.session_account("token", NOW + 9.9) == account
    assert await store.session_account("token", NOW + 10) is None
    assert await store.session_account("other", NOW) is None


async def test_removed_session_is_gone(store: SqlStore) -> None:
    account = await store.add_account("alice", Role.ADMIN, "h", NOW)
    await store.add_session("token", account.id, NOW + 10)

    assert await store.remove_session("token") is True
    assert await store.remove_session("token") is False
    assert await store.session_account("token", NOW) is None


async def test_settings_hold_json_and_can_be_overwritten(store: SqlStore) -> None:
    assert await store.get_setting("policy") is None

    await store.set_setting("policy", {"mode": "open", "limits": [1, 2]})
    assert await store.get_setting("policy") == {"mode": "open", "limits": [1, 2]}

    await store.set_setting("policy", "closed")
    assert await store.get_setting("policy") == "closed"


# -- agents and groups --------------------------------------------------------------------


async def test_agent_is_found_by_name_and_id(store: SqlStore) -> None:
    agent = await store.add_agent("host1", None, NOW)

    assert agent.status is AgentStatus.OFFLINE and agent.tags == () and agent.enabled
    assert await store.get_agent("host1") == agent
    assert await store.get_agent_by_id(agent.id) == agent
    assert await store.get_agent("nope") is None
    assert await store.get_agent_by_id(agent.id + 1000) is None


async def test_duplicate_agent_name_conflicts(store: SqlStore) -> None:
    await store.add_agent("host1", None, NOW)

    with pytest.raises(errors.Conflict):
        await store.add_agent("host1", None, NOW)


async def test_update_agent_sets_fields(store: SqlStore) -> None:
    agent = await store.add_agent("host1", None, NOW)

    updated = await store.update_agent(
        agent.id,
        tags=("gpu", "linux"),
        task_types=("build",),
        status=AgentStatus.AWAKE,
        requested_status=AgentStatus.ASLEEP,
        online=True,
        last_seen=NOW + 5,
        metadata={"cpu": 8},
    )

    assert updated.tags == ("gpu", "linux")
    assert updated.task_types == ("build",)
    assert updated.status is AgentStatus.AWAKE
    assert updated.requested_status is AgentStatus.ASLEEP
    assert updated.online and updated.last_seen == NOW + 5
    assert updated.metadata == {"cpu": 8}
    assert await store.get_agent("host1") == updated
    assert await store.list_agents() == [updated]


async def test_update_agent_refuses_unknown_fields_and_agents(store: SqlStore) -> None:
    agent = await store.add_agent("host1", None, NOW)

    with pytest.raises(ValueError, match="not agent fields"):
        await store.update_agent(agent.id, name="renamed")
    with pytest.raises(errors.NotFound):
        await store.update_agent(agent.id + 1000, online=True)


async def test_agent_groups_are_replaced_and_created_on_demand(store: SqlStore) -> None:
    a = await store.add_agent("a", None, NOW)
    b = await store.add_agent("b", None, NOW)

    a = await store.set_agent_groups(a.id, ["rack1", "gpu"], NOW)
    await store.set_agent_groups(b.id, ["rack1"], NOW)
    assert a.groups == ("gpu", "rack1")
    assert [g.name for g in await store.list_groups()] == ["gpu", "rack1"]
    assert [m.name for m in await store.group_members("rack1")] == ["a", "b"]

    a = await store.set_agent_groups(a.id, ["rack2"], NOW)
    assert a.groups == ("rack2",)
    assert [m.name for m in await store.group_members("rack1")] == ["b"]
    assert (await store.get_agent("a")) == a

    with pytest.raises(errors.NotFound):
        await store.set_agent_groups(a.id + 1000, ["rack1"], NOW)


async def test_groups_add_and_delete(store: SqlStore) -> None:
    group = await store.add_group("rack1", NOW)
    assert await store.list_groups() == [group]
    with pytest.raises(errors.Conflict):
        await store.add_group("rack1", NOW)

    agent = await store.add_agent("a", None, NOW)
    await store.set_agent_groups(agent.id, ["rack1"], NOW)
    await store.delete_group("rack1")

    assert await store.list_groups() == []
    member = await store.get_agent("a")
    assert member is not None and member.groups == ()
    with pytest.raises(errors.NotFound):
        await store.delete_group("rack1")


async def test_delete_agent_removes_its_events_and_memberships(store: SqlStore) -> None:
    agent = await store.add_agent("a", None, NOW)
    await store.set_agent_groups(agent.id, ["rack1"], NOW)
    await store.add_event(agent.id, NOW, {"n": 1}, bound=10)

    await store.delete_agent(agent.id)

    assert await store.get_agent("a") is None
    assert await store.group_members("rack1") == []
    assert await store.list_events(agent.id, 10) == []


# -- events -------------------------------------------------------------------------------


async def test_events_keep_the_newest_within_the_bound_oldest_first(store: SqlStore) -> None:
    agent = await store.add_agent("a", None, NOW)
    for n in range(8):
        await store.add_event(agent.id, NOW + n, {"n": n}, bound=5)

    events = await store.list_events(agent.id, limit=100)

    assert [e.data for e in events] == [{"n": n} for n in range(3, 8)]
    assert [e.time for e in events] == [NOW + n for n in range(3, 8)]
    assert [e.data["n"] for e in await store.list_events(agent.id, limit=2)] == [6, 7]


async def test_event_bound_is_per_agent(store: SqlStore) -> None:
    a = await store.add_agent("a", None, NOW)
    b = await store.add_agent("b", None, NOW)
    for n in range(3):
        await store.add_event(a.id, NOW, n, bound=3)
    for n in range(5):
        await store.add_event(b.id, NOW, n, bound=2)

    assert [e.data for e in await store.list_events(a.id, 10)] == [0, 1, 2]
    assert [e.data for e in await store.list_events(b.id, 10)] == [3, 4]


# -- queueing and reading tasks -----------------------------------------------------------


async def test_added_tasks_are_queued_in_order(store: SqlStore) -> None:
    added = await queue(
        store,
        NewTask(type="build", payload={"ref": "main"}, priority=3, max_attempts=5),
        NewTask(type="test", payload=[1, 2], timeout_seconds=30.0),
    )

    assert [t.type for t in added] == ["build", "test"]
    assert added[0].id < added[1].id
    first = added[0]
    assert first.status is TaskStatus.QUEUED and first.attempt == 0
    assert first.payload == {"ref": "main"} and first.priority == 3 and first.max_attempts == 5
    assert first.created_at == first.updated_at == NOW
    assert added[1].timeout_seconds == 30.0
    assert await store.get_task(first.id) == first
    assert await store.get_task(first.id + 1000) is None


async def test_list_tasks_filters_and_pages(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    job, _ = await store.add_job_with_tasks(Job(id=0, name="render"), [], [], NOW)
    tasks = await queue(
        store,
        NewTask(type="build"),
        NewTask(type="test", job_id=job.id),
        NewTask(type="build", target_kind=TargetKind.AGENT, target="a", priority=9),
    )
    claimed = await claim_one(store, agent)

    def ids(found: list[Task]) -> list[int]:
        return [t.id for t in found]

    assert ids(await store.list_tasks(TaskFilter())) == ids(tasks)
    assert ids(await store.list_tasks(TaskFilter(type="build"))) == [tasks[0].id, tasks[2].id]
    assert ids(await store.list_tasks(TaskFilter(status=TaskStatus.ACTIVE))) == [claimed.id]
    assert ids(await store.list_tasks(TaskFilter(agent_id=agent.id))) == [claimed.id]
    assert ids(await store.list_tasks(TaskFilter(target="a"))) == [tasks[2].id]
    assert ids(await store.list_tasks(TaskFilter(job_id=job.id))) == [tasks[1].id]
    assert ids(await store.list_tasks(TaskFilter(limit=2))) == ids(tasks[:2])
    assert ids(await store.list_tasks(TaskFilter(after_id=tasks[1].id))) == [tasks[2].id]


async def test_tasks_are_counted_by_status(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t"), NewTask(type="t"), NewTask(type="t"))
    await claim_one(store, agent)

    assert await store.count_tasks_by_status() == {TaskStatus.QUEUED: 2, TaskStatus.ACTIVE: 1}


# -- claiming -----------------------------------------------------------------------------


async def test_claim_takes_higher_priority_first_then_fifo(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    added = await queue(
        store, *(NewTask(type="t", priority=p, payload=i) for i, p in enumerate([0, 5, 5, -1, 10]))
    )

    order = [(await claim_one(store, agent)).payload for _ in added]

    assert order == [4, 1, 2, 0, 3]
    assert await claim(store, agent) is None


async def test_claim_leases_the_task_for_a_new_attempt(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    [queued] = await queue(store, NewTask(type="t"))

    task = await claim_one(store, agent, now=NOW + 5)

    assert task.id == queued.id
    assert task.status is TaskStatus.ACTIVE
    assert task.attempt == 1
    assert task.lease_owner == agent.id
    assert task.lease_expires == NOW + 5 + LEASE
    assert task.claimed_at == task.updated_at == NOW + 5
    assert await store.get_task(task.id) == task


@pytest.mark.parametrize(
    ("kind", "target", "takers"),
    [
        (TargetKind.AGENT, "tagged", {"tagged"}),
        (TargetKind.AGENT, "plain", {"plain"}),
        (TargetKind.GROUP, "rack1", {"tagged"}),
        (TargetKind.TAGS, "gpu", {"tagged"}),
        (TargetKind.TAGS, "gpu,linux", {"tagged"}),
        (TargetKind.TAGS, "gpu,windows", set()),
        (TargetKind.ANY, "", {"tagged", "plain"}),
    ],
)
async def test_claim_respects_the_target(
    store: SqlStore, kind: TargetKind, target: str, takers: set[str]
) -> None:
    agents = [
        await make_agent(store, "tagged", tags=["gpu", "linux", "x86"], groups=["rack1"]),
        await make_agent(store, "plain"),
    ]
    await queue(store, NewTask(type="t", target_kind=kind, target=target))

    for agent in agents:
        task = await claim(store, agent)
        assert (task is not None) == (agent.name in takers), agent.name
        await store.release_agent_tasks(agent.id, NOW)


async def test_claim_matches_task_types(store: SqlStore) -> None:
    builder = await make_agent(store, "builder", task_types=["build"])
    anything = await make_agent(store, "anything")
    await queue(store, NewTask(type="test", priority=1), NewTask(type="build"))

    assert (await claim_one(store, builder)).type == "build"
    assert await claim(store, builder) is None
    assert (await claim_one(store, anything)).type == "test"


async def test_tag_tasks_nobody_can_run_do_not_hide_runnable_ones(store: SqlStore) -> None:
    agent = await make_agent(store, "a", tags=["linux"])
    await queue(
        store,
        *(
            NewTask(type="t", target_kind=TargetKind.TAGS, target="windows", priority=5)
            for _ in range(100)
        ),
    )
    [runnable] = await queue(store, NewTask(type="t", target_kind=TargetKind.TAGS, target="linux"))

    assert (await claim_one(store, agent)).id == runnable.id


async def test_a_claimed_task_is_not_claimed_again(store: SqlStore) -> None:
    a = await make_agent(store, "a")
    b = await make_agent(store, "b")
    [queued] = await queue(store, NewTask(type="t"))

    assert (await claim_one(store, a)).id == queued.id
    assert await claim(store, b) is None


async def test_disabled_agent_gets_no_task(store: SqlStore) -> None:
    found = services(store, FixedClock())
    agent = await make_agent(store, "a")
    await found.tasks.submit([NewTask(type="t")])

    disabled = await store.update_agent(agent.id, enabled=False)
    assert await found.tasks.claim(disabled) is None

    enabled = await store.update_agent(agent.id, enabled=True)
    task = await found.tasks.claim(enabled)
    assert task is not None and task.lease_expires == NOW + LEASE


# -- reporting: compare-and-set on the current attempt ------------------------------------


async def test_extend_lease_records_progress(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t"))
    task = await claim_one(store, agent)

    extended = await store.extend_lease(
        task.id,
        agent.id,
        task.attempt,
        NOW + 500,
        Progress(percent=40.0, eta=12.0, activity="x" * 2000),
        NOW + 10,
    )

    assert extended.lease_expires == NOW + 500 and extended.updated_at == NOW + 10
    assert extended.progress == Progress(percent=40.0, eta=12.0, activity="x" * 1000)
    kept = await store.extend_lease(task.id, agent.id, task.attempt, NOW + 600, None, NOW + 20)
    assert kept.progress == extended.progress and kept.lease_expires == NOW + 600


async def test_stale_attempt_is_refused_and_nothing_is_recorded(store: SqlStore) -> None:
    a = await make_agent(store, "a")
    b = await make_agent(store, "b")
    await queue(store, NewTask(type="t"))
    first = await claim_one(store, a)
    await store.expire_leases(NOW + LEASE + 1)
    second = await claim_one(store, b, now=NOW + LEASE + 2)
    assert second.attempt == first.attempt + 1

    with pytest.raises(errors.Conflict, match="not current"):
        await finish(store, first, result="late")
    with pytest.raises(errors.Conflict):
        await store.extend_lease(first.id, a.id, first.attempt, NOW + 999, None, NOW + 70)
    with pytest.raises(errors.Conflict):
        await finish(store, second, agent_id=a.id)  # the right attempt, the wrong agent

    assert await store.get_task(first.id) == second


async def test_repeated_identical_finish_is_accepted_once(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t"))
    task = await claim_one(store, agent)

    done, recorded = await finish(store, task, result={"ok": 1}, now=NOW + 5)
    again, recorded_again = await finish(store, task, result={"ok": 1}, now=NOW + 6)

    assert recorded and not recorded_again
    assert done.status is TaskStatus.COMPLETED and done.result == {"ok": 1}
    assert done.finished_at == NOW + 5 and done.progress.percent == 100.0
    assert again == done == await store.get_task(task.id)
    # The same attempt reporting a different result is not a repeat: refused, not recorded.
    with pytest.raises(errors.Conflict):
        await finish(store, task, result={"ok": 2}, now=NOW + 7)
    assert await store.get_task(task.id) == done


async def test_a_different_outcome_for_a_finished_attempt_conflicts(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t"))
    task = await claim_one(store, agent)
    done, _ = await finish(store, task, TaskStatus.FAILED)

    with pytest.raises(errors.Conflict):
        await finish(store, task, TaskStatus.COMPLETED, result="ok")

    assert await store.get_task(task.id) == done
    assert done.status is TaskStatus.FAILED and done.error == "failed"


async def test_reports_for_unknown_tasks_are_not_found(store: SqlStore) -> None:
    agent = await make_agent(store, "a")

    with pytest.raises(errors.NotFound):
        await store.extend_lease(999, agent.id, 1, NOW + 60, None, NOW)
    with pytest.raises(errors.NotFound):
        await store.finish_task(999, agent.id, 1, TaskStatus.COMPLETED, None, None, NOW)


# -- lease expiry -------------------------------------------------------------------------


async def test_expired_lease_requeues_while_attempts_remain(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t", max_attempts=2))
    task = await claim_one(store, agent)

    assert await store.expire_leases(NOW + LEASE - 1) == []
    [requeued] = await store.expire_leases(NOW + LEASE + 1)

    assert requeued.id == task.id
    assert requeued.status is TaskStatus.QUEUED
    assert requeued.lease_owner is None and requeued.lease_expires is None
    assert requeued.attempt == 1
    assert await store.expire_leases(NOW + LEASE + 2) == []


async def test_expired_lease_on_the_last_attempt_fails_the_task(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t", max_attempts=2))
    await claim_one(store, agent)
    await store.expire_leases(NOW + LEASE + 1)
    await claim_one(store, agent, now=NOW + 100)

    [failed] = await store.expire_leases(NOW + 100 + LEASE + 1)

    assert failed.status is TaskStatus.FAILED
    assert failed.attempt == 2 and failed.finished_at == NOW + 100 + LEASE + 1
    assert failed.error is not None
    assert "attempt 2 of 2" in failed.error and "no attempts are left" in failed.error
    assert await claim(store, agent, now=NOW + 500) is None


async def test_task_past_its_timeout_fails_even_with_a_fresh_lease(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t", timeout_seconds=10.0, max_attempts=3))
    task = await claim_one(store, agent)
    await store.extend_lease(task.id, agent.id, task.attempt, NOW + 1000, None, NOW + 5)

    assert await store.expire_leases(NOW + 9) == []
    [failed] = await store.expire_leases(NOW + 11)

    assert failed.status is TaskStatus.FAILED
    assert failed.error is not None and "timed out after 10 s" in failed.error


async def test_expired_cancel_request_ends_cancelled(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t"))
    task = await claim_one(store, agent)
    await store.request_cancel(task.id, NOW + 1)

    [cancelled] = await store.expire_leases(NOW + LEASE + 1)

    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.finished_at == NOW + LEASE + 1


async def test_service_reap_wakes_a_requeued_task_for_another_agent(store: SqlStore) -> None:
    clock = FixedClock()
    found = services(store, clock)
    a = await make_agent(store, "a")
    b = await make_agent(store, "b")
    [submitted] = await found.tasks.submit([NewTask(type="t")])
    first = await found.tasks.claim(a)
    assert first is not None

    clock.time = NOW + LEASE + 1
    [requeued] = await found.tasks.reap()
    second = await found.tasks.claim(b)

    assert requeued.status is TaskStatus.QUEUED
    assert second is not None and second.id == submitted.id and second.attempt == 2
    with pytest.raises(errors.Conflict):
        await found.tasks.complete(a, first.id, first.attempt, "late")
    done = await found.tasks.complete(b, second.id, second.attempt, "ok")
    assert done.status is TaskStatus.COMPLETED and done.result == "ok"


# -- cancel and requeue -------------------------------------------------------------------


async def test_cancelling_a_queued_task_cancels_it_at_once(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    [task] = await queue(store, NewTask(type="t"))

    cancelled = await store.request_cancel(task.id, NOW + 3)

    assert cancelled.status is TaskStatus.CANCELLED and cancelled.finished_at == NOW + 3
    assert await claim(store, agent) is None


async def test_cancelling_an_active_task_asks_its_agent(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t"))
    task = await claim_one(store, agent)

    requested = await store.request_cancel(task.id, NOW + 3)
    assert requested.status is TaskStatus.CANCEL_REQUESTED
    assert requested.lease_owner == agent.id

    # The agent still holds the attempt: it may heartbeat, then confirms.
    await store.extend_lease(task.id, agent.id, task.attempt, NOW + 100, None, NOW + 4)
    confirmed, recorded = await finish(store, task, TaskStatus.CANCELLED, now=NOW + 5)
    assert recorded and confirmed.status is TaskStatus.CANCELLED


async def test_cancelling_a_finished_task_conflicts(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t"))
    task = await claim_one(store, agent)
    done, _ = await finish(store, task)

    with pytest.raises(errors.Conflict, match="already completed"):
        await store.request_cancel(task.id, NOW + 5)
    with pytest.raises(errors.NotFound):
        await store.request_cancel(task.id + 1000, NOW + 5)
    assert await store.get_task(task.id) == done


async def test_requeue_puts_a_finished_task_back(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t"))
    task = await claim_one(store, agent)
    await finish(store, task, TaskStatus.FAILED)

    requeued = await store.requeue_task(task.id, NOW + 10, extra_attempts=2)

    assert requeued.status is TaskStatus.QUEUED
    assert requeued.error is None and requeued.result is None and requeued.finished_at is None
    assert requeued.lease_owner is None
    assert (requeued.attempt, requeued.max_attempts) == (1, 3)
    again = await claim_one(store, agent, now=NOW + 11)
    assert again.attempt == 2  # attempt numbers never repeat


async def test_requeue_refuses_unfinished_and_unknown_tasks(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    [queued, active] = await queue(
        store, NewTask(type="t", priority=0), NewTask(type="t", priority=1)
    )
    await claim_one(store, agent)

    for task in (queued, active):
        with pytest.raises(errors.Conflict, match="not finished"):
            await store.requeue_task(task.id, NOW, extra_attempts=3)
    with pytest.raises(errors.NotFound):
        await store.requeue_task(active.id + 1000, NOW, extra_attempts=3)


async def test_release_requeues_active_and_confirms_cancel_requested(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    other = await make_agent(store, "b")
    await queue(store, *(NewTask(type="t", priority=p) for p in (4, 3, 2, 1)))
    running = await claim_one(store, agent)
    cancelling = await claim_one(store, agent)
    finished = await claim_one(store, agent)
    others = await claim_one(store, other)
    await store.request_cancel(cancelling.id, NOW + 1)
    await finish(store, finished)

    released = {t.id: t for t in await store.release_agent_tasks(agent.id, NOW + 2)}

    assert set(released) == {running.id, cancelling.id}
    assert released[running.id].status is TaskStatus.QUEUED
    assert released[running.id].lease_owner is None
    assert released[cancelling.id].status is TaskStatus.CANCELLED
    assert (await stored(store, finished.id)).status is TaskStatus.COMPLETED
    assert (await stored(store, others.id)).status is TaskStatus.ACTIVE
    # The attempt counter only grows, so the released attempt can never report again.
    again = await claim_one(store, other, now=NOW + 3)
    assert again.id == running.id and again.attempt == running.attempt + 1
    with pytest.raises(errors.Conflict):
        await finish(store, running)


# -- logs, outputs, jobs ------------------------------------------------------------------


async def test_log_chunks_are_read_in_order_after_an_id(store: SqlStore) -> None:
    [task, other] = await queue(store, NewTask(type="t"), NewTask(type="t"))
    for n in range(5):
        await store.append_log(task.id, 1, NOW + n, f"line {n}\n")
    await store.append_log(other.id, 1, NOW, "elsewhere")

    chunks = await store.read_log(task.id, after_id=0, limit=100)
    assert [c.text for c in chunks] == [f"line {n}\n" for n in range(5)]
    assert [c.time for c in chunks] == [NOW + n for n in range(5)]
    assert {(c.task_id, c.attempt) for c in chunks} == {(task.id, 1)}

    rest = await store.read_log(task.id, after_id=chunks[1].id, limit=2)
    assert [c.text for c in rest] == ["line 2\n", "line 3\n"]


async def test_outputs_are_listed_in_order(store: SqlStore) -> None:
    [task] = await queue(store, NewTask(type="t"))

    first = await store.add_output(task.id, NOW, {"file": "a.png"})
    second = await store.add_output(task.id, NOW + 1, {"file": "b.png"})

    assert await store.list_outputs(task.id) == [first, second]
    assert second.data == {"file": "b.png"} and second.time == NOW + 1


async def test_jobs_are_kept_and_summarized_newest_first(store: SqlStore) -> None:
    first, _ = await store.add_job_with_tasks(
        Job(id=0, name="a", type="blender", priority=5, settings={"frames": "1-10"}), [], [], NOW
    )
    second, _ = await store.add_job_with_tasks(Job(id=0, name="b"), [], [], NOW + 1)

    assert await store.get_job(first.id) == first
    assert first.settings == {"frames": "1-10"} and first.priority == 5
    assert second.settings == {}
    assert await store.get_job(second.id + 1000) is None
    assert [s.job for s in await store.job_summaries(10)] == [second, first]
    assert [s.job for s in await store.job_summaries(1)] == [second]


async def test_cancel_racing_a_claim_waits_for_it(postgres_url: str) -> None:
    """PostgreSQL only (SQLite has one writer): a cancel that meets a claim in flight
    waits for it and then asks the new owner, rather than failing half-way."""
    store = await open_store(postgres_url)
    try:
        agent = await make_agent(store, "a")
        [task] = await queue(store, NewTask(type="t"))
        assert isinstance(store.engine, AsyncEngine)
        async with store.engine.begin() as claiming:
            await claiming.execute(
                update(tables.tasks)
                .where(tables.tasks.c.id == task.id)
                .values(status=TaskStatus.ACTIVE.value, attempt=1, lease_owner=agent.id)
            )
            cancelling = asyncio.create_task(store.request_cancel(task.id, NOW + 1))
            await until_blocked_on_a_lock(store)
        cancelled = await asyncio.wait_for(cancelling, 10)
    finally:
        await store.close()

    assert cancelled.status is TaskStatus.CANCEL_REQUESTED and cancelled.lease_owner == agent.id


async def until_blocked_on_a_lock(store: SqlStore, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    assert isinstance(store.engine, AsyncEngine)
    while asyncio.get_running_loop().time() < deadline:
        async with store.engine.connect() as conn:
            if (await conn.execute(query)).scalar_one():
                return
    raise AssertionError("nobody waited on a lock")


async def test_release_fails_a_task_on_its_last_attempt(store: SqlStore) -> None:
    agent = await make_agent(store, "a")
    await queue(store, NewTask(type="t", max_attempts=1))
    task = await claim_one(store, agent)

    (released,) = await store.release_agent_tasks(agent.id, NOW + 2)

    assert released.id == task.id and released.status is TaskStatus.FAILED
    assert released.error == "the agent left during the last attempt allowed"


async def test_any_queued_sees_only_queued_tasks(store: SqlStore) -> None:
    assert not await store.any_queued()
    agent = await make_agent(store, "a1")
    await queue(store, NewTask(type="t"), NewTask(type="t"))
    assert await store.any_queued()
    await claim_one(store, agent)
    assert await store.any_queued()
    await claim_one(store, agent)
    assert not await store.any_queued()  # two active tasks, none queued


async def test_touch_agents_sets_last_seen_of_those_named(store: SqlStore) -> None:
    one, two = await make_agent(store, "a1"), await make_agent(store, "a2")
    await store.touch_agents([one.id, 9999], NOW + 30)  # an agent that is gone is skipped
    assert (await store.get_agent("a1")).last_seen == NOW + 30  # type: ignore[union-attr]
    assert (await store.get_agent("a2")).last_seen == two.last_seen  # type: ignore[union-attr]


async def test_claim_tasks_claims_for_several_agents_in_one_transaction(store: SqlStore) -> None:
    a1, a2, a3 = [await make_agent(store, name) for name in ("a1", "a2", "a3")]
    for_a2, first_any, second_any = await queue(
        store,
        NewTask(type="t", target_kind=TargetKind.AGENT, target="a2", priority=-5),
        NewTask(type="t", priority=1),
        NewTask(type="t"),
    )
    # a1 and a3 both want the best "any" task: the first gets it, the second the next one.
    # a2 takes its own task (the "any" ones are gone by then), and a1 again finds nothing.
    got = await store.claim_tasks([(a1, LEASE), (a3, LEASE), (a2, LEASE), (a1, LEASE)], NOW)
    assert [t.id if t else None for t in got] == [first_any.id, second_any.id, for_a2.id, None]
    assert [t.lease_owner for t in got if t] == [a1.id, a3.id, a2.id]
    assert all(t.attempt == 1 and t.status is TaskStatus.ACTIVE for t in got if t)
    assert await store.claim_tasks([(a1, LEASE)], NOW) == [None]


async def test_agents_offline_marks_only_those_named(store: SqlStore) -> None:
    one, two = await make_agent(store, "a1"), await make_agent(store, "a2")
    for agent in (one, two):
        await store.update_agent(agent.id, online=True, status=AgentStatus.AWAKE)
    await store.agents_offline([one.id, 9999], NOW + 5)
    gone, still = await store.get_agent("a1"), await store.get_agent("a2")
    assert gone is not None and still is not None
    assert (gone.online, gone.status, gone.last_seen) == (False, AgentStatus.OFFLINE, NOW + 5)
    assert (still.online, still.status) == (True, AgentStatus.AWAKE)


async def test_claim_tasks_fills_several_slots_of_one_agent(store: SqlStore) -> None:
    agent = await make_agent(store, "a1")
    low, high, mid = await queue(
        store, NewTask(type="t"), NewTask(type="t", priority=9), NewTask(type="t", priority=5)
    )
    got = await store.claim_tasks([(agent, LEASE)] * 4, NOW)
    assert [t.id if t else None for t in got] == [high.id, mid.id, low.id, None]


async def test_finish_tasks_answers_each_outcome_on_its_own(store: SqlStore) -> None:
    agent = await make_agent(store, "a1")
    *_, untouched = await queue(store, *(NewTask(type="t") for _ in range(4)))
    claimed = await store.claim_tasks([(agent, LEASE)] * 3, NOW)
    first, second, third = (t for t in claimed if t is not None)
    await finish(store, first, result=1)
    outcomes = [
        Outcome(first.id, agent.id, first.attempt, TaskStatus.COMPLETED, 1),  # a repeat
        Outcome(second.id, agent.id, second.attempt + 1, TaskStatus.COMPLETED, 2),  # stale
        Outcome(third.id, agent.id, third.attempt, TaskStatus.FAILED, None, "boom"),
        Outcome(9999, agent.id, 1, TaskStatus.COMPLETED, 3),  # no such task
        Outcome(second.id, agent.id, second.attempt, TaskStatus.COMPLETED, 2),
    ]
    answers = await store.finish_tasks(outcomes, NOW + 2)
    assert answers[0] == (await store.get_task(first.id), False)
    assert isinstance(answers[1], errors.Conflict)
    assert isinstance(answers[3], errors.NotFound)
    recorded = [a for a in answers if isinstance(a, tuple) and a[1]]
    assert [(t.id, t.status, t.result, t.error) for t, _ in recorded] == [
        (third.id, TaskStatus.FAILED, None, "boom"),
        (second.id, TaskStatus.COMPLETED, 2, None),
    ]
    # The refused ones changed nothing; the others are stored.
    stored = {t.id: t.status for t in await store.list_tasks(TaskFilter())}
    assert stored == {
        first.id: TaskStatus.COMPLETED,
        second.id: TaskStatus.COMPLETED,
        third.id: TaskStatus.FAILED,
        untouched.id: TaskStatus.QUEUED,
    }


async def test_adding_no_tasks_adds_nothing(store: SqlStore) -> None:
    assert await store.add_tasks([], NOW) == []
    assert await store.list_tasks(TaskFilter(limit=5)) == []


async def test_finish_tasks_of_distinct_tasks_answers_each_outcome_on_its_own(
    store: SqlStore,
) -> None:
    # Each task once: on PostgreSQL one statement records the whole batch.
    agent = await make_agent(store, "a1")
    *_, untouched = await queue(store, *(NewTask(type="t") for _ in range(6)))
    claimed = await store.claim_tasks([(agent, LEASE)] * 5, NOW)
    done, stale, failed, cancelled, completed = (t for t in claimed if t is not None)
    await store.request_cancel(cancelled.id, NOW + 1)
    await finish(store, done, result={"r": 1})
    outcomes = [
        Outcome(done.id, agent.id, done.attempt, TaskStatus.COMPLETED, {"r": 1}),  # a repeat
        Outcome(stale.id, agent.id, stale.attempt + 1, TaskStatus.COMPLETED, 2),
        Outcome(failed.id, agent.id, failed.attempt, TaskStatus.FAILED, None, "boom"),
        Outcome(9999, agent.id, 1, TaskStatus.COMPLETED, 3),  # no such task
        Outcome(cancelled.id, agent.id, cancelled.attempt, TaskStatus.CANCELLED, None, "bye"),
        Outcome(completed.id, agent.id, completed.attempt, TaskStatus.COMPLETED, [2.5, None]),
    ]
    answers = await store.finish_tasks(outcomes, NOW + 2)
    assert answers[0] == (await store.get_task(done.id), False)
    assert isinstance(answers[1], errors.Conflict)
    assert isinstance(answers[3], errors.NotFound)
    recorded = [a for a in answers if isinstance(a, tuple) and a[1]]
    assert recorded == [(await stored(store, t.id), True) for t in (failed, cancelled, completed)]
    assert [(t.status, t.result, t.error, t.progress.percent) for t, _ in recorded] == [
        (TaskStatus.FAILED, None, "boom", None),
        (TaskStatus.CANCELLED, None, "bye", None),
        (TaskStatus.COMPLETED, [2.5, None], None, 100.0),
    ]
    assert all(t.finished_at == NOW + 2 and t.lease_expires is None for t, _ in recorded)
    assert (await stored(store, stale.id)).status is TaskStatus.ACTIVE
    assert (await stored(store, untouched.id)).status is TaskStatus.QUEUED
    # Repeats of the whole batch change nothing and answer as before.
    again = await store.finish_tasks(outcomes[2:3] + outcomes[4:], NOW + 3)
    assert again == [(t, False) for t, _ in recorded]


@pytest.mark.parametrize("value", [None, 0, 2.5, "text", [1, "a"], {"k": {"n": None}}, True])
async def test_hot_statements_read_and_write_what_sqlalchemy_does(
    store: SqlStore, value: object
) -> None:
    # A lone insert, the lease and the outcome run on SQLite's driver directly
    # (store/direct.py Prepared): the task they return, and what they store, must be what
    # every other query sees, and what a batch insert (through SQLAlchemy) stores.
    agent = await make_agent(store, "a1")
    (queued,) = await queue(store, NewTask(type="t", payload=value))
    assert queued == await store.get_task(queued.id) and queued.payload == value
    batch = await queue(store, *[NewTask(type="t", payload=value)] * 2)
    assert [t.payload for t in batch] == [value, value]
    for task in batch:
        await store.request_cancel(task.id, NOW)  # out of the claim's way
    claimed = await claim_one(store, agent)
    assert claimed == await store.get_task(queued.id)
    assert claimed.payload == value
    finished, recorded = await finish(store, claimed, result=value)
    assert recorded and finished == await store.get_task(queued.id)
    assert (finished.status, finished.result, finished.progress.percent) == (
        TaskStatus.COMPLETED,
        value,
        100.0,
    )


async def test_a_batch_comes_back_in_the_order_given_across_statements(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On SQLite a batch goes in as multi-row statements of `InsertMany.CHUNK` rows, the
    # rows coming back sorted by id (store/direct.py): every task must be the one asked for,
    # as any other query reads it.
    monkeypatch.setattr(InsertMany, "CHUNK", 3)
    asked = [
        NewTask(type=f"t{n}", payload={"n": n} if n % 2 else [n], priority=n % 3) for n in range(7)
    ]
    created = await queue(store, *asked)
    assert [(t.type, t.payload, t.priority) for t in created] == [
        (t.type, t.payload, t.priority) for t in asked
    ]
    assert [t.id for t in created] == sorted(t.id for t in created)
    assert created == [await store.get_task(t.id) for t in created]
