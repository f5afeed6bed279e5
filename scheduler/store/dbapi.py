"""Statements the tick runs many times, written once as SQL text and run on the driver's cursor.

For the handful of rows a tick writes, building a SQLAlchemy statement's parameters and result
metadata costs more than SQLite takes to run it, so the hot path hands the DB-API cursor of the
transaction's own connection plain text and tuples. Everything else goes through SQLAlchemy Core
as usual, and so does the transaction: these run inside ``Database.write()``/``read()``, and a
driver error is raised as SQLAlchemy's ``DBAPIError``, as any statement's would be.

The text is written with ``?`` placeholders (SQLite's paramstyle) and turned into ``%s`` once for
PostgreSQL's driver; it must hold no other ``?`` or ``%``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

# A multi-row VALUES statement stays well under SQLite's 32,766 bound parameters.
_ROWS_PER_STATEMENT = 500


class Statement:
    """One SQL text, in the placeholder style of each driver we support."""

    def __init__(self, text: str) -> None:
        if "%" in text:
            raise ValueError("a hot statement must not contain '%'")
        self.qmark = text
        self.format = text.replace("?", "%s")

    def text(self, conn: Connection) -> str:
        return self.qmark if conn.dialect.paramstyle == "qmark" else self.format

    def rows(self, conn: Connection, params: Sequence[Any] = ()) -> list[Any]:
        """Run once with one parameter tuple; every row it returns, as driver tuples."""
        text = self.text(conn)
        with _cursor(conn, text, params) as cursor:
            cursor.execute(text, params)
            return list(cursor.fetchall())

    def run(self, conn: Connection, params: Sequence[Any] = ()) -> int:
        """Run once with one parameter tuple; how many rows it changed."""
        text = self.text(conn)
        with _cursor(conn, text, params) as cursor:
            cursor.execute(text, params)
            return int(cursor.rowcount)

    def run_many(self, conn: Connection, params: Sequence[Sequence[Any]]) -> None:
        """Run once per parameter tuple (the driver's ``executemany``); nothing for none."""
        if params:
            text = self.text(conn)
            with _cursor(conn, text, params) as cursor:
                cursor.executemany(text, params)


class ValuesStatement:
    """``<head> VALUES (?, …), (?, …) <tail>``: many rows in one statement, so a ``RETURNING``
    tail gives back every row (a driver's ``executemany`` returns none)."""

    def __init__(self, head: str, width: int, tail: str = "") -> None:
        self.head = head
        self.tail = tail
        self._one = "(" + ", ".join("?" * width) + ")"
        self._texts: dict[int, Statement] = {}

    def rows(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """Insert ``rows`` in statements of at most 500 rows; what the tail returns."""
        found: list[Any] = []
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            flat = [value for row in chunk for value in row]
            found += self._statement(len(chunk)).rows(conn, flat)
        return found

    def _statement(self, count: int) -> Statement:
        statement = self._texts.get(count)
        if statement is None:
            values = ", ".join([self._one] * count)
            statement = self._texts[count] = Statement(f"{self.head} VALUES {values} {self.tail}")
        return statement


@contextmanager
def _cursor(conn: Connection, text: str, params: Any) -> Iterator[Any]:
    """A cursor of the connection's open transaction; driver errors raised as DBAPIError."""
    cursor = conn.connection.cursor()
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        yield cursor
    except dbapi_error as exc:
        raise DBAPIError.instance(text, params, exc, dbapi_error) from exc
    finally:
        cursor.close()
