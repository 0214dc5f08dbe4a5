"""Hot statements run on the drivers directly, past SQLAlchemy's execution.

For the statements every task runs through (its insert, lease and outcome, the claim's
choice), SQLAlchemy's execution (building parameters and an execution context, wrapping
each row) cost as much as the database's own work. These classes compile a statement
once and send it to sqlite3 or asyncpg themselves, with the columns' own type
processors, so the values written and read are exactly SQLAlchemy's. `Conn.rows` and
`Conn.insert_many` (store/base.py) run them inside the store's transactions.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Select, Table, exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeEngine

#: A statement `Conn.rows` runs: built once (a module constant), returning rows.
Hot = UpdateBase | Select[Any]


class Prepared:
    """A statement every task runs through, run on SQLite's driver directly.

    SQLAlchemy's execution of a statement (building its parameters and execution context,
    wrapping each row) costs more than SQLite's own work for these short statements: about
    half of a task's lease and of its outcome (docs/benchmarks.md). This compiles the
    statement once and does the rest with the columns' own type processors, so the values
    are exactly those SQLAlchemy would send and return. Only for statements built once
    (module constants); `Conn.rows` runs those with expanding (IN-list) parameters,
    rendered per call, through SQLAlchemy.
    """

    def __init__(self, statement: Hot) -> None:
        self._compiled = compiled = statement.compile(dialect=SQLITE)
        self.sql = str(compiled)
        self._keys = tuple(compiled.positiontup or ())
        bind = {k: _processor(compiled.binds[k].type) for k in set(self._keys)}
        self._bind = [(i, f) for i, k in enumerate(self._keys) if (f := bind[k]) is not None]
        columns = statement.exported_columns  # what RETURNING names
        self._names = tuple(str(c.key) for c in columns)
        self._result = [
            (i, f)
            for i, c in enumerate(columns)
            if (f := c.type.dialect_impl(SQLITE).result_processor(SQLITE, None)) is not None
        ]

    def rows(self, driver: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        full = self._compiled.construct_params(params)  # adds the statement's own literals
        values = [full[k] for k in self._keys]
        for i, process in self._bind:
            values[i] = process(values[i])
        found = []
        for raw in driver.execute(self.sql, values).fetchall():
            row = list(raw)
            for i, process in self._result:
                row[i] = process(row[i])
            found.append(dict(zip(self._names, row, strict=True)))
        return found


class InsertMany:
    """Rows inserted into a table by multi-row VALUES statements on SQLite's driver, and
    returned whole, in the order given.

    SQLAlchemy inserts such rows on SQLite one statement per row, because SQLite does
    not promise the order of the rows RETURNING gives: about 50 us a row, 25 ms for a
    batch of 500 submitted tasks, during which the server serves nobody else. Here a
    statement inserts up to `CHUNK` rows, and the rows come back sorted by id: under the
    write lock each new row's id is one more than the largest (no AUTOINCREMENT gaps
    to skip, and ids nowhere near their limit), and SQLite inserts VALUES in order, so
    ascending ids are the order given. Values go through the columns' own processors, as
    in `Prepared`.
    """

    CHUNK = 500  #: rows per statement: 500 x 18 columns stays far below SQLite's 32,766

    def __init__(self, table: Table, keys: Sequence[str]) -> None:
        quote = SQLITE.identifier_preparer.quote
        self._keys = tuple(keys)
        self._bind = [
            (i, f) for i, k in enumerate(self._keys) if (f := _processor(table.c[k].type))
        ]
        columns = list(table.columns)
        self._names = tuple(str(c.key) for c in columns)
        self._id = self._names.index("id")
        self._result = [
            (i, f)
            for i, c in enumerate(columns)
            if (f := c.type.dialect_impl(SQLITE).result_processor(SQLITE, None)) is not None
        ]
        self._head = f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, keys))}) VALUES "
        self._values = "(" + ", ".join("?" * len(self._keys)) + ")"
        self._tail = " RETURNING " + ", ".join(quote(c.name) for c in columns)

    def rows(self, driver: Any, params: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(params), self.CHUNK):
            chunk = params[start : start + self.CHUNK]
            values: list[Any] = []
            for row in chunk:
                one = [row[k] for k in self._keys]
                for i, process in self._bind:
                    one[i] = process(one[i])
                values += one
            sql = self._head + ",".join([self._values] * len(chunk)) + self._tail
            try:
                fetched = driver.execute(sql, values).fetchall()
            except sqlite3.Error as error:  # as `Conn.rows` raises them
                raise exc.DBAPIError.instance(sql, values, error, sqlite3.Error) from error
            for raw in sorted(fetched, key=lambda r: r[self._id]):
                out = list(raw)
                for i, process in self._result:
                    out[i] = process(out[i])
                found.append(dict(zip(self._names, out, strict=True)))
        return found


#: The dialect `open_engine` gives SQLite engines (pysqlite with its defaults).
SQLITE = sqlite.dialect()
prepared_for = functools.cache(Prepared)


def _processor(kind: TypeEngine[Any], dialect: Dialect = SQLITE) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a parameter of this type for the dialect (its own
    implementation of the type: SQLite's JSON, for one, differs from the generic)."""
    return kind.dialect_impl(dialect).bind_processor(dialect)


class PgPrepared:
    """`Prepared` on PostgreSQL: a hot statement run on the asyncpg connection directly.

    SQLAlchemy's execution costs about as much CPU as the round trip to a local
    PostgreSQL (building the execution context, the adapter's cursor, wrapping rows).
    This compiles the statement once for the engine's dialect and keeps its positional
    parameters and that dialect's bind and result processors, so the values sent and
    read are exactly SQLAlchemy's: JSON is serialized by the dialect's bind processor
    and decoded by the codec the dialect sets on every connection. The result
    processors depend on the type PostgreSQL reports for each column (the dialect's
    Float, for one, converts only a NUMERIC), so they are taken from the statement's
    first preparation. Only for statements built once, with no expanding (IN-list)
    parameters (as `Prepared`).
    """

    def __init__(self, statement: Hot, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled = compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._keys = tuple(compiled.positiontup or ())
        bind = {k: _processor(compiled.binds[k].type, dialect) for k in set(self._keys)}
        self._bind = [(i, f) for i, k in enumerate(self._keys) if (f := bind[k]) is not None]
        self._columns = tuple(statement.exported_columns)  # what RETURNING names
        self._names = tuple(str(c.key) for c in self._columns)
        self._result: list[tuple[int, Callable[[Any], Any]]] | None = None

    def values(self, params: dict[str, Any]) -> list[Any]:
        """The statement's positional parameters, as SQLAlchemy would send them."""
        full = self._compiled.construct_params(params)  # adds the statement's own literals
        values = [full[k] for k in self._keys]
        for i, process in self._bind:
            values[i] = process(values[i])
        return values

    async def rows(self, driver: Any, values: list[Any]) -> list[dict[str, Any]]:
        if self._result is None:  # once per process: the statement's column types
            prepared = await driver.prepare(self.sql)
            types = [attribute.type.oid for attribute in prepared.get_attributes()]
            self._result = [
                (i, f)
                for i, (c, oid) in enumerate(zip(self._columns, types, strict=True))
                if (f := c.type.dialect_impl(self._dialect).result_processor(self._dialect, oid))
                is not None
            ]
            records = await prepared.fetch(*values)
        else:
            records = await driver.fetch(self.sql, *values)
        if not self._result:
            return [dict(zip(self._names, record, strict=True)) for record in records]
        found = []
        for record in records:
            row = list(record)
            for i, process in self._result:
                row[i] = process(row[i])
            found.append(dict(zip(self._names, row, strict=True)))
        return found


#: One per statement and engine (each engine has a dialect of its own).
pg_prepared = functools.lru_cache(maxsize=256)(PgPrepared)


@functools.cache
def expanding(statement: Hot) -> bool:
    """Whether the statement has an expanding (IN-list) parameter, which SQLAlchemy
    renders anew for each call's list: no statement compiled once can run it."""
    return any(bind.expanding for bind in statement.compile(dialect=SQLITE).binds.values())
