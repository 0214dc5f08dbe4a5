"""The store's registration tokens, enrollments, commands, runs and host variables, on
SQLite and PostgreSQL (`store` is parametrized). Times are explicit `now` values."""

from __future__ import annotations

import pytest

from taskfleet.core import errors
from taskfleet.core.models import (
    Agent,
    NewCommand,
    NewCommandGroup,
    NewTask,
    TargetKind,
    TaskStatus,
)
from taskfleet.store.sql import SqlStore

NOW = 1_700_000_000.0
LEASE_UNTIL = NOW + 60


async def host(store: SqlStore, name: str, *groups: str) -> Agent:
    agent = await store.add_agent(name, None, NOW)
    return await store.set_agent_groups(agent.id, list(groups), NOW) if groups else agent


def command(group_id: int, name: str, order: int = 0, **fields: object) -> NewCommand:
    return NewCommand(group_id=group_id, name=name, source="print(1)", order=order, **fields)  # type: ignore[arg-type]


def run_task(agent: Agent) -> NewTask:
    return NewTask(type="command", target_kind=TargetKind.AGENT, target=agent.name)


# -- registration tokens and enrollments ---------------------------------------------------


async def test_registration_tokens(store: SqlStore) -> None:
    first = await store.add_registration_token("lab", "a" * 64, None, NOW)
    second = await store.add_registration_token("", "b" * 64, NOW + 10, NOW)
    assert (first.name, first.uses, first.expires_at) == ("lab", 0, None)
    assert [t.id for t in await store.list_registration_tokens()] == [first.id, second.id]
    assert await store.registration_token(token_hash="b" * 64) == second
    assert await store.registration_token(token_id=first.id) == first
    assert await store.registration_token(token_hash="c" * 64) is None

    await store.count_registration_token_use(first.id, NOW + 1)
    used = await store.registration_token(token_id=first.id)
    assert used is not None and (used.uses, used.last_used_at) == (1, NOW + 1)

    revoked = await store.revoke_registration_token(first.id, NOW + 2)
    again = await store.revoke_registration_token(first.id, NOW + 3)
    assert revoked.revoked_at == again.revoked_at == NOW + 2
    assert not revoked.usable(NOW + 2) and second.usable(NOW + 9) and not second.usable(NOW + 10)
    with pytest.raises(errors.NotFound):
        await store.revoke_registration_token(999, NOW)
    with pytest.raises(errors.Conflict):
        await store.add_registration_token("dup", "a" * 64, None, NOW)


async def test_an_enrollment_is_a_disabled_agent_until_completed(store: SqlStore) -> None:
    token = await store.add_registration_token("t", "a" * 64, None, NOW)
    enrollment = await store.add_enrollment(
        "6c0c6e57-0000-4000-8000-000000000001", "PEM", token.id, NOW
    )
    agent = await store.get_agent_by_id(enrollment.agent_id)
    assert agent is not None
    assert (agent.name, agent.enabled, agent.verified, agent.public_key, agent.account_id) == (
        f"host-{enrollment.id:06d}",
        False,
        False,
        "PEM",
        None,
    )
    assert await store.enrollment(uuid=enrollment.uuid) == enrollment
    assert await store.enrollment(agent_id=agent.id) == enrollment

    done = await store.complete_enrollment(enrollment.id, "!", "all-hosts", "f" * 64, NOW + 9, NOW)
    assert (done.enabled, done.verified, done.groups) == (True, True, ("all-hosts",))
    account = await store.session_account("f" * 64, NOW + 1)
    assert account is not None and account.name == agent.name and account.id == done.account_id
    assert await store.session_account("f" * 64, NOW + 10) is None
    verified = await store.enrollment(agent_id=agent.id)
    assert verified is not None and verified.verified_at == NOW
    with pytest.raises(errors.Conflict):
        await store.complete_enrollment(enrollment.id, "!", "", "e" * 64, NOW + 9, NOW)

    await store.revoke_registration_token(token.id, NOW)
    await store.delete_agent(agent.id)
    assert await store.enrollment(uuid=enrollment.uuid) is None


# -- command groups and commands -------------------------------------------------------------


async def test_command_groups(store: SqlStore) -> None:
    late = await store.add_command_group(NewCommandGroup(name="late", order=5), NOW)
    early = await store.add_command_group(
        NewCommandGroup(name="early", order=1, host_groups=("linux", "all")), NOW
    )
    assert early.host_groups == ("all", "linux")
    assert {g.name for g in await store.list_groups()} == {"all", "linux"}
    assert [g.id for g in await store.list_command_groups()] == [early.id, late.id]
    with pytest.raises(errors.Conflict):
        await store.add_command_group(NewCommandGroup(name="late"), NOW)

    changed = await store.update_command_group(
        late.id, NewCommandGroup(name="later", order=0, active=False, host_groups=("all",)), NOW + 1
    )
    assert (changed.name, changed.order, changed.active, changed.host_groups) == (
        "later",
        0,
        False,
        ("all",),
    )
    assert changed.updated_at == NOW + 1 and changed.created_at == NOW
    with pytest.raises(errors.Conflict):
        await store.update_command_group(late.id, NewCommandGroup(name="early"), NOW)
    with pytest.raises(errors.NotFound):
        await store.update_command_group(999, NewCommandGroup(name="x"), NOW)

    kept = await store.add_command(command(early.id, "kept"), NOW)
    await store.add_command(command(late.id, "gone"), NOW)
    assert await store.delete_command_group(late.id)
    assert not await store.delete_command_group(late.id)
    assert [c.name for c in await store.list_commands(None)] == ["kept"]
    assert await store.get_command_group(late.id) is None
    assert await store.get_command(kept.id) == kept


async def test_commands(store: SqlStore) -> None:
    group = await store.add_command_group(NewCommandGroup(name="g"), NOW)
    other = await store.add_command_group(NewCommandGroup(name="first", order=-1), NOW)
    second = await store.add_command(command(group.id, "second", 2), NOW)
    new = command(
        group.id,
        "first",
        1,
        settings={"k": "v"},
        variables=("a",),
        result_variables=("b", "c"),
        timeout_seconds=5,
    )
    first = await store.add_command(new, NOW)
    before = await store.add_command(command(other.id, "other"), NOW)
    assert (first.settings, first.variables, first.result_variables, first.timeout_seconds) == (
        {"k": "v"},
        ("a",),
        ("b", "c"),
        5,
    )
    assert [c.id for c in await store.list_commands(None)] == [before.id, first.id, second.id]
    assert [c.id for c in await store.list_commands(group.id)] == [first.id, second.id]

    moved = await store.update_command(second.id, command(other.id, "moved", 9), NOW + 1)
    assert (moved.group_id, moved.name, moved.order, moved.updated_at) == (
        other.id,
        "moved",
        9,
        NOW + 1,
    )
    with pytest.raises(errors.NotFound):
        await store.update_command(999, command(group.id, "x"), NOW)
    with pytest.raises(errors.NotFound):
        await store.add_command(command(999, "x"), NOW)
    assert await store.delete_command(moved.id) and not await store.delete_command(moved.id)


# -- what a host runs ------------------------------------------------------------------------


async def test_pending_commands_follow_groups_windows_and_runs(store: SqlStore) -> None:
    linux = await host(store, "linux-1", "linux", "all")
    windows = await host(store, "win-1", "windows")
    open_group = await store.add_command_group(
        NewCommandGroup(name="open", order=2, host_groups=("linux", "all")), NOW
    )
    windowed = await store.add_command_group(
        NewCommandGroup(
            name="window", order=1, starts_at=NOW - 1, ends_at=NOW + 1, host_groups=("all",)
        ),
        NOW,
    )
    inactive = await store.add_command_group(
        NewCommandGroup(name="off", active=False, host_groups=("linux",)), NOW
    )
    b = await store.add_command(command(open_group.id, "b", 2), NOW)
    a = await store.add_command(command(open_group.id, "a", 1), NOW)
    await store.add_command(command(open_group.id, "disabled", 0, active=False), NOW)
    w = await store.add_command(command(windowed.id, "w"), NOW)
    off = await store.add_command(command(inactive.id, "off"), NOW)

    expected = [(windowed.id, w.id), (open_group.id, a.id), (open_group.id, b.id)]
    assert await store.pending_commands(linux.id, NOW) == expected
    assert await store.pending_commands(linux.id, NOW + 1) == expected[1:]  # the window closed
    assert await store.pending_commands(windows.id, NOW) == []
    assert await store.command_for_agent(off.id, linux.id, NOW, available=False) is not None
    assert await store.command_for_agent(off.id, linux.id, NOW, available=True) is None
    assert await store.command_for_agent(a.id, windows.id, NOW, available=False) is None

    task = await store.start_command_run(a.id, linux.id, run_task(linux), NOW, LEASE_UNTIL)
    assert (task.status, task.attempt, task.lease_owner, task.lease_expires) == (
        TaskStatus.ACTIVE,
        1,
        linux.id,
        LEASE_UNTIL,
    )
    assert await store.pending_commands(linux.id, NOW) == expected  # not run yet
    again = await store.start_command_run(a.id, linux.id, run_task(linux), NOW + 5, LEASE_UNTIL + 5)
    assert (again.id, again.attempt, again.lease_expires) == (task.id, 1, LEASE_UNTIL + 5)

    done, _ = await store.finish_task(task.id, linux.id, 1, TaskStatus.COMPLETED, [], None, NOW)
    assert done.status is TaskStatus.COMPLETED
    assert await store.pending_commands(linux.id, NOW) == [expected[0], expected[2]]
    assert [t.id for t in await store.command_runs(a.id, 10)] == [task.id]
    rerun = await store.start_command_run(a.id, linux.id, run_task(linux), NOW, LEASE_UNTIL)
    assert rerun.id != task.id
    assert [t.id for t in await store.command_runs(a.id, 10)] == [rerun.id, task.id]


async def test_a_run_whose_lease_ran_out_is_leased_again(store: SqlStore) -> None:
    agent = await host(store, "h", "all")
    group = await store.add_command_group(NewCommandGroup(name="g", host_groups=("all",)), NOW)
    cmd = await store.add_command(command(group.id, "c"), NOW)
    task = await store.start_command_run(cmd.id, agent.id, run_task(agent), NOW, LEASE_UNTIL)
    (expired,) = await store.expire_leases(LEASE_UNTIL + 1)
    assert expired.status is TaskStatus.QUEUED and expired.id == task.id
    assert await store.pending_commands(agent.id, LEASE_UNTIL + 1) == [(group.id, cmd.id)]
    again = await store.start_command_run(cmd.id, agent.id, run_task(agent), NOW + 70, NOW + 130)
    assert (again.id, again.status, again.attempt, again.lease_owner) == (
        task.id,
        TaskStatus.ACTIVE,
        2,
        agent.id,
    )


async def test_host_variables(store: SqlStore) -> None:
    agent = await host(store, "h")
    other = await host(store, "o")
    assert await store.host_variables(agent.id) == {}
    await store.set_host_variables(agent.id, {"a": "1", "b": ""}, NOW)
    await store.set_host_variables(agent.id, {"a": "2"}, NOW)
    await store.set_host_variables(other.id, {"a": "x"}, NOW)
    assert await store.host_variables(agent.id) == {"a": "2", "b": ""}
    await store.delete_agent(agent.id)
    assert await store.host_variables(agent.id) == {}
    assert await store.host_variables(other.id) == {"a": "x"}
