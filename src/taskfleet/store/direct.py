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


#: (position, processor) pairs: what SQLAlchemy does to a parameter or a column's value.
Processors = list[tuple[int, Callable[[Any], Any]]]


def _processor(kind: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a parameter of this type for the dialect (its own
    implementation of the type: SQLite's JSON, for one, differs from the generic)."""
    return kind.dialect_impl(dialect).bind_processor(dialect)


def _result_processors(
    columns: Sequence[Any], dialect: Dialect, oids: Sequence[int | None] | None = None
) -> Processors:
    """What SQLAlchemy does to each returned column's value (`oids`: the types the
    database reported, which some of PostgreSQL's processors depend on)."""
    kinds = oids or [None] * len(columns)
    return [
        (i, f)
        for i, (column, oid) in enumerate(zip(columns, kinds, strict=True))
        if (f := column.type.dialect_impl(dialect).result_processor(dialect, oid)) is not None
    ]


def _processed(values: Sequence[Any], processors: Processors) -> list[Any]:
    out = list(values)
    for i, process in processors:
        out[i] = process(out[i])
    return out


def _mapped(names: Sequence[str], result: Processors, raws: Any) -> list[dict[str, Any]]:
    """The driver's rows as mappings by column name, with the columns' processors."""
    if not result:
        return [dict(zip(names, raw, strict=True)) for raw in raws]
    return [dict(zip(names, _processed(raw, result), strict=True)) for raw in raws]


class _Compiled:
    """A statement compiled once for a dialect, its positional parameters built as
    SQLAlchemy would send them. Only for statements built once (module constants), with
    no expanding (IN-list) parameters: `Conn.rows` runs those through SQLAlchemy."""

    def __init__(self, statement: Hot, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled = compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._keys = tuple(compiled.positiontup or ())
        bind = {k: _processor(compiled.binds[k].type, dialect) for k in set(self._keys)}
        self._bind = [(i, f) for i, k in enumerate(self._keys) if (f := bind[k]) is not None]
        self._columns = tuple(statement.exported_columns)  # what RETURNING names
        self._names = tuple(str(c.key) for c in self._columns)

    def values(self, params: dict[str, Any]) -> list[Any]:
        """The statement's positional parameters, as SQLAlchemy would send them."""
        full = self._compiled.construct_params(params)  # adds the statement's own literals
        return _processed([full[k] for k in self._keys], self._bind)


class Prepared(_Compiled):
    """A statement every task runs through, run on SQLite's driver directly.

    SQLAlchemy's execution of a statement (building its parameters and execution context,
    wrapping each row) costs more than SQLite's own work for these short statements: about
    half of a task's lease and of its outcome (docs/benchmarks.md). This compiles the
    statement once and does the rest with the columns' own type processors, so the values
    are exactly those SQLAlchemy would send and return.
    """

    def __init__(self, statement: Hot) -> None:
        super().__init__(statement, SQLITE)
        self._result = _result_processors(self._columns, SQLITE)

    def rows(self, driver: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        fetched = driver.execute(self.sql, self.values(params)).fetchall()
        return _mapped(self._names, self._result, fetched)


class PgPrepared(_Compiled):
    """`Prepared` on PostgreSQL: a hot statement run on the asyncpg connection directly.

    SQLAlchemy's execution costs about as much CPU as the round trip to a local
    PostgreSQL (building the execution context, the adapter's cursor, wrapping rows).
    This keeps the statement's positional parameters and the engine dialect's bind and
    result processors, so the values sent and read are exactly SQLAlchemy's: JSON is
    serialized by the dialect's bind processor and decoded by the codec the dialect sets
    on every connection. The result processors depend on the type PostgreSQL reports for
    each column (the dialect's Float, for one, converts only a NUMERIC), so they are
    taken from the statement's first preparation.
    """

    def __init__(self, statement: Hot, dialect: Dialect) -> None:
        super().__init__(statement, dialect)
        self._result: Processors | None = None

    async def rows(self, driver: Any, values: list[Any]) -> list[dict[str, Any]]:
        if self._result is None:  # once per process: the statement's column types
            prepared = await driver.prepare(self.sql)
            oids = [attribute.type.oid for attribute in prepared.get_attributes()]
            self._result = _result_processors(self._columns, self._dialect, oids)
            records = await prepared.fetch(*values)
        else:
            records = await driver.fetch(self.sql, *values)
        return _mapped(self._names, self._result, records)


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
        bind = [_processor(table.c[k].type, SQLITE) for k in self._keys]
        self._bind = [(i, f) for i, f in enumerate(bind) if f is not None]
        columns = list(table.columns)
        self._names = tuple(str(c.key) for c in columns)
        self._id = self._names.index("id")
        self._result = _result_processors(columns, SQLITE)
        self._head = f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, keys))}) VALUES "
        self._values = "(" + ", ".join("?" * len(self._keys)) + ")"
        self._tail = " RETURNING " + ", ".join(quote(c.name) for c in columns)

    def rows(self, driver: Any, params: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(params), self.CHUNK):
            chunk = params[start : start + self.CHUNK]
            values = [
                v for row in chunk for v in _processed([row[k] for k in self._keys], self._bind)
            ]
            sql = self._head + ",".join([self._values] * len(chunk)) + self._tail
            try:
                fetched = driver.execute(sql, values).fetchall()
            except sqlite3.Error as error:  # as `Conn.rows` raises them
                raise exc.DBAPIError.instance(sql, values, error, sqlite3.Error) from error
            found += _mapped(self._names, self._result, sorted(fetched, key=lambda r: r[self._id]))
        return found


#: The dialect `open_engine` gives SQLite engines (pysqlite with its defaults).
SQLITE = sqlite.dialect()
prepared_for = functools.cache(Prepared)
#: One per statement and engine (each engine has a dialect of its own).
pg_prepared = functools.lru_cache(maxsize=256)(PgPrepared)


@functools.cache
def expanding(statement: Hot) -> bool:
    """Whether the statement has an expanding (IN-list) parameter, which SQLAlchemy
    renders anew for each call's list: no statement compiled once can run it."""
    return any(bind.expanding for bind in statement.compile(dialect=SQLITE).binds.values())
