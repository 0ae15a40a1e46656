"""The statements of the user store, one class per database: bulk writes in one transaction, reads by id in chunks.

ingest.apply decides what to write; this module only knows how to write it fast on each database:

- SQLite: ``BEGIN IMMEDIATE`` (the write lock first, so that ids handed out from ``max(id)`` stay ours), a larger
  page cache and in-memory temporary storage for the transaction, ``executemany`` in large batches.
- PostgreSQL (psycopg 3): ids drawn from the tables' sequences in blocks, new rows sent with ``COPY``, updates and
  deletes with ``executemany`` (pipelined by psycopg).

Both work on a raw DB-API connection taken from the SQLAlchemy pool, so no ORM or Core overhead sits on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

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


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StoreConnection:
    """One transaction on one raw connection. Subclasses adapt values and pick the bulk statement."""

    placeholder = "?"

    def __init__(self, engine: Engine) -> None:
        self._proxy = engine.raw_connection()
        self.raw: Any = self._proxy.driver_connection
        assert self.raw is not None
        self.cursor: Any = self.raw.cursor()
        self._next_ids: dict[str, Iterator[int]] = {}

    # --- transaction -------------------------------------------------------------------------------------------

    def begin(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()

    def close(self) -> None:
        try:
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
        self.cursor.execute(self.sql(statement), params)
        return self.cursor

    def fetchall(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(statement, params).fetchall())

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.cursor.executemany(self.sql(statement), rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert new rows (ids already assigned)."""
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

    def check_references(self, referenced: Callable[[], Mapping[str, Collection[int]]]) -> None:
        """Verify that the ids ``referenced()`` lists (table -> ids the written rows point to) exist, where the
        database did not check them row by row (SQLite never does here: see SqliteConnection.begin)."""

    def rows_by_ids(self, statement: str, ids: Sequence[int]) -> Iterable[Any]:
        """Run ``statement`` (containing ``{ids}``) over ``ids`` in chunks."""
        for part in chunks(ids):
            marks = ", ".join("?" * len(part))
            yield from self.fetchall(statement.format(ids=marks), part)


class SqliteConnection(StoreConnection):
    """SQLite: one writer at a time; the transaction holds the write lock from its first statement."""

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

    def _reset(self) -> None:
        self.raw.execute("PRAGMA foreign_keys = ON")
        self.raw.execute("PRAGMA cache_size = -2000")
        self.raw.execute("PRAGMA temp_store = DEFAULT")

    def commit(self) -> None:
        super().commit()
        self._reset()

    def rollback(self) -> None:
        super().rollback()
        self._reset()

    def time_param(self, value: datetime) -> Any:
        # The text SQLAlchemy's SQLite DateTime type writes and parses back.
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")

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

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def new_ids(self, table: str, count: int) -> list[int]:
        if count == 0:
            return []
        rows = self.fetchall(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", (table, count)
        )
        return [row[0] for row in rows]


def store_connection(engine: Engine) -> StoreConnection:
    """The StoreConnection class for ``engine``'s database."""
    if engine.dialect.name == "sqlite":
        return SqliteConnection(engine)
    if engine.dialect.name == "postgresql":
        return PostgresConnection(engine)
    raise NotImplementedError(f"the user store supports SQLite and PostgreSQL, not {engine.dialect.name}")
