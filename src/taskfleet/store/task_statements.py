"""The task statements the store runs most, built once with bound parameters.

Building SQLAlchemy constructs per call cost more than running them, so the statements
of a task's life (its insert, lease extension and outcome) are module constants here;
`store/tasks.py` runs them, most through `Conn.rows` on the driver directly.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    Float,
    Insert,
    Integer,
    String,
    Text,
    Update,
    and_,
    any_,
    bindparam,
    case,
    cast,
    column,
    func,
    insert,
    literal_column,
    select,
    update,
)

from taskfleet.core.models import JSONValue, NewTask, TaskStatus
from taskfleet.store.base import task_row
from taskfleet.store.direct import InsertMany
from taskfleet.store.queue import QUEUED
from taskfleet.store.tables import tasks

RUNNING = (TaskStatus.ACTIVE.value, TaskStatus.CANCEL_REQUESTED.value)
TERMINAL = (TaskStatus.COMPLETED.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value)

# The agent's hot path (heartbeats, results) runs statements built once with bound
# parameters: building SQLAlchemy constructs per call cost more than running them.
GET = select(tasks).where(tasks.c.id == bindparam("task_id"))


def _insert_all_statement() -> Insert:
    """`INSERT` of any number of tasks in one statement (PostgreSQL): each column of
    `task_row` one array parameter (`:all_<column>`), unnested in order. The ids come
    from the sequence in that order, so the returned rows sorted by id are in the
    order of the arrays (what SQLAlchemy's `sort_by_parameter_order` relies on too).
    Strings go as VARCHAR without a length: a cast to VARCHAR(n) would cut a value
    that is too long, where storing it in the column refuses it. JSON values go as
    their text (`JSON_KEYS`, serialized by the caller), cast back to JSON here: in an
    array of JSON a list value would be taken for one more dimension of the array."""
    keys = list(task_row(NewTask(type=""), 0))
    kinds = {
        k: String() if isinstance(tasks.c[k].type, String) or k in JSON_KEYS else tasks.c[k].type
        for k in keys
    }
    given = (
        func.unnest(*(bindparam(f"all_{k}", type_=ARRAY(kinds[k])) for k in keys))
        .table_valued(*(column(k, kinds[k]) for k in keys), with_ordinality="n")
        .render_derived()
    )
    values = [cast(given.c[k], JSON) if k in JSON_KEYS else given.c[k] for k in keys]
    rows = select(*values).order_by(given.c.n)
    return insert(tasks).from_select(keys, rows).returning(tasks)


#: The JSON columns of a new task, which `INSERT_ALL` takes as text.
JSON_KEYS = frozenset(k for k in task_row(NewTask(type=""), 0) if isinstance(tasks.c[k].type, JSON))


def json_text(value: JSONValue) -> str | None:
    return None if value is None else json.dumps(value)  # NULL: the columns' none_as_null


INSERT_ALL = _insert_all_statement()
#: A batch of tasks on SQLite: multi-row statements on the driver (store/direct.py).
INSERT_MANY = InsertMany(tasks, list(task_row(NewTask(type=""), 0)))
#: `INSERT` of one task, every column of `task_row` a parameter (`Conn.rows` runs it).
INSERT_ONE = (
    insert(tasks)
    .values({key: bindparam(key, type_=tasks.c[key].type) for key in task_row(NewTask(type=""), 0)})
    .returning(tasks)
)
#: Off the partial queue index: a scan in id order would walk every finished task first.
ANY_QUEUED = select(tasks.c.id).where(QUEUED).limit(1)
#: The attempt is the current one: only it may report.
CURRENT = and_(
    tasks.c.id == bindparam("task_id"),
    tasks.c.lease_owner == bindparam("agent_id"),
    tasks.c.attempt == bindparam("attempt_no"),
    tasks.c.status.in_([literal_column(f"'{status}'") for status in RUNNING]),
)
EXTEND = (
    update(tasks)
    .where(CURRENT)
    .values(lease_expires=bindparam("until"), updated_at=bindparam("now"))
    .returning(tasks)
)
EXTEND_WITH_PROGRESS = EXTEND.values(
    progress_percent=bindparam("percent", type_=Float),
    progress_eta=bindparam("eta", type_=Float),
    activity=bindparam("text", type_=String),
)


def _finish_statement(completed: bool) -> Update:
    values: dict[str, Any] = {
        "status": bindparam("new_status", type_=String),
        "result": bindparam("new_result", type_=tasks.c.result.type),
        "error": bindparam("new_error", type_=Text),
        "finished_at": bindparam("now"),
        "updated_at": bindparam("now"),
        "lease_expires": None,
    }
    if completed:
        values["progress_percent"] = 100.0
    return update(tasks).where(CURRENT).values(values).returning(tasks)


FINISH = {True: _finish_statement(True), False: _finish_statement(False)}


def _finish_all_statement() -> Update:
    """`FINISH` of a batch of outcomes in one statement (PostgreSQL): each outcome an
    element of the array parameters, the tasks of those that are current updated and
    returned. One round trip for the batch, where `FINISH` takes one per outcome."""
    given = (
        func.unnest(
            bindparam("task_ids", type_=ARRAY(tasks.c.id.type)),
            bindparam("agent_ids", type_=ARRAY(tasks.c.lease_owner.type)),
            bindparam("attempts", type_=ARRAY(Integer)),
            bindparam("statuses", type_=ARRAY(String)),
            bindparam("results", type_=ARRAY(tasks.c.result.type)),
            bindparam("errors", type_=ARRAY(Text)),
        )
        .table_valued(
            column("task_id", tasks.c.id.type),
            column("agent_id", tasks.c.lease_owner.type),
            column("attempt_no", Integer),
            column("new_status", String),
            column("new_result", tasks.c.result.type),
            column("new_error", Text),
            name="given",
        )
        .render_derived()
    )
    completed = given.c.new_status == literal_column(f"'{TaskStatus.COMPLETED.value}'")
    return (
        update(tasks)
        .where(
            # The ids again, as an array: PostgreSQL then looks the tasks up by primary
            # key, in id order, whatever it estimates of the running tasks and the array.
            tasks.c.id == any_(bindparam("task_ids", type_=ARRAY(tasks.c.id.type))),
            tasks.c.id == given.c.task_id,
            tasks.c.lease_owner == given.c.agent_id,
            tasks.c.attempt == given.c.attempt_no,
            tasks.c.status.in_([literal_column(f"'{status}'") for status in RUNNING]),
        )
        .values(
            status=given.c.new_status,
            result=given.c.new_result,
            error=given.c.new_error,
            finished_at=bindparam("now"),
            updated_at=bindparam("now"),
            lease_expires=None,
            progress_percent=case((completed, 100.0), else_=tasks.c.progress_percent),
        )
        .returning(tasks)
    )


FINISH_ALL = _finish_all_statement()
