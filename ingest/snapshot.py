"""What the user store holds of one client, read once per import and shared by validation and the apply.

An import needs the client's users three times: validation asks who manages whom (a manager must exist, no cycle),
the safety hold counts the active users a full file would suspend, and the apply needs each user's id, status and
``row_hash`` to tell unchanged rows from changed ones. A million users cost seconds to read through a DB-API cursor
(a Python tuple per row), so they are read once, compactly, while validation's first pass reads the file:

- ``load_snapshot`` reads the users in id ranges with two aggregates per range (the keys joined by a separator, the
  rest as fixed-width hex), so each range is one step inside the database: SQLite runs it without Python's GIL and
  PostgreSQL in its own process, while the main thread goes on reading the file.
- ``StoreSnapshot.users`` maps employee_id -> 25 packed bytes: row_hash (8), status (1: ``a``/``s``), id (8, big
  endian), manager id (8, big endian; 0 for none). About 130 bytes a user with the dict.
- ``version`` is ``(count, max id, max updated_at)`` of the client's users. The apply reads it again inside its
  transaction and reads the users afresh if it changed (another import of the client committed in between): every
  write by an import either adds a user or sets ``updated_at``, except a digest refresh of a user whose values did
  not change, which leaves the snapshot's conclusions true.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Engine

from core.models import UserStatus

NO_HASH = b"\0" * 8
STATUS_BYTE = {UserStatus.ACTIVE.value: b"a", UserStatus.SUSPENDED.value: b"s"}
RANGE = 100_000  # ids per aggregate: a few MB of text at a time
Version = tuple[int, Any, Any]
# SQLite would otherwise take the (client, employee_id) index and fetch every row by id, in random order: "+client"
# makes it read the table in order (three to five times faster for a large client).
VERSION_SQL = "SELECT count(*), max(id), max(updated_at) FROM users WHERE client = ?"


def pack(row_hash: bytes | None, status: str, user_id: int, manager_id: int | None) -> bytes:
    """The 25 bytes ``StoreSnapshot.users`` keeps for a user."""
    return (
        (row_hash or NO_HASH)
        + STATUS_BYTE.get(status, b"?")
        + user_id.to_bytes(8, "big")
        + (manager_id or 0).to_bytes(8, "big")
    )


def user_id_of(packed: bytes) -> int:
    return int.from_bytes(packed[9:17], "big")


class StoreSnapshot(Mapping[str, str | None]):
    """The client's users as one import sees them (module docstring). As a Mapping it is what validation needs:
    employee_id -> the employee_id of the user's manager (None when there is none).

    Filled in by ``load_snapshot``, possibly on a thread of its own: every read waits until it is loaded (and
    raises what the load raised).
    """

    def __init__(self, client: str) -> None:
        self.client = client
        self._users: dict[str, bytes] = {}
        self._version: Version = (0, None, None)
        self._keys_by_id: dict[int, str] | None = None
        self._loaded = threading.Event()
        self._error: BaseException | None = None

    # --- loading -------------------------------------------------------------------------------------------------

    def fill(self, users: dict[str, bytes], version: Version) -> None:
        self._users, self._version = users, version
        self._loaded.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._loaded.set()

    def wait(self) -> None:
        self._loaded.wait()
        if self._error is not None:
            raise self._error

    @property
    def users(self) -> dict[str, bytes]:
        self.wait()
        return self._users

    @property
    def version(self) -> Version:
        self.wait()
        return self._version

    # --- the manager map -----------------------------------------------------------------------------------------

    def __getitem__(self, key: str) -> str | None:
        packed = self.users[key]
        manager = int.from_bytes(packed[17:25], "big")
        if not manager:
            return None
        if self._keys_by_id is None:  # only when validation follows a chain through users absent from the file
            managers = {int.from_bytes(p[17:25], "big") for p in self._users.values()}
            self._keys_by_id = {user_id_of(p): k for k, p in self._users.items() if user_id_of(p) in managers}
        return self._keys_by_id.get(manager)

    def __contains__(self, key: object) -> bool:
        return key in self.users

    def __iter__(self) -> Iterator[str]:
        return iter(self.users)

    def __len__(self) -> int:
        return len(self.users)

    def active_keys(self) -> Iterator[str]:
        return (key for key, packed in self.users.items() if packed[8:9] == b"a")


def read_version(conn: Any, client: str) -> Version:
    """``(count, max id, max updated_at)`` of ``client``'s users, on a StoreConnection."""
    statement = VERSION_SQL if conn.placeholder != "?" else VERSION_SQL.replace("client", "+client")
    count, top, updated = conn.fetchall(statement, (client,))[0]
    return int(count), top, updated


def read_users(conn: Any, client: str, top: int | None) -> dict[str, bytes]:
    """employee_id -> packed bytes for every user of ``client`` with id <= ``top``, on a StoreConnection, in id
    ranges of one aggregate step each (module docstring)."""
    if top is None:
        return {}
    if conn.placeholder == "?":
        keys = "group_concat(employee_id, char(30))"
        values = (
            "group_concat(CASE WHEN row_hash IS NULL THEN '0000000000000000' ELSE hex(row_hash) END || "
            "CASE status WHEN 'active' THEN '61' WHEN 'suspended' THEN '73' ELSE '3f' END || "
            "printf('%016x%016x', id, coalesce(manager_id, 0)), '')"
        )
        ranged = (
            "SELECT id, employee_id, row_hash, status, manager_id FROM users "
            "WHERE id > ? AND id <= ? AND +client = ? ORDER BY id"
        )
    else:
        keys = "string_agg(employee_id, chr(30) ORDER BY id)"
        values = (
            "string_agg(coalesce(encode(row_hash, 'hex'), '0000000000000000') || "
            "CASE status WHEN 'active' THEN '61' WHEN 'suspended' THEN '73' ELSE '3f' END || "
            "lpad(to_hex(id), 16, '0') || lpad(to_hex(coalesce(manager_id, 0)), 16, '0'), '' ORDER BY id)"
        )
        ranged = (  # the aggregates order by id themselves
            "SELECT id, employee_id, row_hash, status, manager_id FROM users WHERE id > ? AND id <= ? AND client = ?"
        )
    statement = f"SELECT count(*), {keys}, {values} FROM ({ranged}) AS part"
    users: dict[str, bytes] = {}
    low = 0
    while low < top:
        high = low + RANGE
        count, joined_keys, hex_values = conn.fetchall(statement, (low, high, client))[0]
        low = high
        if not count:
            continue
        names = joined_keys.split("\x1e")
        raw = bytes.fromhex(hex_values)
        if len(names) != count or len(raw) != 25 * count:  # a key with the separator in it: read row by row
            for user_id, key, row_hash, status, manager_id in conn.fetchall(ranged, (high - RANGE, high, client)):
                users[key] = pack(row_hash, status, user_id, manager_id)
            continue
        users.update(zip(names, [raw[i : i + 25] for i in range(0, 25 * count, 25)], strict=True))
    return users


def _begin_read(conn: Any) -> None:
    """One consistent view for every statement that follows (the version and all the ranges)."""
    if conn.placeholder == "?":
        conn.raw.execute("BEGIN")  # SQLite in WAL mode: the snapshot is taken at the first read
    else:
        conn.raw.rollback()
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


def load_snapshot(engine: Engine, client: str, *, background: bool = True) -> StoreSnapshot:
    """A StoreSnapshot of ``client``'s users, loaded on a thread of its own (``background``) or now."""
    from ingest.store_sql import store_connection

    snapshot = StoreSnapshot(client)

    def load() -> None:
        try:
            conn = store_connection(engine)
            try:
                _begin_read(conn)
                version = read_version(conn, client)
                snapshot.fill(read_users(conn, client, version[1]), version)
            finally:
                conn.rollback()
                conn.close()
        except BaseException as exc:  # handed to whoever reads the snapshot
            snapshot.fail(exc)

    if background:
        threading.Thread(target=load, name=f"lcsync-snapshot-{client}", daemon=True).start()
    else:
        load()
    return snapshot
