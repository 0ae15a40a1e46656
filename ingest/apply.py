"""Applying a validated User Data file to the user store: the only writer of users, groups and their history.

One file is one transaction (SPEC 5, docs/design/import.md)::

    the client's users as {employee_id: hash|status|id|manager} (ingest.snapshot: the read validation used, read
        again only if another import of the client committed since)
    for each batch of valid records, in file order:
        known key, same hash -> unchanged: the record is not even converted; nothing read, nothing written
        new key            -> ids assigned in Python, user + memberships + custom values inserted in bulk
        known key, other hash -> the stored values of the batch's candidates read by id, compared field by field:
                              only the changed columns updated, one audit row per change, reactivation
        on_outcome for every row of the batch, in file order
    full mode: active users absent from keys_in_file suspended (audit rows too), on_outcome for each
    commit (or roll back: a dry run, or any exception)

A manager named before its own row gets its id at once (the foreign key is deferred), so managers are linked without
a second pass over the users; a manager whose row never came is unlinked before the commit.

``row_hash`` is a 64-bit BLAKE2b digest: of the record's cells as the file wrote them, with how its columns map onto
the template (ingest.reader.FingerprintedRecords), or for a UserRow handed over as such, of the values it determines
(the template's shape is part of the digest). Equal digests mean the stored user already says what the row says;
the same values written differently (" ACTIVE " for "Active") make a candidate that compares equal field by field,
and only its digest is refreshed.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from hashlib import blake2b
from itertools import islice
from typing import Any, Protocol

from core.config import TemplateConfig
from core.db import Database
from core.errors import InputFileError
from core.models import UserStatus
from ingest.reader import FILE_CHANGED, FingerprintedRecords
from ingest.row_layout import RowLayout
from ingest.rows import Outcome, RowOutcome, UserRow
from ingest.snapshot import StoreSnapshot, load_snapshot, read_users, read_version, user_id_of
from ingest.store_sql import (
    AUDIT_COLUMNS,
    OUTCOME_COLUMNS,
    PLAIN_COLUMNS,
    StoreConnection,
    store_connection,
)

log = logging.getLogger("lcsync.import")
BATCH = 20_000
ACTIVE = UserStatus.ACTIVE.value
SUSPENDED = UserStatus.SUSPENDED.value
PLAIN_INDEX = {c: i for i, c in enumerate(PLAIN_COLUMNS)}
# position in the batch, line, key, layout, prepared values, digest, user id
_Candidate = tuple[int, int, str, "RowLayout", tuple[Any, ...], bytes, int]
# (line, key, digest, cells) of a file's record, or (line, key, None, row) of a UserRow given as such
_Item = tuple[int, str, bytes | None, Any]


class ValidationLike(Protocol):
    """What apply needs of ingest.validate.Validation."""

    @property
    def keys_in_file(self) -> Collection[str]: ...

    def valid_rows(self) -> Iterator[UserRow]: ...


@dataclass
class ApplyCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    reactivated: int = 0
    suspended: int = 0


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


STATISTICS_FROM = 10_000  # new users after which the planner's statistics are refreshed (ingest.store_sql)
WRITER_FROM = 50_000  # new users a file must bring before the writes go to a thread of their own


def _many_new(validation: ValidationLike, snapshot: StoreSnapshot | None, client: str) -> bool:
    """Whether a file brings so many new users that the inserts pay for a writer thread (ingest.store_sql):
    measured on 1,000,000 new users, 44k -> 50k rows/s; on a re-import of the same users the thread costs 5%."""
    if snapshot is None or snapshot.client != client:
        return False
    return len(validation.keys_in_file) - len(snapshot.users) >= WRITER_FROM


def _no_values(line: int, cells: Any) -> tuple[Any, ...] | None:
    raise TypeError(f"line {line}: a record of cells came without its file's reader")


class UserStore:
    """The LMS user store of one environment's database (see the module docstring for how a file is applied)."""

    def __init__(self, database: Database, *, batch_size: int = BATCH) -> None:
        self.database = database
        self.batch_size = batch_size  # rows per bulk statement; smaller only in tests, to cross batch edges
        self._snapshot: StoreSnapshot | None = None  # the users manager_map last read
        self._absent: tuple[StoreSnapshot, Collection[str], list[str]] | None = None  # what plan_suspensions found

    def manager_map(self, client: str) -> StoreSnapshot:
        """employee_id -> the manager's employee_id (or None) for every user of ``client`` in the store.

        The users are read on a thread of their own (ingest.snapshot), so validation reads the file meanwhile; the
        same read serves a ``plan_suspensions`` and an ``apply`` that follow for this client, unless the store
        changed in between (the apply checks).
        """
        self._snapshot = load_snapshot(self.database.engine, client)
        return self._snapshot

    def plan_suspensions(self, client: str, keys_in_file: Collection[str]) -> tuple[int, int]:
        """(active users in the store, how many a full file with these keys would suspend)

        Counted from the users ``manager_map`` read for this client (read now if it did not). Either way this is
        the picture just before the apply.
        """
        if self._snapshot is None or self._snapshot.client != client:
            self._snapshot = load_snapshot(self.database.engine, client, background=False)
        active = 0
        absent: list[str] = []
        for key in self._snapshot.active_keys():
            active += 1
            if key not in keys_in_file:
                absent.append(key)
        self._absent = (self._snapshot, keys_in_file, absent)  # for the apply, if the store stays as it is
        return active, len(absent)

    def apply(
        self,
        client: str,
        template: TemplateConfig,
        validation: ValidationLike,
        job_id: int | None,
        on_outcome: Callable[[RowOutcome], None],
        *,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
        on_outcomes: Callable[[list[RowOutcome]], None] | None = None,
    ) -> ApplyCounts:
        """Apply the valid rows of ``validation`` for ``client`` in one transaction and return the counts.

        ``on_outcome`` is called for every valid row in file order, then for each suspended user (line None). The
        calls happen before the commit: if apply raises, nothing was stored and the outcomes must be discarded.
        ``on_outcomes``, when given, gets the valid rows' outcomes instead, a batch (a list, in file order) at a time,
        as plain tuples of RowOutcome's fields (a million named tuples cost a third of a second more).
        ``dry_run`` computes everything, then rolls back. ``progress`` gets the number of rows applied so far.
        """
        snapshot, self._snapshot = self._snapshot, None  # about to be out of date
        absent_plan, self._absent = self._absent, None
        conn = store_connection(self.database.engine, background=_many_new(validation, snapshot, client))
        # A million rows make millions of short-lived tuples on top of millions of long-lived keys: the cyclic
        # collector would walk the long-lived ones again and again, finding nothing (nothing here makes cycles).
        collecting = gc.isenabled()
        gc.disable()
        try:
            conn.begin()
            run = _Run(conn, client, template, job_id, on_outcome, snapshot)
            run.on_outcomes = on_outcomes
            run.manager_keys = getattr(validation, "manager_keys", None)
            fingerprinted = getattr(validation, "fingerprinted", None)
            if fingerprinted is not None:  # a file: records come unconverted, with the digest of their cells
                records = fingerprinted()
                items: Iterable[_Item] = records
                run.records = records
            else:  # rows from elsewhere (tests, tools): their digest covers their values
                items = ((row.line, row.key, None, row) for row in validation.valid_rows())
            done = 0
            records = iter(items)
            while batch := list(islice(records, self.batch_size)):
                run.batch(batch)
                done += len(batch)
                if progress is not None:
                    progress(done)
            run.finish_managers()
            if template.mode == "full":
                keys, absent = validation.keys_in_file, None
                if absent_plan is not None and run.snapshot is absent_plan[0] and keys is absent_plan[1]:
                    absent = absent_plan[2]  # the same users, the same keys: the same answer
                run.suspend_absent(keys, absent)
            conn.check_references(run.referenced)
            if dry_run:
                conn.rollback()
            else:
                conn.commit()
                if run.counts.created >= STATISTICS_FROM:
                    try:  # the file is applied: a failure here only delays the planner's statistics
                        conn.refresh_statistics(("users", "memberships", "custom_values"))
                    except Exception as exc:
                        log.warning("statistics_not_refreshed", extra={"fields": {"reason": str(exc)}})
            return run.counts
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()
            if collecting:
                gc.enable()


class _Run:
    """The state of one apply: the client's users, groups and custom fields, and the ids handed out so far."""

    def __init__(
        self,
        conn: StoreConnection,
        client: str,
        template: TemplateConfig,
        job_id: int | None,
        on_outcome: Callable[[RowOutcome], None],
        snapshot: StoreSnapshot | None,
    ) -> None:
        self.conn = conn
        self.client = client
        self.layouts: dict[tuple[tuple[str, ...], ...], RowLayout] = {}
        self.job_id = job_id
        self.on_outcome = on_outcome
        self.on_outcomes: Callable[[list[RowOutcome]], None] | None = None  # the same, a batch at a time
        self.counts = ApplyCounts()
        self.now = datetime.now(UTC)
        self.now_param = conn.time_param(self.now)
        self.outcome_seq = 0
        self.type_ids = self._named_ids("group_types", template.group_types)
        self.field_ids = self._named_ids("custom_fields", template.custom_fields)
        self.groups: dict[int, dict[str, int]] = {type_id: {} for type_id in self.type_ids.values()}
        self.group_names: dict[int, str] = {}
        for group_id, type_id, name in conn.fetchall(
            "SELECT g.id, g.group_type_id, g.name FROM user_groups g JOIN group_types t ON t.id = g.group_type_id "
            "WHERE t.client = ?",
            (client,),
        ):
            self.groups.setdefault(type_id, {})[name] = group_id
            self.group_names[group_id] = name
        # employee_id -> packed hash, status, id and manager id (ingest.snapshot): the snapshot validation used,
        # unless another import of the client committed since.
        version = read_version(conn, client)
        self.snapshot: StoreSnapshot | None = None  # the snapshot used, if it was still true
        if snapshot is not None and snapshot.client == client and snapshot.version == version:
            self.existing = snapshot.users
            self.snapshot = snapshot
        else:
            self.existing = read_users(conn, client, version[1])
        self.new_ids: dict[str, int] = {}  # users created by this file (managers only, when known), and managers
        # named before their row
        self.manager_keys: Collection[str | None] | None = None  # the keys that may be managers (None: any)
        self.pending_managers: set[str] = set()  # keys of managers named but not (yet) created
        self.id_pool: list[int] = []
        self.managers: set[int] = set()  # ids the file's rows name as managers
        self.touched: set[int] = set()  # stored users whose rows (or memberships, values, history) this file writes
        self.layout: RowLayout | None = None  # the layout of the last row prepared
        self.records: FingerprintedRecords | None = None  # a file's records, when they come unconverted
        self.values: Callable[[int, Any], tuple[Any, ...] | None] | None = None  # their prepared values

    def _named_ids(self, table: str, names: Sequence[str]) -> dict[str, int]:
        """Ids of the client's group types or custom fields called ``names``, created on first use."""
        found = {
            name: ident
            for ident, name in self.conn.fetchall(f"SELECT id, name FROM {table} WHERE client = ?", (self.client,))
        }
        missing = [name for name in dict.fromkeys(names) if name not in found]
        ids = self.conn.new_ids(table, len(missing))
        self.conn.insert(
            table, ("id", "client", "name"), [(i, self.client, n) for i, n in zip(ids, missing, strict=True)]
        )
        found.update(zip(missing, ids, strict=True))
        return found

    def layout_for(self, row: UserRow) -> RowLayout:
        shape = (tuple(row.fields), tuple(row.groups), tuple(row.custom))
        layout = self.layouts.get(shape)
        if layout is None:
            unknown = [n for n in (*row.groups, *row.custom) if n not in self.type_ids and n not in self.field_ids]
            if unknown:
                raise ValueError(f"line {row.line}: {unknown} are not group types or custom fields of the template")
            layout = self.layouts[shape] = RowLayout(row)
            layout.type_ids = tuple(self.type_ids[name] for name in layout.group_types)
            layout.field_ids = tuple(self.field_ids[name] for name in layout.custom_fields)
            layout.group_slots = tuple(enumerate(layout.type_ids, layout.groups_at))
            layout.custom_slots = tuple(enumerate(layout.field_ids, layout.custom_at))
            layout.compile_adder()
        return layout

    # --- ids -----------------------------------------------------------------------------------------------------

    def _next_user_id(self) -> int:
        if not self.id_pool:
            self.id_pool.extend(reversed(self.conn.new_ids("users", BATCH)))
        return self.id_pool.pop()

    def user_id(self, key: str) -> int:
        """The id of the user ``key``: stored, created by this file, or reserved now for a manager named early."""
        packed = self.existing.get(key)
        if packed is not None:
            return user_id_of(packed)
        ident = self.new_ids.get(key)
        if ident is None:
            ident = self.new_ids[key] = self._next_user_id()
            self.pending_managers.add(key)
        return ident

    def group_id(self, type_id: int, name: str, created: list[tuple[int, int, str]]) -> int:
        ident = self.groups[type_id].get(name)
        if ident is None:
            (ident,) = self.conn.new_ids("user_groups", 1)
            self.groups[type_id][name] = ident
            self.group_names[ident] = name
            created.append((ident, type_id, name))
        return ident

    # --- one batch -----------------------------------------------------------------------------------------------

    def batch(self, items: list[_Item]) -> None:
        """Apply one batch of valid rows (the hot path: one dict lookup for an unchanged user, bulk inserts)."""
        conn, client, job_id, now = self.conn, self.client, self.job_id, self.now_param
        existing, new_ids, pending, groups_of = self.existing, self.new_ids, self.pending_managers, self.groups
        if self.records is not None and self.values is None:  # a file: one layout, known from its first record
            line, _, _, cells = items[0]
            self.layout = self.layout_for(self.records.convert(line, cells))
            self.values = self.records.values(self.layout.items)
        values = self.values or _no_values
        layout = self.layout
        if layout is not None:
            prepare, person, manager_at = layout.prepare, layout.person, layout.manager_at
        id_pool, keep = self.id_pool, self.manager_keys
        new_users: dict[RowLayout, list[tuple[Any, ...]]] = {}  # per layout: its rows have their own columns
        new_groups: list[tuple[int, int, str]] = []
        memberships: list[tuple[int, int, int]] = []
        custom_values: list[tuple[int, int, str]] = []

        def new_group(type_id: int, name: str) -> int:
            return self.group_id(type_id, name, new_groups)

        def make_adder(layout: RowLayout) -> Callable[..., None]:
            assert layout.adder is not None  # compiled by layout_for
            users = new_users.setdefault(layout, [])
            return layout.adder(users.append, memberships.append, custom_values.append, groups_of, new_group)

        add: Callable[..., Any] = make_adder(layout) if layout is not None else _no_values
        outcomes: list[tuple[int | None, str, Outcome, str] | None] = []  # RowOutcome's fields: cheaper as tuples
        candidates: list[_Candidate] = []
        created = unchanged = 0
        unchanged_outcome, created_outcome = Outcome.UNCHANGED, Outcome.CREATED
        append_outcome = outcomes.append
        managers_add = self.managers.add
        for line, key, digest, row in items:
            packed = existing.get(key)
            if digest is None:  # a UserRow handed over as such: its digest covers its prepared values
                if layout is None or not layout.fits(row):
                    layout = self.layout = self.layout_for(row)
                    prepare, person, manager_at = layout.prepare, layout.person, layout.manager_at
                    add = make_adder(layout)
                prepared = prepare(row)
                digest = blake2b(repr(prepared).encode(), digest_size=8, person=person).digest()
            elif packed is not None and packed[:8] == digest:  # a record of cells unchanged since last time
                unchanged += 1
                append_outcome((line, key, unchanged_outcome, ""))
                continue
            else:  # a record of cells to write: its values straight from the cells, in the layout's order
                found = values(line, row)
                if found is None:
                    raise InputFileError(FILE_CHANGED)
                prepared = found
            if packed is not None:
                if packed[:8] == digest:
                    unchanged += 1
                    append_outcome((line, key, unchanged_outcome, ""))
                else:
                    assert layout is not None  # set when the row was prepared
                    candidates.append((len(outcomes), line, key, layout, prepared, digest, user_id_of(packed)))
                    append_outcome(None)
                continue
            ident = new_ids.get(key)
            if ident is None:
                ident = id_pool.pop() if id_pool else self._next_user_id()
                if keep is None or key in keep:  # only a manager's id is looked up again
                    new_ids[key] = ident
            elif key in pending:
                pending.discard(key)
            else:
                raise ValueError(f"employee_id {key!r} appears twice among the valid rows (line {line})")
            manager = prepared[manager_at]
            if manager is None:
                manager_id = None
            else:
                found_manager = existing.get(manager)
                if found_manager is not None:
                    manager_id = user_id_of(found_manager)
                else:
                    manager_id = new_ids.get(manager) or self.user_id(manager)
                managers_add(manager_id)
            add(ident, key, prepared, manager_id, digest)
            created += 1
            append_outcome((line, key, created_outcome, ""))
        self.counts.created += created
        self.counts.unchanged += unchanged
        conn.insert("user_groups", ("id", "group_type_id", "name"), new_groups)
        constants = {"client": client, "created_job_id": job_id, "created_at": now, "updated_at": now}
        for users_layout, rows in new_users.items():
            conn.insert("users", users_layout.user_columns, rows, constants)
        conn.insert("memberships", ("user_id", "group_type_id", "group_id"), memberships)
        conn.insert("custom_values", ("user_id", "field_id", "value"), custom_values)
        if candidates:
            self._compare(candidates, outcomes)
        if self.on_outcomes is not None:
            self.on_outcomes(outcomes)  # type: ignore[arg-type]  # every None was replaced by _compare
        else:
            on_outcome, make = self.on_outcome, RowOutcome._make
            for outcome in outcomes:
                assert outcome is not None
                on_outcome(make(outcome))

    def _compare(
        self,
        candidates: list[_Candidate],
        outcomes: list[tuple[int | None, str, Outcome, str] | None],
    ) -> None:
        """Known users whose digest differs: read their stored values, write only what changed."""
        conn = self.conn
        ids = [c[-1] for c in candidates]
        stored: dict[int, tuple[Any, ...]] = {}
        for row in conn.rows_by_ids(
            f"SELECT u.id, m.employee_id, {', '.join('u.' + c for c in PLAIN_COLUMNS)} "
            "FROM users u LEFT JOIN users m ON m.id = u.manager_id WHERE u.id IN ({ids})",
            ids,
        ):
            stored[row[0]] = row[1:]
        stored_groups: dict[int, dict[int, int]] = {}
        for user_id, type_id, group_id in conn.rows_by_ids(
            "SELECT user_id, group_type_id, group_id FROM memberships WHERE user_id IN ({ids})", ids
        ):
            stored_groups.setdefault(user_id, {})[type_id] = group_id
        stored_custom: dict[int, dict[int, str]] = {}
        for user_id, field_id, value in conn.rows_by_ids(
            "SELECT user_id, field_id, value FROM custom_values WHERE user_id IN ({ids})", ids
        ):
            stored_custom.setdefault(user_id, {})[field_id] = value

        updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        rehash: list[tuple[bytes, int]] = []
        audit: list[tuple[Any, ...]] = []
        new_groups: list[tuple[int, int, str]] = []
        set_groups: list[tuple[int, int, int]] = []
        drop_groups: list[tuple[int, int]] = []
        set_custom: list[tuple[int, int, str]] = []
        drop_custom: list[tuple[int, int]] = []
        changed_rows: list[tuple[Any, ...]] = []
        for position, line, key, layout, prepared, digest, user_id in candidates:
            values = prepared[: layout.manager_at]
            manager = prepared[layout.manager_at]
            groups = prepared[layout.groups_at : layout.custom_at]
            custom = prepared[layout.custom_at :]
            old = stored[user_id]
            old_manager = old[0]
            old_values = [old[1 + PLAIN_INDEX[c]] for c in layout.columns]
            changed: list[str] = []
            params: list[Any] = []
            audit_before = len(audit)
            was_suspended = False
            for column, new, previous in zip(layout.columns, values, old_values, strict=True):
                new_text, old_text = _text(new), _text(previous)
                if new_text != old_text:
                    changed.append(column)
                    params.append(new)
                    audit.append((user_id, self.job_id, column, old_text, new_text, self.now_param))
                    if column == "status" and old_text == SUSPENDED and new_text == ACTIVE:
                        was_suspended = True
            if layout.manager_mapped and manager != old_manager:
                changed.append("manager_id")
                manager_id = None if manager is None else self.user_id(manager)
                if manager_id is not None:
                    self.managers.add(manager_id)
                params.append(manager_id)
                audit.append((user_id, self.job_id, "manager_id", old_manager, manager, self.now_param))
            old_groups = stored_groups.get(user_id, {})
            for type_name, type_id, group in zip(layout.group_types, layout.type_ids, groups, strict=True):
                old_id = old_groups.get(type_id)
                old_name = None if old_id is None else self.group_names[old_id]
                if group == old_name:
                    continue
                if group is None:
                    drop_groups.append((user_id, type_id))
                else:
                    set_groups.append((user_id, type_id, self.group_id(type_id, group, new_groups)))
                audit.append((user_id, self.job_id, f"group:{type_name}", old_name, group, self.now_param))
            old_custom = stored_custom.get(user_id, {})
            for field_name, field_id, value in zip(layout.custom_fields, layout.field_ids, custom, strict=True):
                old_value = old_custom.get(field_id)
                if value == old_value:
                    continue
                if value is None:
                    drop_custom.append((user_id, field_id))
                else:
                    set_custom.append((user_id, field_id, value))
                audit.append((user_id, self.job_id, f"custom:{field_name}", old_value, value, self.now_param))
            self.touched.add(user_id)
            if len(audit) > audit_before:
                updates.setdefault(tuple(changed), []).append((*params, digest, self.now_param, user_id))
                outcome = Outcome.REACTIVATED if was_suspended else Outcome.UPDATED
                if was_suspended:
                    self.counts.reactivated += 1
                else:
                    self.counts.updated += 1
                changed_rows.append((line, key, outcome.value))
            else:
                # Same values under another digest (a new template, or a user written by something else):
                # only the bookkeeping digest is refreshed; updated_at and the history stay as they are.
                outcome = Outcome.UNCHANGED
                self.counts.unchanged += 1
                rehash.append((digest, user_id))
            outcomes[position] = RowOutcome(line, key, outcome)
        if new_groups:
            conn.insert("user_groups", ("id", "group_type_id", "name"), new_groups)
        for changed_columns, rows in updates.items():
            assignments = "".join(f"{c} = ?, " for c in changed_columns)
            conn.executemany(f"UPDATE users SET {assignments}row_hash = ?, updated_at = ? WHERE id = ?", rows)
        conn.executemany("UPDATE users SET row_hash = ? WHERE id = ?", rehash)
        conn.delete_pairs("memberships", ("user_id", "group_type_id"), drop_groups)
        conn.upsert_pairs("memberships", ("user_id", "group_type_id", "group_id"), set_groups)
        conn.delete_pairs("custom_values", ("user_id", "field_id"), drop_custom)
        conn.upsert_pairs("custom_values", ("user_id", "field_id", "value"), set_custom)
        conn.insert("user_audit", AUDIT_COLUMNS, audit)
        self._record_outcomes(changed_rows)

    def _record_outcomes(self, rows: list[tuple[int | None, str, str]]) -> None:
        if self.job_id is None or not rows:
            return
        records = []
        for line, key, outcome in rows:
            self.outcome_seq += 1
            records.append((self.job_id, self.outcome_seq, line, key, outcome, None))
        self.conn.insert("import_outcomes", OUTCOME_COLUMNS, records)

    # --- after the last row --------------------------------------------------------------------------------------

    def referenced(self) -> dict[str, set[int]]:
        """table -> the ids of its rows that rows written by this file point to (users created by this file are not
        listed: they exist by construction)."""
        # Ids handed out by this file: its users, created here, and managers whose row never came, unlinked.
        handed_out = set(self.new_ids.values())
        referenced = {
            "users": (self.managers | self.touched) - handed_out,
            "group_types": set(self.type_ids.values()),
            "user_groups": set(self.group_names),
            "custom_fields": set(self.field_ids.values()),
        }
        if self.job_id is not None and self.outcome_seq:
            referenced["import_jobs"] = {self.job_id}
        return referenced

    def finish_managers(self) -> None:
        """Unlink managers that were named before their row but whose row never came (it was rejected)."""
        if not self.pending_managers:
            return
        dangling = [(self.new_ids[key],) for key in sorted(self.pending_managers)]
        # row_hash NULL: the next import compares these users field by field and links the manager if it exists.
        self.conn.executemany("UPDATE users SET manager_id = NULL, row_hash = NULL WHERE manager_id = ?", dangling)

    def suspend_absent(self, keys_in_file: Collection[str], known: list[str] | None = None) -> None:
        """Full mode: suspend the active users whose key is not in the file (rejected rows' keys are). ``known``:
        their keys, when plan_suspensions already found them in the same store."""
        existing = self.existing
        if known is not None:
            absent = sorted((key, user_id_of(existing[key])) for key in known)
        else:
            absent = sorted(
                (key, user_id_of(packed))
                for key, packed in existing.items()
                if packed[8:9] == b"a" and key not in keys_in_file
            )
        if not absent:
            return
        self.touched.update(user_id for _, user_id in absent)
        self.conn.executemany(
            "UPDATE users SET status = ?, row_hash = NULL, updated_at = ? WHERE id = ?",
            [(SUSPENDED, self.now_param, user_id) for _, user_id in absent],
        )
        self.conn.insert(
            "user_audit",
            AUDIT_COLUMNS,
            [(user_id, self.job_id, "status", ACTIVE, SUSPENDED, self.now_param) for _, user_id in absent],
        )
        self._record_outcomes([(None, key, Outcome.SUSPENDED.value) for key, _ in absent])
        self.counts.suspended += len(absent)
        for key, _ in absent:
            self.on_outcome(RowOutcome(None, key, Outcome.SUSPENDED, "absent from this full file"))
