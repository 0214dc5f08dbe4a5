"""The engine's services against a real SQLite file, with a clock the tests move."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import argon2
import pytest

from taskfleet.bus.local import LocalBus
from taskfleet.config import Settings
from taskfleet.core import errors
from taskfleet.core import standby as standby_module
from taskfleet.core.accounts import VERIFIED_RECHECK_SECONDS, AccountService
from taskfleet.core.models import (
    Agent,
    NewJob,
    NewTask,
    Progress,
    RegistrationPolicy,
    Role,
    TargetKind,
    Task,
    TaskStatus,
)
from taskfleet.core.standby import Standby, Waiter
from taskfleet.services import Services, wire
from taskfleet.store.sql import open_store


class ManualClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def now(self) -> float:
        return self.t


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Services]:
    store = await open_store(str(tmp_path / "engine.db"))
    found = wire(Settings(lease_seconds=30, poll_interval=0.05), store, LocalBus(), ManualClock())
    # Cheap hashes keep the suite fast; production uses argon2's defaults.
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    object.__setattr__(found, "accounts", AccountService(store, found.clock, hasher=cheap))
    yield found
    await store.close()


async def agent_named(found: Services, name: str):
    await found.accounts.add(name, Role.AGENT, "secret")
    return await found.agents.get(name)


def clock(found: Services) -> ManualClock:
    assert isinstance(found.clock, ManualClock)
    return found.clock


async def test_higher_priority_first_then_fifo(engine: Services) -> None:
    a = await agent_named(engine, "a")
    low, high, high2 = await engine.tasks.submit(
        [
            NewTask(type="t", priority=0),
            NewTask(type="t", priority=5),
            NewTask(type="t", priority=5),
        ]
    )
    order = [(await engine.tasks.claim(a)).id for _ in range(3)]  # type: ignore[union-attr]
    assert order == [high.id, high2.id, low.id]
    assert await engine.tasks.claim(a) is None


async def test_targets_reach_only_matching_agents(engine: Services) -> None:
    a = await agent_named(engine, "a")
    b = await agent_named(engine, "b")
    await engine.agents.set_groups("b", ["render"])
    await engine.agents.update("b", tags=["gpu", "linux"])
    b = await engine.agents.get("b")
    for_a, for_group, for_tags = await engine.tasks.submit(
        [
            NewTask(type="t", target_kind=TargetKind.AGENT, target="a"),
            NewTask(type="t", target_kind=TargetKind.GROUP, target="render"),
            NewTask(type="t", target_kind=TargetKind.TAGS, target="linux,gpu"),
        ]
    )
    assert (await engine.tasks.claim(a)).id == for_a.id  # type: ignore[union-attr]
    assert await engine.tasks.claim(a) is None
    got = {(await engine.tasks.claim(b)).id for _ in range(2)}  # type: ignore[union-attr]
    assert got == {for_group.id, for_tags.id}


async def test_task_types_limit_what_an_agent_takes(engine: Services) -> None:
    a = await agent_named(engine, "a")
    a = await engine.agents.hello(a, task_types=["echo"])
    await engine.tasks.submit([NewTask(type="render")])
    assert await engine.tasks.claim(a) is None
    (echo,) = await engine.tasks.submit([NewTask(type="echo")])
    assert (await engine.tasks.claim(a)).id == echo.id  # type: ignore[union-attr]


async def test_unknown_targets_are_refused(engine: Services) -> None:
    with pytest.raises(errors.NotFound, match="no agent named 'ghost'"):
        await engine.tasks.submit([NewTask(type="t", target_kind=TargetKind.AGENT, target="ghost")])
    with pytest.raises(errors.Invalid):
        await engine.tasks.submit([NewTask(type="")])


async def test_broadcast_makes_one_task_per_member(engine: Services) -> None:
    for name in ("a", "b", "c"):
        await agent_named(engine, name)
        await engine.agents.set_groups(name, ["all"])
    created = await engine.tasks.broadcast("all", NewTask(type="t", payload=1))
    assert sorted(t.target for t in created) == ["a", "b", "c"]
    assert {t.target_kind for t in created} == {TargetKind.AGENT}


async def test_claim_wait_wakes_when_work_arrives(engine: Services) -> None:
    a = await agent_named(engine, "a")
    engine.tasks.poll_interval = 30  # only a wake-up can make this return in time
    waiting = asyncio.create_task(engine.tasks.claim_wait(a, timeout=60))
    await asyncio.sleep(0)
    (task,) = await engine.tasks.submit(
        [NewTask(type="t", target_kind=TargetKind.AGENT, target="a")]
    )
    claimed = await asyncio.wait_for(waiting, 5)
    assert claimed is not None and claimed.id == task.id


async def test_wait_returns_when_the_result_is_recorded(engine: Services) -> None:
    a = await agent_named(engine, "a")
    engine.tasks.poll_interval = 30
    (task,) = await engine.tasks.submit([NewTask(type="t")])
    claimed = await engine.tasks.claim(a)
    assert claimed is not None
    waiting = asyncio.create_task(engine.tasks.wait(task.id, timeout=60))
    await asyncio.sleep(0)
    await engine.tasks.complete(a, task.id, claimed.attempt, {"ok": True})
    done = await asyncio.wait_for(waiting, 5)
    assert (done.status, done.result) == (TaskStatus.COMPLETED, {"ok": True})


async def test_stale_attempts_are_refused_and_repeats_recorded_once(engine: Services) -> None:
    a = await agent_named(engine, "a")
    b = await agent_named(engine, "b")
    (task,) = await engine.tasks.submit([NewTask(type="t", max_attempts=3)])
    first = await engine.tasks.claim(a)
    assert first is not None
    clock(engine).t += 31
    await engine.tasks.reap()
    second = await engine.tasks.claim(b)
    assert second is not None and second.attempt == 2
    with pytest.raises(errors.Conflict, match="attempt 1"):
        await engine.tasks.complete(a, task.id, 1, "late")
    with pytest.raises(errors.Conflict):
        await engine.tasks.heartbeat(a, task.id, 1)
    done = await engine.tasks.complete(b, task.id, 2, "right")
    again = await engine.tasks.complete(b, task.id, 2, "right")
    assert done == again and again.result == "right"
    with pytest.raises(errors.Conflict):
        await engine.tasks.fail(b, task.id, 2, "changed my mind")


async def test_heartbeats_keep_the_lease_and_record_progress(engine: Services) -> None:
    a = await agent_named(engine, "a")
    (task,) = await engine.tasks.submit([NewTask(type="t")])
    await engine.tasks.claim(a)
    clock(engine).t += 20
    beat = await engine.tasks.heartbeat(a, task.id, 1, Progress(percent=40, activity="half"))
    clock(engine).t += 20
    assert await engine.tasks.reap() == []
    assert beat.progress.percent == 40 and beat.progress.activity == "half"


async def test_attempts_run_out_with_a_clear_error(engine: Services) -> None:
    a = await agent_named(engine, "a")
    (task,) = await engine.tasks.submit([NewTask(type="t", max_attempts=2)])
    for _ in range(2):
        assert await engine.tasks.claim(a) is not None
        clock(engine).t += 31
        await engine.tasks.reap()
    failed = await engine.tasks.get(task.id)
    assert failed.status is TaskStatus.FAILED
    assert failed.error is not None and "attempt 2 of 2" in failed.error


async def test_timeout_fails_the_task(engine: Services) -> None:
    a = await agent_named(engine, "a")
    (task,) = await engine.tasks.submit([NewTask(type="t", timeout_seconds=5)])
    await engine.tasks.claim(a)
    clock(engine).t += 6
    await engine.tasks.reap()
    timed_out = await engine.tasks.get(task.id)
    assert timed_out.status is TaskStatus.FAILED and "timed out after 5 s" in (
        timed_out.error or ""
    )


async def test_cancel_is_requested_then_confirmed(engine: Services) -> None:
    a = await agent_named(engine, "a")
    queued, running = await engine.tasks.submit([NewTask(type="t"), NewTask(type="t", priority=9)])
    assert (await engine.tasks.cancel(queued.id)).status is TaskStatus.CANCELLED
    await engine.tasks.claim(a)
    assert (await engine.tasks.cancel(running.id)).status is TaskStatus.CANCEL_REQUESTED
    beat = await engine.tasks.heartbeat(a, running.id, 1)
    assert beat.status is TaskStatus.CANCEL_REQUESTED
    assert (await engine.tasks.confirm_cancel(a, running.id, 1)).status is TaskStatus.CANCELLED
    with pytest.raises(errors.Conflict, match="already cancelled"):
        await engine.tasks.cancel(running.id)


async def test_sign_off_requeues_while_attempts_remain(engine: Services) -> None:
    a = await agent_named(engine, "a")
    (task,) = await engine.tasks.submit([NewTask(type="t", max_attempts=2)])
    await engine.tasks.claim(a)
    released = await engine.tasks.sign_off(a)
    assert [t.status for t in released] == [TaskStatus.QUEUED]
    again = await engine.tasks.claim(a)
    assert again is not None and (again.id, again.attempt) == (task.id, 2)
    (last,) = await engine.tasks.sign_off(a)
    assert last.status is TaskStatus.FAILED


async def test_requeue_grants_more_attempts_without_reusing_numbers(engine: Services) -> None:
    a = await agent_named(engine, "a")
    (task,) = await engine.tasks.submit([NewTask(type="t", max_attempts=1)])
    await engine.tasks.claim(a)
    await engine.tasks.fail(a, task.id, 1, "boom")
    requeued = await engine.tasks.requeue(task.id, attempts=2)
    assert (requeued.status, requeued.attempt, requeued.max_attempts) == (TaskStatus.QUEUED, 1, 3)
    with pytest.raises(errors.Conflict):
        await engine.tasks.fail(a, task.id, 1, "a late report from the first run")
    again = await engine.tasks.claim(a)
    assert again is not None and again.attempt == 2


async def test_logs_and_outputs_only_from_the_current_attempt(engine: Services) -> None:
    a = await agent_named(engine, "a")
    b = await agent_named(engine, "b")
    (task,) = await engine.tasks.submit([NewTask(type="t")])
    await engine.tasks.claim(a)
    await engine.tasks.log(a, task.id, 1, "line one\n")
    await engine.tasks.add_output(a, task.id, 1, {"path": "/out.png"})
    with pytest.raises(errors.Conflict):
        await engine.tasks.log(b, task.id, 1, "not mine")
    assert [c.text for c in await engine.tasks.read_log(task.id)] == ["line one\n"]
    assert [o.data for o in await engine.tasks.outputs(task.id)] == [{"path": "/out.png"}]


async def test_events_are_bounded_per_agent(engine: Services) -> None:
    a = await agent_named(engine, "a")
    engine.agents.event_bound = 3
    for i in range(5):
        await engine.agents.post_event(a, {"n": i})
    assert [e.data["n"] for e in await engine.agents.list_events("a")] == [2, 3, 4]


async def test_accounts_sessions_and_first_admin(engine: Services) -> None:
    password = await engine.accounts.ensure_admin()
    assert password and await engine.accounts.ensure_admin() is None
    token = await engine.accounts.login("admin", password)
    assert (await engine.accounts.resolve_token(token)).role is Role.ADMIN
    await engine.accounts.logout(token)
    with pytest.raises(errors.Unauthorized):
        await engine.accounts.resolve_token(token)
    with pytest.raises(errors.Unauthorized):
        await engine.accounts.authenticate("admin", "wrong")
    with pytest.raises(errors.Conflict):
        await engine.accounts.add("admin", Role.AGENT, "x")


async def test_a_revoked_agent_login_stops_working_within_the_recheck_bound(
    engine: Services,
) -> None:
    """The server remembers verified logins; the CLI (another process) or another replica
    may remove the account or change its secret without this server hearing of it."""
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    elsewhere = AccountService(engine.store, engine.clock, hasher=cheap)
    await engine.accounts.add("a", Role.AGENT, "secret")
    await engine.accounts.add("b", Role.AGENT, "secret")
    for name in ("a", "b"):
        assert (await engine.accounts.authenticate(name, "secret")).name == name
    await elsewhere.remove("a")
    await engine.store.set_secret_hash(
        (await engine.accounts.authenticate("b", "secret")).account_id or 0,
        cheap.hash("new secret"),
    )
    clock(engine).t += VERIFIED_RECHECK_SECONDS / 2
    assert (await engine.accounts.authenticate("a", "secret")).name == "a"  # within the bound
    clock(engine).t += VERIFIED_RECHECK_SECONDS / 2
    for name in ("a", "b"):
        with pytest.raises(errors.Unauthorized):
            await engine.accounts.authenticate(name, "secret")
    assert (await engine.accounts.authenticate("b", "new secret")).name == "b"


async def test_a_remembered_login_is_rechecked_without_argon2(engine: Services) -> None:
    """Past the bound, an unchanged account costs one read, not another verification."""
    hasher = CountingHasher(time_cost=1, memory_cost=64, parallelism=1)
    accounts = AccountService(engine.store, engine.clock, hasher=hasher)
    await accounts.add("a", Role.AGENT, "secret")
    for _ in range(3):
        assert (await accounts.authenticate("a", "secret")).name == "a"
        clock(engine).t += VERIFIED_RECHECK_SECONDS
    assert hasher.verified == 1
    with pytest.raises(errors.Unauthorized):
        await accounts.authenticate("a", "wrong")
    assert hasher.verified == 2


class CountingHasher(argon2.PasswordHasher):
    verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified += 1
        return super().verify(hash, password)


async def test_registration_follows_the_policy(engine: Services) -> None:
    with pytest.raises(errors.Forbidden, match="disabled"):
        await engine.accounts.register_agent("new", "pw")
    await engine.accounts.set_registration_policy(RegistrationPolicy.APPROVAL)
    await engine.accounts.register_agent("new", "pw")
    pending = await engine.agents.get("new")
    assert not pending.enabled
    await engine.tasks.submit([NewTask(type="t")])
    assert await engine.tasks.claim(pending) is None


async def test_stop_ends_long_polls_at_once(engine: Services) -> None:
    a = await agent_named(engine, "a")
    (task,) = await engine.tasks.submit(
        [NewTask(type="other", target_kind=TargetKind.AGENT, target="a")]
    )
    a = await engine.agents.hello(a, task_types=["t"])
    polls = [
        asyncio.create_task(engine.tasks.claim_wait(a, timeout=60)),
        asyncio.create_task(engine.tasks.wait(task.id, timeout=60)),
    ]
    await asyncio.sleep(0)
    engine.tasks.stop()
    claimed, waited = await asyncio.wait_for(asyncio.gather(*polls), 5)
    assert claimed is None and waited.status is TaskStatus.QUEUED


def count_batches(monkeypatch: pytest.MonkeyPatch, engine: Services, method: str) -> list[int]:
    """The size of each call to one of the store's batch methods (`claim_tasks`,
    `finish_tasks`): one call is one transaction."""
    batches: list[int] = []
    real = getattr(engine.store, method)

    async def counted(items, now):  # type: ignore[no-untyped-def]
        batches.append(len(items))
        return await real(items, now)

    monkeypatch.setattr(engine.store, method, counted)
    return batches


async def test_claims_asked_together_share_one_transaction(
    engine: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = [await agent_named(engine, f"b{n}") for n in range(5)]
    queued = await engine.tasks.submit([NewTask(type="t") for _ in range(4)])
    batches = count_batches(monkeypatch, engine, "claim_tasks")
    got = await asyncio.gather(*(engine.tasks.claim(a) for a in agents))
    assert batches == [5]  # one store call, one transaction, for the five claims
    assert sorted(t.id for t in got if t) == [t.id for t in queued]
    assert got[4] is None  # the fifth found the queue empty: in order, nothing lost
    # A claim asked for on its own goes alone.
    await engine.tasks.submit([NewTask(type="t")])
    assert await engine.tasks.claim(agents[4]) is not None
    assert batches == [5, 1]


async def test_results_reported_together_share_one_transaction(
    engine: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = await agent_named(engine, "r1")
    await engine.tasks.submit([NewTask(type="t") for _ in range(3)])
    first, second, third = await engine.tasks.claim_many(agent, 3)
    batches = count_batches(monkeypatch, engine, "finish_tasks")
    got = await asyncio.gather(
        engine.tasks.complete(agent, first.id, first.attempt, "one"),
        engine.tasks.complete(agent, second.id, second.attempt + 1, "stale"),
        engine.tasks.confirm_cancel(agent, third.id, third.attempt),
        return_exceptions=True,
    )
    assert batches == [3]  # one store call, one transaction, for the three reports
    done, stale, cancelled = got
    assert isinstance(done, Task) and (done.status, done.result) == (TaskStatus.COMPLETED, "one")
    assert isinstance(stale, errors.Conflict)  # refused alone: the others are recorded
    assert isinstance(cancelled, Task) and cancelled.status is TaskStatus.CANCELLED


async def test_a_failed_batch_fails_each_claim_in_it(
    engine: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = [await agent_named(engine, f"c{n}") for n in range(3)]

    async def busy(claims, now):  # type: ignore[no-untyped-def]
        raise errors.Busy()

    monkeypatch.setattr(engine.store, "claim_tasks", busy)
    got = await asyncio.gather(*(engine.tasks.claim(a) for a in agents), return_exceptions=True)
    assert [type(g) for g in got] == [errors.Busy] * 3
    monkeypatch.undo()
    assert await engine.tasks.claim(agents[0]) is None  # the next batch runs as usual


async def _members(found: Services, *names: str) -> dict[str, Agent]:
    agents = {}
    for name in names:
        await agent_named(found, name)
        agents[name] = await found.agents.set_groups(name, ["all"])
    return agents


async def test_a_broadcast_leases_their_task_to_members_on_standby(engine: Services) -> None:
    agents = await _members(engine, "a", "b", "c")
    agents["c"] = await engine.agents.hello(agents["c"], task_types=["other"])
    handed: list[Task] = []
    engine.tasks.standby(agents["a"], lambda t: handed.append(t) is None)
    engine.tasks.standby(agents["c"], lambda t: handed.append(t) is None)
    created = {t.target: t for t in await engine.tasks.broadcast("all", NewTask(type="t"))}
    a_task = created["a"]
    assert [t.id for t in handed] == [a_task.id]
    assert a_task.status is TaskStatus.ACTIVE and a_task.attempt == 1
    assert a_task.lease_owner == agents["a"].id
    assert a_task.lease_expires == clock(engine).t + 30
    assert (await engine.tasks.get(a_task.id)).status is TaskStatus.ACTIVE
    # b was not waiting, c does not take the type: theirs are queued as before.
    assert created["b"].status is TaskStatus.QUEUED and created["c"].status is TaskStatus.QUEUED
    # The hand-over ended a's standby: the next broadcast queues its task.
    assert not engine.tasks.on_standby("a") and engine.tasks.on_standby("c")
    again = {t.target: t for t in await engine.tasks.broadcast("all", NewTask(type="t"))}
    assert again["a"].status is TaskStatus.QUEUED and len(handed) == 1
    # The leased task is the agent's current attempt, reported as any claimed one.
    done = await engine.tasks.complete(agents["a"], a_task.id, 1, {"ok": True})
    assert done.status is TaskStatus.COMPLETED


async def test_a_cancelled_standby_or_a_job_task_is_queued(engine: Services) -> None:
    agents = await _members(engine, "a")
    stand_down = engine.tasks.standby(agents["a"], lambda t: True)
    stand_down()
    (task,) = await engine.tasks.broadcast("all", NewTask(type="t"))
    assert task.status is TaskStatus.QUEUED
    engine.tasks.standby(agents["a"], lambda t: True)
    job, _ = await engine.jobs.submit(NewJob(name="j", type="j"))
    (in_job,) = await engine.tasks.broadcast("all", NewTask(type="t", job_id=job.id))
    assert in_job.status is TaskStatus.QUEUED  # a claim checks the job's blacklist


async def test_a_hand_over_refused_gives_the_task_back_to_the_queue(engine: Services) -> None:
    agents = await _members(engine, "a")
    engine.tasks.standby(agents["a"], lambda t: False)  # its connection closed meanwhile
    (task,) = await engine.tasks.broadcast("all", NewTask(type="t", max_attempts=2))
    assert task.status is TaskStatus.QUEUED  # the answer says where it is now
    assert (await engine.tasks.get(task.id)).status is TaskStatus.QUEUED
    again = await engine.tasks.claim(agents["a"])  # at once, not when the lease runs out
    assert again is not None and again.id == task.id and again.attempt == 2


async def test_a_submit_hands_each_task_to_an_agent_on_standby_that_may_take_it(
    engine: Services,
) -> None:
    gpu = await engine.agents.set_groups((await agent_named(engine, "gpu")).name, ["gpus"])
    await agent_named(engine, "tagged")
    tagged = await engine.agents.update("tagged", tags=["linux", "x86"])
    picky = await engine.agents.hello(await agent_named(engine, "picky"), task_types=["other"])
    handed: dict[str, list[Task]] = {"gpu": [], "tagged": [], "picky": []}
    for agent in (picky, gpu, tagged):  # picky waits longest
        engine.tasks.standby(agent, lambda t, n=agent.name: handed[n].append(t) is None)
    created = await engine.tasks.submit(
        [
            NewTask(type="t", target_kind=TargetKind.TAGS, target="linux,arm"),
            NewTask(type="t", target_kind=TargetKind.TAGS, target="x86,linux"),
            NewTask(type="t", target_kind=TargetKind.GROUP, target="gpus"),
            NewTask(type="t"),  # any agent: every waiter that takes "t" is taken already
        ]
    )
    assert [t.status for t in created] == [
        TaskStatus.QUEUED,  # nobody on standby has both tags
        TaskStatus.ACTIVE,
        TaskStatus.ACTIVE,
        TaskStatus.QUEUED,  # picky does not take "t"
    ]
    assert [t.id for t in handed["tagged"]] == [created[1].id]
    assert [t.id for t in handed["gpu"]] == [created[2].id]
    assert handed["picky"] == [] and engine.tasks.on_standby("picky")
    assert created[1].lease_owner == tagged.id and created[2].lease_owner == gpu.id


async def test_a_submit_hands_over_in_claim_order_to_the_longest_waiting(
    engine: Services,
) -> None:
    first, second = await agent_named(engine, "first"), await agent_named(engine, "second")
    handed: dict[str, list[Task]] = {"first": [], "second": []}
    for agent in (first, second):
        engine.tasks.standby(agent, lambda t, n=agent.name: handed[n].append(t) is None)
    low, high, later = await engine.tasks.submit(
        [NewTask(type="t"), NewTask(type="t", priority=5), NewTask(type="t")]
    )
    # As two claims would have gone: the highest priority, then the oldest of the rest.
    assert [t.id for t in handed["first"]] == [high.id]
    assert [t.id for t in handed["second"]] == [low.id]
    assert later.status is TaskStatus.QUEUED


def test_a_submit_looks_at_a_bounded_number_of_waiters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standby_module, "SCAN_BUDGET", 2)
    standby = Standby()
    for n, types in enumerate([("other",), ("other",), ()]):
        standby.register(Waiter(Agent(id=n, name=f"w{n}", task_types=types), 30.0, bool))
    # w2 could take it, but it is the third waiter looked at: the task is queued instead.
    assert standby.take([NewTask(type="t")]) == {}
    assert standby.take([NewTask(type="t", target_kind=TargetKind.AGENT, target="w2")]) != {}


def test_ending_a_standby_says_whether_a_broadcast_took_it() -> None:
    standby = Standby()
    agent = Agent(id=1, name="a")
    stand_down = standby.register(Waiter(agent, 30.0, lambda t: True))
    assert stand_down() and "a" not in standby  # nobody took it: claim as usual
    stand_down = standby.register(Waiter(agent, 30.0, lambda t: True))
    taken = standby.take([NewTask(type="t", target_kind=TargetKind.AGENT, target="a")])
    assert list(taken) == [0] and "a" not in standby
    assert not stand_down()  # its task is on the way: wait for the hand-over
    assert standby.take([NewTask(type="t", target_kind=TargetKind.AGENT, target="a")]) == {}


async def test_a_failed_broadcast_tells_the_members_it_took_to_claim_again(
    engine: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = await _members(engine, "a", "b")
    handed: list[Task | None] = []
    stand_down = engine.tasks.standby(agents["a"], lambda t: handed.append(t) is None)

    async def busy(*args: object) -> None:
        raise errors.Busy()

    monkeypatch.setattr(engine.store, "add_tasks", busy)
    with pytest.raises(errors.Busy):
        await engine.tasks.broadcast("all", NewTask(type="t"))
    assert handed == [None]  # nothing comes: the transport claims again at once
    assert not stand_down()  # the broadcast had taken the standby
