"""The statements of the user store, one class per database: bulk writes in one transaction, reads by id in chunks.

ingest.apply decides what to write; this module only knows how to write it fast on each database:

- SQLite: ``BEGIN IMMEDIATE`` (the write lock first, so that ids handed out from ``max(id)`` stay ours), a larger
  page cache and in-memory temporary storage for the transaction; new rows (and upserts) as multi-row
  ``INSERT ... VALUES (...), (...)`` statements of up to 32,000 parameters, optionally run by a writer thread while
  the caller prepares the next batch (see ``_Writer``); updates and deletes with ``executemany``.
- PostgreSQL (psycopg 3): ids drawn from the tables' sequences in blocks, new rows sent with ``COPY`` (wide rows as
  text this module formats a batch at a time, see ``copy_text``), updates and deletes with ``executemany``
  (pipelined by psycopg).

Both work on a raw DB-API connection taken from the SQLAlchemy pool, so no ORM or Core overhead sits on the hot path.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from functools import lru_cache
from itertools import chain, repeat
from operator import add
from typing import Any, Literal

from sqlalchemy import Engine

# The plain user columns a file may set, in the order ingest.apply lays them out.
PLAIN_COLUMNS = (
    "username", "first_name", "last_name", "email", "status", "start_date", "end_date", "phone", "job_title",
)  # fmt: skip
USER_INSERT_COLUMNS = (
    "id", "client", "employee_id", *PLAIN_COLUMNS, "manager_id", "row_hash", "created_job_id", "created_at",
    "updated_at",
)  # fmt: skip
AUDIT_COLUMNS = ("user_id", "job_id", "field", "old_value", "new_value", "changed_at")
OUTCOME_COLUMNS = ("job_id", "seq", "line", "employee_id", "outcome", "reason")
DATE_COLUMNS = frozenset({"start_date", "end_date"})

CHUNK = 500  # ids per "IN (...)": far below every database's parameter limit
# Parameters per multi-row SQLite statement: under the 32,766 SQLite allows since 3.32 (older builds allow 999, and
# SqliteConnection asks the connection for its limit).
MAX_PARAMS = 32_000
LADDER_FLOOR = 32  # the smallest of the halving statement sizes a batch's last rows are sent in (see _pieces)
WRITER_DEPTH = 32  # statements queued for the SQLite writer thread: about two batches of ingest.apply
COPY_ROWS = 10_000  # rows formatted and sent to COPY at a time (a few MB of text)
# Measured: copy_text beats psycopg's write_row on users rows (17 columns, ~30% less time) but loses on 3 integers
# (memberships: write_row is about twice as fast).
COPY_TEXT_MIN_WIDTH = 8


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StoreConnection:
    """One transaction on one raw connection. Subclasses adapt values and pick the bulk statement."""

    placeholder = "?"
    writer_depth = WRITER_DEPTH  # writes queued for the writer thread at most

    def __init__(self, engine: Engine, *, background: bool = False) -> None:
        self._proxy = engine.raw_connection()
        self.raw: Any = self._proxy.driver_connection
        assert self.raw is not None
        self.cursor: Any = self.raw.cursor()
        self._next_ids: dict[str, Iterator[int]] = {}
        self.background = background
        self._writer: _Writer | None = None
        self._in_transaction = False

    # --- the writer thread ---------------------------------------------------------------------------------------

    def _write(self, statement: str, params: Any, mode: Mode) -> None:
        """Run a write now, or with ``background`` (inside a transaction) queue it for the writer thread."""
        if self._writer is None and self.background and self._in_transaction:
            writer = _Writer(self.raw, self.writer_depth)
            if writer.usable:
                self._writer = writer
            else:
                self.background = False
        if self._writer is not None:
            self._writer.put(statement, params, mode)
        else:
            run(self.cursor, statement, params, mode)

    def _drain(self) -> None:
        if self._writer is not None:
            self._writer.drain()

    def _stop_writer(self, *, cancel: bool) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop(cancel=cancel)

    # --- transaction -------------------------------------------------------------------------------------------

    def begin(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        self._drain()  # raises a failed write's error: the caller rolls back, nothing half is committed
        self._stop_writer(cancel=False)
        self.raw.commit()
        self._in_transaction = False

    def rollback(self) -> None:
        self._stop_writer(cancel=True)  # its error, if any, was raised already or is moot now
        self.raw.rollback()
        self._in_transaction = False

    def close(self) -> None:
        try:
            self._stop_writer(cancel=True)
            self.cursor.close()
        finally:
            self._proxy.close()

    # --- values --------------------------------------------------------------------------------------------------

    def time_param(self, value: datetime) -> Any:
        return value

    # --- statements ----------------------------------------------------------------------------------------------

    def sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        self._drain()  # a read sees every write queued before it
        self.cursor.execute(self.sql(statement), params)
        return self.cursor

    def fetchall(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(statement, params).fetchall())

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._write(self.sql(statement), rows, "many")

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        constants: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert new rows (ids already assigned); ``constants``: columns with the same value in every row."""
        if not rows:
            return
        if constants:
            columns, extra = (*columns, *constants), tuple(constants.values())
            rows = [(*row, *extra) for row in rows]
        self._insert(table, columns, rows)

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        marks = ", ".join("?" * len(columns))
        self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def upsert_pairs(self, table: str, columns: tuple[str, str, str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert or replace rows keyed by the first two columns (memberships, custom values)."""
        a, b, c = columns
        self.executemany(
            f"INSERT INTO {table} ({a}, {b}, {c}) VALUES (?, ?, ?) "
            f"ON CONFLICT ({a}, {b}) DO UPDATE SET {c} = excluded.{c}",
            rows,
        )

    def delete_pairs(self, table: str, columns: tuple[str, str], rows: Sequence[Sequence[Any]]) -> None:
        a, b = columns
        self.executemany(f"DELETE FROM {table} WHERE {a} = ? AND {b} = ?", rows)

    def new_ids(self, table: str, count: int) -> list[int]:
        """``count`` fresh primary keys for ``table``, unique for the life of the transaction."""
        raise NotImplementedError

    def refresh_statistics(self, tables: Sequence[str]) -> None:
        """After the commit of a large change: let the query planner see the tables' new sizes (PostgreSQL)."""

    def check_references(self, referenced: Callable[[], Mapping[str, Collection[int]]]) -> None:
        """Verify that the ids ``referenced()`` lists (table -> ids the written rows point to) exist, where the
        database did not check them row by row (SQLite never does here: see SqliteConnection.begin)."""

    def rows_by_ids(self, statement: str, ids: Sequence[int]) -> Iterable[Any]:
        """Run ``statement`` (containing ``{ids}``) over ``ids`` in chunks."""
        for part in chunks(ids):
            marks = ", ".join("?" * len(part))
            yield from self.fetchall(statement.format(ids=marks), part)


# execute(params) / executemany(rows) / execute(rows flattened) / COPY of rows (PostgreSQL)
Mode = Literal["one", "many", "flat", "copy"]


class _Writer:
    """A thread that runs the writes of one transaction, in order, on the caller's connection.

    Python's sqlite3 releases the GIL only inside ``sqlite3_step``: a multi-row ``INSERT`` is one step for thousands
    of rows, so the thread writes one batch while the caller prepares the next; psycopg releases it while PostgreSQL
    works through a COPY. The bounded queue keeps memory to a
    few batches, and the connection is used by one thread at a time: the caller touches it again only after
    ``drain`` (or ``stop``). The first error is kept: it is raised by every later ``put`` and ``drain`` (so a commit
    cannot follow it) until ``stop``; the writes queued after it are dropped.
    """

    def __init__(self, raw: Any, depth: int = WRITER_DEPTH) -> None:
        self.cursor = raw.cursor()
        self.queue: queue.Queue[tuple[str, Any, Mode] | None] = queue.Queue(depth)
        self.error: BaseException | None = None
        self.cancelled = False
        self.usable = False
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="store-sql-writer")
        self.thread.start()
        self._ready.wait()
        if not self.usable:  # the connection refuses other threads (check_same_thread): write inline instead
            self.thread.join()
            self.cursor.close()

    def _run(self) -> None:
        try:
            self.cursor.execute("SELECT 1")
            self.usable = True
        except sqlite3.ProgrammingError:
            return
        finally:
            self._ready.set()
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                if self.error is None and not self.cancelled:
                    run(self.cursor, *item)
            except BaseException as exc:  # kept for the caller's thread, which raises it
                self.error = exc
            finally:
                self.queue.task_done()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, statement: str, params: Any, mode: Mode) -> None:
        self.check()
        self.queue.put((statement, params, mode))

    def drain(self) -> None:
        """Wait until every queued write ran; raise the first error among them."""
        self.queue.join()
        self.check()

    def stop(self, *, cancel: bool) -> None:
        """End the thread (``cancel``: dropping the writes still queued) and close its cursor."""
        self.cancelled = cancel
        self.queue.put(None)
        self.thread.join()
        self.cursor.close()


def run(cursor: Any, statement: str, params: Any, mode: Mode) -> None:
    if mode == "copy":
        copy_rows(cursor, statement, params)
    elif mode == "flat":
        cursor.execute(statement, list(chain.from_iterable(params)))
    elif mode == "many":
        cursor.executemany(statement, params)
    else:
        cursor.execute(statement, params)


@lru_cache(maxsize=256)
def values_statement(head: str, width: int, count: int, tail: str = "") -> str:
    """``head`` followed by ``count`` rows of ``width`` placeholders (and ``tail``)."""
    row = f"({', '.join('?' * width)})"
    return f"{head} VALUES {', '.join(repeat(row, count))}{tail}"


def _pieces(total: int, full: int) -> Iterator[tuple[int, int]]:
    """(start, count) of the statements ``total`` rows are sent in, at most ``full`` rows each.

    Full statements first; the rest goes in halving sizes (full/2, full/4, ... down to LADDER_FLOOR rows), then one
    statement of what remains. sqlite3 caches compiled statements by their text, and compiling one of 32,000
    parameters takes about as long as running three: the same few texts come back batch after batch.
    """
    start = 0
    while total - start >= full:
        yield start, full
        start += full
    size = full // 2
    while size >= LADDER_FLOOR and start < total:
        if total - start >= size:
            yield start, size
            start += size
        size //= 2
    if start < total:  # fewer than the last size taken (under 2 * LADDER_FLOOR rows when full is larger)
        yield start, total - start


class SqliteConnection(StoreConnection):
    """SQLite: one writer at a time; the transaction holds the write lock from its first statement.

    With ``background``, the writes of a transaction run in a ``_Writer`` thread; every read, and
    ``check_references``, ``commit`` and ``rollback``, first wait for the writes queued before them.
    """

    def __init__(self, engine: Engine, *, background: bool = False) -> None:
        super().__init__(engine, background=background)
        self.max_params = min(MAX_PARAMS, self.raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
        # Inserted rows short of a full statement, per statement head: they wait for the next batch's rows of the
        # same table (fewer, fuller statements), and are written before anything else runs (_flush).
        self._short: dict[tuple[str, int, str, tuple[Any, ...]], list[Sequence[Any]]] = {}

    def _flush(self) -> None:
        short, self._short = self._short, {}
        for (head, width, tail, prefix), rows in short.items():
            self._values(head, width, rows, tail, prefix)

    def _drain(self) -> None:
        self._flush()
        super()._drain()

    # --- transaction -------------------------------------------------------------------------------------------

    def begin(self) -> None:
        # Python's sqlite3 would open a deferred transaction at the first write; take the lock now instead, so the
        # ids counted from max(id) cannot be taken by another writer before ours commit.
        self.raw.execute("PRAGMA cache_size = -65536")  # 64 MiB for this transaction's b-tree pages
        self.raw.execute("PRAGMA temp_store = MEMORY")
        # The applier builds every reference from ids it read or handed out in this transaction (and unlinks a
        # manager whose row never came), so SQLite's per-row foreign key lookups would only double the cost of a
        # large file (deferred manager links make SQLite search the children of every new user). The constraints
        # stay declared: every other connection, and PostgreSQL always, enforces them.
        self.raw.execute("PRAGMA foreign_keys = OFF")
        self.raw.execute("BEGIN IMMEDIATE")
        self._in_transaction = True

    def _reset(self) -> None:
        self._in_transaction = False
        self.raw.execute("PRAGMA foreign_keys = ON")
        self.raw.execute("PRAGMA cache_size = -2000")
        self.raw.execute("PRAGMA temp_store = DEFAULT")

    def commit(self) -> None:
        super().commit()
        self._reset()

    def rollback(self) -> None:
        self._short = {}
        super().rollback()
        self._reset()

    # --- statements ----------------------------------------------------------------------------------------------

    def time_param(self, value: datetime) -> Any:
        # The text SQLAlchemy's SQLite DateTime type writes and parses back.
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._flush()  # rows waiting for a fuller statement go first
        super().executemany(statement, rows)

    def _values(
        self, head: str, width: int, rows: Sequence[Sequence[Any]], tail: str = "", prefix: tuple[Any, ...] = ()
    ) -> None:
        """``head VALUES (...), (...) tail`` over ``rows``, as few statements as the parameter limit allows; the
        ``prefix`` parameters (the head's own) come before the rows' in each."""
        full = max(1, (self.max_params - len(prefix)) // width)
        for start, count in _pieces(len(rows), full):
            part = rows[start : start + count] if count < len(rows) else rows
            self._write(values_statement(head, width, count, tail), [prefix, *part] if prefix else part, "flat")

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        constants: Mapping[str, Any] | None = None,
    ) -> None:
        if not rows:
            return
        width, tail, prefix = len(columns), "", ()
        head = f"INSERT INTO {table} ({', '.join(columns)})"
        if constants:  # bound once a statement: INSERT ... SELECT column1, ..., ?, ? FROM (VALUES ...)
            prefix = tuple(constants.values())
            picked = ", ".join([*(f"column{i}" for i in range(1, width + 1)), *("?" * len(prefix))])
            head = f"INSERT INTO {table} ({', '.join([*columns, *constants])}) SELECT {picked} FROM ("
            tail = ")"
        key = (head, width, tail, prefix)
        waiting = self._short.pop(key, None)
        if waiting:
            rows = [*waiting, *rows]
        full = max(1, (self.max_params - len(prefix)) // width)
        whole = len(rows) - len(rows) % full
        if whole:
            self._values(head, width, rows[:whole] if whole < len(rows) else rows, tail, prefix)
        if whole < len(rows):
            self._short[key] = list(rows[whole:])

    def upsert_pairs(self, table: str, columns: tuple[str, str, str], rows: Sequence[Sequence[Any]]) -> None:
        # Rows of one statement are inserted in order, so a pair given twice ends with its last value, as with
        # executemany.
        if rows:
            self._flush()
            a, b, c = columns
            tail = f" ON CONFLICT ({a}, {b}) DO UPDATE SET {c} = excluded.{c}"
            self._values(f"INSERT INTO {table} ({a}, {b}, {c})", 3, rows, tail)

    def check_references(self, referenced: Callable[[], Mapping[str, Collection[int]]]) -> None:
        self._drain()  # nothing to check on SQLite (see begin), but a failed write must surface before the commit

    def new_ids(self, table: str, count: int) -> list[int]:
        counter = self._next_ids.get(table)
        if counter is None:
            (top,) = self.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
            counter = iter(range(top + 1, 1 << 62))
            self._next_ids[table] = counter
        return [next(counter) for _ in range(count)]


class PostgresConnection(StoreConnection):
    """PostgreSQL through psycopg 3: COPY for new rows, sequences for ids."""

    placeholder = "%s"
    writer_depth = 8  # a write here is a whole COPY of a batch's rows of one table: two batches at most

    def __init__(self, engine: Engine, *, background: bool = False) -> None:
        super().__init__(engine, background=background)
        self._engine = engine
        self._sequences: Any = None  # a pooled connection for nextval, opened on first use

    triggers_off = False

    def begin(self) -> None:
        # psycopg opens the transaction at the first statement; make sure none is pending.
        self.raw.rollback()
        # PostgreSQL checks each foreign key of each inserted row with a query of its own (about five per new user,
        # most of a large import's server time). The applier builds every reference from ids it read or handed out
        # in this transaction, as on SQLite, so where the role may (a superuser, or SET granted on the parameter)
        # the per-row checks are skipped for this transaction only, and ``check_references`` verifies and locks the
        # rows the file refers to with one query per referenced table instead. Otherwise PostgreSQL checks row by
        # row, as before.
        import psycopg

        try:
            self.raw.execute("SET LOCAL session_replication_role = replica")
            self.triggers_off = True
        except psycopg.errors.InsufficientPrivilege:
            self.raw.rollback()
            self.triggers_off = False
        self._in_transaction = True

    def check_references(self, referenced: Callable[[], Mapping[str, Collection[int]]]) -> None:
        """With the per-row checks off: every id the file's rows refer to must exist, and is locked against deletion
        until the commit (``FOR KEY SHARE``, what PostgreSQL's own check takes), one query per referenced table."""
        if not self.triggers_off:
            return
        import psycopg

        for table, ids in referenced().items():
            if not ids:
                continue
            wanted = list(ids)
            found = self.fetchall(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE id = ANY(%s) FOR KEY SHARE) AS present",
                (wanted,),
            )[0][0]
            if found != len(wanted):
                raise psycopg.errors.ForeignKeyViolation(
                    f"{len(wanted) - found} of the {table} rows this file refers to do not exist"
                )

    def refresh_statistics(self, tables: Sequence[str]) -> None:
        # Autovacuum analyzes a table a minute or so after a large change; an import that follows sooner would
        # be planned as if the table were as small as before (a million new users: its reads by user id scan all
        # three million memberships, 120 ms a chunk, instead of using the primary key).
        self.raw.execute(f"ANALYZE {', '.join(tables)}")
        self.raw.commit()

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self._write(f"COPY {table} ({', '.join(columns)}) FROM STDIN", rows, "copy")

    def new_ids(self, table: str, count: int) -> list[int]:
        # On a connection of its own: sequences are not transactional, and this one does not wait for the writer
        # thread's COPY (which a statement on the transaction's connection would: every batch draws ids).
        if count == 0:
            return []
        if self._sequences is None:
            self._sequences = self._engine.raw_connection()
        cursor = self._sequences.cursor()
        try:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", (table, count)
            )
            ids = [row[0] for row in cursor.fetchall()]
        finally:
            cursor.close()
        self._sequences.commit()
        return ids

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._sequences is not None:
                self._sequences.close()


# --- COPY text ---------------------------------------------------------------------------------------------------
# psycopg's ``write_row`` adapts value by value (about a microsecond a row); here a batch is formatted column by
# column with C-level loops (map, join, str methods), and only a column that holds something unusual goes through
# ``copy_value`` one value at a time.

NULL = "\\N"
_NULLS = {None: NULL}
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_SPECIAL = ("\\", "\t", "\n", "\r")
_BYTEA = "\\\\x"  # a bytea in hex is \x...; the backslash itself is escaped in COPY text
# str() of these is what PostgreSQL reads back (ISO dates and times, digits); bool is "True"/"False", also read.
_INTS = frozenset({int, bool, type(None)})
_AS_STR = frozenset({*_INTS, float, date, datetime})


def copy_value(value: Any) -> str:
    """One value as COPY text."""
    if value is None:
        return NULL
    if isinstance(value, str):
        return value.translate(_ESCAPES) if any(c in value for c in _SPECIAL) else value
    if isinstance(value, bytes | bytearray | memoryview):
        return _BYTEA + bytes(value).hex()
    return copy_value(str(value))


def _copy_column(column: tuple[Any, ...]) -> Iterable[str]:
    types = set(map(type, column))
    if types <= {str, type(None)}:
        present = "".join(filter(None, column))
        if any(c in present for c in _SPECIAL):
            return map(copy_value, column)
        return map(_NULLS.get, column, column) if type(None) in types else column
    if types <= _INTS:
        texts = map(str, column)
        return map(_NULLS.get, column, texts) if type(None) in types else texts
    if types <= _AS_STR:
        # Mostly one value (a batch's timestamps, dates repeat): str() of a datetime costs a microsecond.
        text_of = {value: NULL if value is None else str(value) for value in set(column)}
        return map(text_of.__getitem__, column)
    if types == {bytes}:
        return map(add, repeat(_BYTEA), map(bytes.hex, column))
    return map(copy_value, column)


def copy_text(rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` in PostgreSQL's COPY text format: tab-separated, ``\\N`` for NULL, one line a row."""
    if not rows:
        return ""
    columns = [_copy_column(column) for column in zip(*rows, strict=True)]
    return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"


def copy_rows(cursor: Any, statement: str, rows: Sequence[Sequence[Any]]) -> None:
    """``COPY ... FROM STDIN`` of ``rows`` on a psycopg cursor."""
    with cursor.copy(statement) as copy:
        if len(rows[0]) < COPY_TEXT_MIN_WIDTH:  # psycopg's own (C) row formatting is faster on narrow rows
            for row in rows:
                copy.write_row(row)
            return
        for start in range(0, len(rows), COPY_ROWS):
            copy.write(copy_text(rows[start : start + COPY_ROWS]))


def store_connection(engine: Engine, *, background: bool = False) -> StoreConnection:
    """The StoreConnection for ``engine``'s database; ``background``: the transaction's writes run in a thread of
    their own (``_Writer``), so the caller prepares the next batch meanwhile. ingest.apply asks for it when a file
    brings many new users: on a re-import, mostly reads, the hand-offs cost more than the overlap saves."""
    if engine.dialect.name == "sqlite":
        return SqliteConnection(engine, background=background)
    if engine.dialect.name == "postgresql":
        return PostgresConnection(engine, background=background)
    raise NotImplementedError(f"the user store supports SQLite and PostgreSQL, not {engine.dialect.name}")
