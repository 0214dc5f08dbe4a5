"""The claim's queries: which queued task an agent takes next.

An agent may take tasks targeted at it, at one of its groups, at any agent, or at tags it
all has. Each kind is read by its own query straight off a partial index in the claim's
order (job priority desc, priority desc, id), so the first row that passes the filters is
the answer however deep the queue is; the best of those few rows wins. One query with an
OR across the kinds would have to sort every queued task instead.

Statements are built once and take the agent as bound parameters: building SQLAlchemy
constructs per claim cost more than running them. Only `status = 'queued'` is a literal,
because a database may use a partial index only when the query names its condition.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    Update,
    and_,
    bindparam,
    exists,
    func,
    literal,
    literal_column,
    select,
    update,
)

from taskfleet.core.models import Agent, TargetKind, TaskStatus
from taskfleet.store.base import Conn
from taskfleet.store.tables import job_blacklist, task_failures, task_parents, tasks

QUEUED: ColumnElement[bool] = tasks.c.status == literal_column(f"'{TaskStatus.QUEUED.value}'")
ORDER = (tasks.c.job_priority.desc(), tasks.c.priority.desc(), tasks.c.id)


def _runnable() -> ColumnElement[bool]:
    """Every parent has completed, the agent (`:agent_id`) has not failed the task, and it
    is not blacklisted for the task's job and type. In the WHERE clause, so a blocked task
    never hides the ones behind it in the queue."""
    parent = tasks.alias("parent")
    waiting = exists().where(
        task_parents.c.task_id == tasks.c.id,
        parent.c.id == task_parents.c.parent_id,
        parent.c.status != TaskStatus.COMPLETED.value,
    )
    failed_here = exists().where(
        task_failures.c.task_id == tasks.c.id, task_failures.c.agent_id == bindparam("agent_id")
    )
    banned = exists().where(
        job_blacklist.c.job_id == tasks.c.job_id,
        job_blacklist.c.task_type == tasks.c.type,
        job_blacklist.c.agent_id == bindparam("agent_id"),
    )
    return and_(~waiting, ~failed_here, ~banned)


RUNNABLE = _runnable()


def _tags_subset(count: int) -> ColumnElement[bool]:
    """Every tag in the task's comma-joined target is one of the agent's `count` tags
    (`:tag0`…, each given as ",tag,"): removing each from ",t1,t2," leaves ","."""
    rest: ColumnElement[str] = literal(",") + tasks.c.target + literal(",")
    for i in range(count):
        rest = func.replace(rest, bindparam(f"tag{i}"), ",")
    return rest == ","


@functools.cache
def best_of_kind(named: bool, tags: int, typed: bool, lock: bool) -> Select[Any]:
    """The best queued task of one kind of target (`:kind`) this agent may take: of one
    name (`:target`, for agent and group targets), of tags (`tags` of the agent's), or of
    any agent. `typed` limits it to the agent's `:types`; `lock` skips and locks rows
    (PostgreSQL's concurrent claimers each take a different one)."""
    kind = tasks.c.target_kind == bindparam("kind")
    if named:
        kind = and_(kind, tasks.c.target == bindparam("target"))
    elif tags:
        kind = and_(kind, _tags_subset(tags))
    stmt = select(tasks.c.id, tasks.c.job_priority, tasks.c.priority).where(QUEUED, kind, RUNNABLE)
    if typed:
        stmt = stmt.where(tasks.c.type.in_(bindparam("types", expanding=True)))
    stmt = stmt.order_by(*ORDER).limit(1)
    return stmt.with_for_update(skip_locked=True) if lock else stmt


async def best_queued(conn: Conn, agent: Agent, lock: bool = False) -> int | None:
    """The id of the queued task the agent should take next, or None."""
    typed = bool(agent.task_types)
    common: dict[str, Any] = {"agent_id": agent.id}
    if typed:
        common["types"] = list(agent.task_types)
    queries: list[tuple[Select[Any], dict[str, Any]]] = [
        (
            best_of_kind(True, 0, typed, lock),
            {**common, "kind": TargetKind.AGENT.value, "target": agent.name},
        ),
        (best_of_kind(False, 0, typed, lock), {**common, "kind": TargetKind.ANY.value}),
    ]
    for group in agent.groups:
        queries.append(
            (
                best_of_kind(True, 0, typed, lock),
                {**common, "kind": TargetKind.GROUP.value, "target": group},
            )
        )
    if agent.tags:
        tags = sorted(set(agent.tags))
        params = {f"tag{i}": f",{tag}," for i, tag in enumerate(tags)}
        queries.append(
            (
                best_of_kind(False, len(tags), typed, lock),
                {**common, **params, "kind": TargetKind.TAGS.value},
            )
        )
    found: list[Row[Any]] = []
    for stmt, params in queries:
        row = (await conn.execute(stmt, params)).first()
        if row is not None:
            found.append(row)
    if not found:
        return None
    best = min(found, key=lambda r: (-r.job_priority, -r.priority, r.id))
    return int(best.id)


#: Leases the chosen task, if it is still queued and still runnable by the agent.
TAKE: Update = (
    update(tasks)
    .where(tasks.c.id == bindparam("chosen"), QUEUED, RUNNABLE)
    .values(
        status=TaskStatus.ACTIVE.value,
        attempt=tasks.c.attempt + 1,
        lease_owner=bindparam("agent_id"),
        lease_expires=bindparam("expires"),
        claimed_at=bindparam("now"),
        updated_at=bindparam("now"),
        progress_percent=None,
        progress_eta=None,
        activity="",
        error=None,
        result=None,
    )
    .returning(tasks)
)
