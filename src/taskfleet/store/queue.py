"""The claim's queries: which queued task an agent takes next.

An agent may take tasks targeted at it, at one of its groups, at any agent, or at tags it
all has. Each kind is read by its own arm of one statement, straight off a partial index
in the claim's order (job priority desc, priority desc, id), so the first row that passes
the filters is the arm's answer however deep the queue is; the best of those few rows
wins. One query with an OR across the kinds would have to sort every queued task instead.

Statements are built once and take the agent as bound parameters: building SQLAlchemy
constructs per claim cost more than running them. Only `status = 'queued'` is a literal,
because a database may use a partial index only when the query names its condition.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    Select,
    String,
    Update,
    and_,
    any_,
    bindparam,
    exists,
    func,
    literal,
    literal_column,
    select,
    true,
    union_all,
    update,
)

from taskfleet.core.models import Agent, TargetKind, TaskStatus
from taskfleet.store.base import Conn
from taskfleet.store.tables import job_blacklist, task_failures, task_parents, tasks

QUEUED: ColumnElement[bool] = tasks.c.status == literal_column(f"'{TaskStatus.QUEUED.value}'")
ORDER = (tasks.c.job_priority.desc(), tasks.c.priority.desc(), tasks.c.id)
COUNT = bindparam("count", type_=Integer)  #: how many tasks a claim takes


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


#: The agent's task types as one array parameter (PostgreSQL): the statement stays the
#: same for any number of types, so it is compiled and prepared once (`Conn.rows`), where
#: an expanding IN list is rendered anew for each call. PostgreSQL turns an IN list into
#: `= ANY(array)` itself, so the plan is the same.
TYPES_ARRAY = bindparam("types", type_=ARRAY(String))


def _arm(
    kind: TargetKind, condition: ColumnElement[bool], types: int, lock: bool, array: bool
) -> Select[Any]:
    """The best queued task of one kind of target: the first row of its index that passes.
    `lock` skips and locks rows (PostgreSQL's concurrent claimers each take another);
    `array` takes the types as an array (`TYPES_ARRAY`), else as `types` parameters
    (`:type0`…)."""
    stmt = select(tasks.c.id, tasks.c.job_priority, tasks.c.priority).where(
        QUEUED, tasks.c.target_kind == kind.value, condition, RUNNABLE
    )
    if types and array:
        stmt = stmt.where(tasks.c.type == any_(TYPES_ARRAY))
    elif types:
        stmt = stmt.where(tasks.c.type.in_([bindparam(f"type{i}") for i in range(types)]))
    stmt = stmt.order_by(*ORDER).limit(COUNT)
    return stmt.with_for_update(skip_locked=True) if lock else stmt


@functools.cache
def best_statement(
    groups: int, tags: int, types: int, lock: bool, array: bool = False
) -> Select[Any]:
    """The ids of the `:count` best queued tasks for an agent in `groups` groups with `tags`
    tags, in one statement: one arm per kind of target (`:agent_name`, any, `:group0`…,
    tags `:tag0`…), the best of their few rows. `types` (if any) limits it to the agent's
    task types: one array `:types` with `array` (PostgreSQL), else a parameter each,
    `:type0`… (SQLite): never one expanding list, which SQLAlchemy would render again at
    every execution and the driver could not be given directly (`Conn.rows`)."""
    arms = [
        _arm(TargetKind.AGENT, tasks.c.target == bindparam("agent_name"), types, lock, array),
        _arm(TargetKind.ANY, true(), types, lock, array),
        *(
            _arm(TargetKind.GROUP, tasks.c.target == bindparam(f"group{i}"), types, lock, array)
            for i in range(groups)
        ),
    ]
    if tags:
        arms.append(_arm(TargetKind.TAGS, _tags_subset(tags), types, lock, array))
    # Each arm is a subquery of its own, so that it keeps its ORDER BY, LIMIT and lock.
    subqueries = [arm.subquery(f"arm{i}") for i, arm in enumerate(arms)]
    best = union_all(*(select(q.c.id, q.c.job_priority, q.c.priority) for q in subqueries))
    rows = best.subquery("best")
    order = (rows.c.job_priority.desc(), rows.c.priority.desc(), rows.c.id)
    return select(rows.c.id).order_by(*order).limit(COUNT)


def _shape_and_params(agent: Agent) -> tuple[tuple[int, int, int], dict[str, Any]]:
    """The agent's shape (groups, tags, task types), which picks a statement, and the
    parameters that fill it in (the types both ways: `best_statement`)."""
    tags = sorted(set(agent.tags))
    params: dict[str, Any] = {"agent_id": agent.id, "agent_name": agent.name}
    params.update({f"group{i}": group for i, group in enumerate(agent.groups)})
    params.update({f"tag{i}": f",{tag}," for i, tag in enumerate(tags)})
    if agent.task_types:
        params["types"] = list(agent.task_types)
        params.update({f"type{i}": kind for i, kind in enumerate(agent.task_types)})
    return (len(agent.groups), len(tags), len(agent.task_types)), params


async def best_queued(conn: Conn, agent: Agent, count: int = 1) -> list[int]:
    """The ids of the `count` queued tasks the agent should take next, best first."""
    shape, params = _shape_and_params(agent)
    rows = await conn.rows(best_statement(*shape, False), {**params, "count": count})
    return [row["id"] for row in rows]


def take_best_for(
    agent: Agent, count: int, one: bool = False, array: bool = False
) -> tuple[Update, dict[str, Any]]:
    """`take_best` for this agent and its parameters (add the lease's to them)."""
    (groups, tags, types), params = _shape_and_params(agent)
    if array:  # one statement for any number of types
        types = min(types, 1)
    return take_best(groups, tags, types, one, array), {**params, "count": count}


@functools.cache
def take_best(groups: int, tags: int, types: int, one: bool = False, array: bool = False) -> Update:
    """The whole claim in one statement: leases the `:count` best queued tasks for an
    agent of this shape (several for its free slots), on PostgreSQL locking only the rows
    it looks at (`best_statement`); SQLite, which has no row locks, runs it under its
    write lock. The rows come back in no particular order. `one` (for SQLite, `:count`
    1) compares the id with a scalar subquery: with `IN`, SQLite's planner walks the
    queue by status instead of looking the id up. `array`: the types as one array
    parameter (PostgreSQL), so that the statement runs on the driver (`Conn.rows`)."""
    best = best_statement(groups, tags, types, True, array)
    if one:
        return TAKE.where(tasks.c.id == best.scalar_subquery())
    return TAKE.where(tasks.c.id.in_(best))


#: Leases tasks that are still queued. Whoever chose them checked that they are runnable
#: by the agent, in the same statement (`take_best`) or transaction (`TAKE_CHOSEN`):
#: checking again here would cost as much as choosing and could not see anything new.
TAKE: Update = (
    update(tasks)
    .where(QUEUED)
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
#: `TAKE` of a task chosen by `best_queued` in the same transaction (SQLite: with the
#: subquery inside, its planner walks the queue by status instead of looking ids up).
TAKE_CHOSEN = TAKE.where(tasks.c.id == bindparam("chosen"))
