"""Statements the tick runs many times, written once as SQL text and run through the DB-API.

Building a SQLAlchemy statement's parameters costs more than SQLite takes to run it when a tick
writes a handful of rows, so the hot path hands the driver plain text and tuples
(``exec_driver_sql``). Everything else goes through SQLAlchemy Core as usual. The text is written
with ``?`` placeholders (SQLite's paramstyle) and turned into ``%s`` once for PostgreSQL's driver;
it must hold no other ``?`` or ``%``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, CursorResult

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

    def run(self, conn: Connection, params: tuple[Any, ...] = ()) -> CursorResult[Any]:
        """Run once with one parameter tuple."""
        return conn.exec_driver_sql(self.text(conn), params)

    def run_many(self, conn: Connection, params: Sequence[tuple[Any, ...]]) -> None:
        """Run once per parameter tuple (the driver's ``executemany``); nothing for none."""
        if params:
            conn.exec_driver_sql(self.text(conn), list(params))


class ValuesStatement:
    """``<head> VALUES (?, …), (?, …) <tail>``: many rows in one statement, so a ``RETURNING``
    tail gives back every row (a driver's ``executemany`` returns none)."""

    def __init__(self, head: str, width: int, tail: str = "") -> None:
        self.head = head
        self.width = width
        self.tail = tail
        self._one = "(" + ", ".join("?" * width) + ")"
        self._texts: dict[int, Statement] = {}

    def run(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        """Insert ``rows`` (each ``width`` values) in statements of at most 500 rows; yields
        what the tail returns, statement by statement."""
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            flat = tuple(value for row in chunk for value in row)
            yield from self._statement(len(chunk)).run(conn, flat)

    def _statement(self, count: int) -> Statement:
        statement = self._texts.get(count)
        if statement is None:
            values = ", ".join([self._one] * count)
            statement = self._texts[count] = Statement(f"{self.head} VALUES {values} {self.tail}")
        return statement
