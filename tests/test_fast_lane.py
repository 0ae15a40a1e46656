"""The re-import fast lane on SQLite and PostgreSQL: one read of the store per import (ingest.snapshot) and records
digested before they are converted (ingest.reader.FingerprintedRecords), so that an unchanged user costs a lookup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import template as template_dict
from sqlalchemy import text

import ingest.apply
import ingest.snapshot
from core.config import TemplateConfig
from core.db import Database
from core.errors import InputFileError
from ingest.apply import ApplyCounts, UserStore
from ingest.reader import open_user_file
from ingest.rows import Outcome, RowOutcome, UserRow
from ingest.snapshot import load_snapshot, user_id_of
from ingest.validate import validate

HEADER = "Employee ID,First Name,Last Name,Email,Status,Manager ID,Start Date,Department,Location,Position,Cost Centre"


def row(key: str, first: str = "Ann", status: str = "Active", manager: str = "", dept: str = "Sales") -> str:
    return f"{key},{first},Smith,{key.lower()}@example.com,{status},{manager},,{dept},Melbourne,,CC1"


@pytest.fixture
def template() -> TemplateConfig:
    return TemplateConfig(**template_dict())


def write(path: Path, *rows: str) -> Path:
    path.write_text("\r\n".join([HEADER, *rows]) + "\r\n", encoding="utf-8")
    return path


def import_file(
    store: UserStore, template: TemplateConfig, path: Path, client: str = "acme"
) -> tuple[ApplyCounts, list[RowOutcome]]:
    """What the worker does with a file: validate against the store, plan the hold, apply."""
    validation = validate(open_user_file(path, template), store.manager_map(client))
    store.plan_suspensions(client, validation.keys_in_file)
    seen: list[RowOutcome] = []
    return store.apply(client, template, validation, None, seen.append), seen


def first_names(database: Database) -> dict[str, str]:
    with database.engine.connect() as connection:
        return dict(connection.execute(text("SELECT employee_id, first_name FROM users")).all())


def test_the_snapshot_holds_every_user_as_the_store_does_across_id_ranges(
    database: Database, template: TemplateConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = UserStore(database, batch_size=2)
    odd = "E\x1e5"  # the separator of the keys' aggregate: that range is read row by row
    rows = [
        UserRow(1, "B1", {"employee_id": "B1", "first_name": "Boss", "status": "active"}),
        *[UserRow(2 + i, f"S{i}", {"employee_id": f"S{i}", "manager_id": "B1"}) for i in range(4)],
        UserRow(9, odd, {"employee_id": odd, "status": "suspended", "manager_id": "S0"}),
    ]

    class Rows:
        keys_in_file = frozenset(r.key for r in rows)

        def valid_rows(self) -> Iterator[UserRow]:
            return iter(rows)

    store.apply("acme", template.model_copy(update={"mode": "delta"}), Rows(), None, lambda _: None)
    store.apply("globex", template.model_copy(update={"mode": "delta"}), Rows(), None, lambda _: None)
    monkeypatch.setattr(ingest.snapshot, "RANGE", 2)  # several ranges, one of them with the odd key
    snapshot = load_snapshot(database.engine, "acme")
    assert dict(snapshot) == {"B1": None, **{f"S{i}": "B1" for i in range(4)}, odd: "S0"}
    with database.engine.connect() as connection:
        stored = connection.execute(
            text("SELECT employee_id, id, status, row_hash FROM users WHERE client = 'acme'")
        ).all()
    assert len(stored) == len(snapshot.users) == 6
    for key, user_id, status, row_hash in stored:
        packed = snapshot.users[key]
        assert user_id_of(packed) == user_id
        assert packed[8:9] == (b"a" if status == "active" else b"s")
        assert packed[:8] == bytes(row_hash)
    assert sorted(snapshot.active_keys()) == ["B1", "S0", "S1", "S2", "S3"]
    assert snapshot.version[0] == 6


def test_an_identical_file_leaves_every_user_unchanged_by_digest_alone(
    tmp_path: Path, database: Database, template: TemplateConfig
) -> None:
    store = UserStore(database, batch_size=2)
    path = write(tmp_path / "acme_users.csv", row("E1"), row("E2", manager="E1"), row("E3", manager="E1"))
    counts, _ = import_file(store, template, path)
    assert counts.created == 3
    # Behind the importer's back (the model says such a writer must clear row_hash; this one does not): the digest
    # still matches, so the file's rows are not converted nor compared, and the edit stays.
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE users SET first_name = 'Edited' WHERE employee_id = 'E2'"))
    counts, outcomes = import_file(store, template, path)
    assert (counts.unchanged, counts.updated) == (3, 0)
    assert [o.outcome for o in outcomes] == [Outcome.UNCHANGED] * 3
    assert first_names(database)["E2"] == "Edited"
    # Clearing row_hash, as the model asks of other writers, makes the next import compare and repair the user.
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE users SET row_hash = NULL WHERE employee_id = 'E2'"))
    counts, outcomes = import_file(store, template, path)
    assert (counts.unchanged, counts.updated) == (2, 1)
    assert [(o.key, o.outcome) for o in outcomes if o.outcome != Outcome.UNCHANGED] == [("E2", Outcome.UPDATED)]
    assert first_names(database)["E2"] == "Ann"


def test_the_same_values_written_differently_are_compared_once_then_known(
    tmp_path: Path, database: Database, template: TemplateConfig
) -> None:
    store = UserStore(database)
    counts, _ = import_file(store, template, write(tmp_path / "a.csv", row("E1"), row("E2")))
    assert counts.created == 2

    def digests() -> dict[str, bytes]:
        with database.engine.connect() as connection:
            rows = connection.execute(text("SELECT employee_id, row_hash FROM users")).all()
        return {key: bytes(digest) for key, digest in rows}

    before = digests()
    respelled = write(tmp_path / "b.csv", row("E1", status=" ACTIVE "), row("E2", first=" Ann"))
    counts, _ = import_file(store, template, respelled)
    assert (counts.unchanged, counts.updated) == (2, 0)
    after = digests()
    assert all(after[key] != before[key] for key in before)  # the digests of the new spelling are kept
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM user_audit")).scalar_one() == 0


def test_a_store_changed_after_validation_is_read_again_by_the_apply(
    tmp_path: Path, database: Database, template: TemplateConfig
) -> None:
    store = UserStore(database)
    path = write(tmp_path / "acme_users.csv", row("E1"), row("E2", first="Bea"))
    validation = validate(open_user_file(path, template), store.manager_map("acme"))
    store.plan_suspensions("acme", validation.keys_in_file)
    # Another import of the client commits between this one's validation and its apply.
    other = UserStore(database)
    counts, _ = import_file(other, template, write(tmp_path / "other.csv", row("E2"), row("E3")))
    assert counts.created == 2
    seen: list[RowOutcome] = []
    counts = store.apply("acme", template, validation, None, seen.append)
    assert [(o.key, o.outcome) for o in seen] == [
        ("E1", Outcome.CREATED),
        ("E2", Outcome.UPDATED),
        ("E3", Outcome.SUSPENDED),
    ]
    assert first_names(database) == {"E1": "Ann", "E2": "Bea", "E3": "Ann"}


def test_a_file_changed_between_validation_and_apply_is_refused_and_nothing_applied(
    tmp_path: Path, database: Database, template: TemplateConfig
) -> None:
    store = UserStore(database)
    path = write(tmp_path / "acme_users.csv", row("E1"), row("E2"))
    validation = validate(open_user_file(path, template), store.manager_map("acme"))
    write(path, row("E1"), row("E2").replace("e2@example.com", "not-an-email"))
    with pytest.raises(InputFileError, match="changed while it was being imported"):
        store.apply("acme", template, validation, None, lambda _: None)
    assert first_names(database) == {}


@pytest.mark.parametrize(
    ("header", "rows"),
    [
        (HEADER, [row("E1", first='"Ann, Jr"'), row("E2")]),  # quotes: the csv module's cells are digested
        (HEADER + ",Badge", [row("E1") + ",B1", row("E2") + ",B2"]),  # a column the template ignores: its cells
        (HEADER, [row("E1"), row("E2")]),  # neither: the lines themselves
    ],
)
def test_every_way_of_reading_a_file_knows_an_unchanged_user_and_a_changed_one(
    tmp_path: Path, database: Database, template: TemplateConfig, header: str, rows: list[str]
) -> None:
    store = UserStore(database)
    path = tmp_path / "acme_users.csv"
    path.write_text("\r\n".join([header, *rows]) + "\r\n", encoding="utf-8")
    counts, _ = import_file(store, template, path)
    assert counts.created == 2
    counts, _ = import_file(store, template, path)
    assert (counts.unchanged, counts.updated) == (2, 0)
    path.write_text("\r\n".join([header, rows[0], rows[1].replace("Ann", "Bea")]) + "\r\n", encoding="utf-8")
    counts, _ = import_file(store, template, path)
    assert (counts.unchanged, counts.updated) == (1, 1)
    assert first_names(database) == {"E1": "Ann, Jr" if '"' in rows[0] else "Ann", "E2": "Bea"}


def test_a_file_of_many_new_users_is_written_by_the_writer_thread_with_the_same_outcome(
    tmp_path: Path, database: Database, template: TemplateConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest.apply, "WRITER_FROM", 2)  # any file of two new users or more
    store = UserStore(database, batch_size=3)
    rows = [row(f"E{i}", manager="E0" if i else "") for i in range(8)]
    counts, _ = import_file(store, template, write(tmp_path / "acme_users.csv", *rows))
    assert counts.created == 8
    counts, _ = import_file(store, template, write(tmp_path / "acme_users.csv", *rows[:7], row("E7", first="Bea")))
    assert (counts.unchanged, counts.updated) == (7, 1)
    with database.engine.connect() as connection:
        managed = connection.execute(
            text("SELECT count(*) FROM users u JOIN users m ON m.id = u.manager_id WHERE m.employee_id = 'E0'")
        ).scalar_one()
        members = connection.execute(text("SELECT count(*) FROM memberships")).scalar_one()
    assert (managed, members) == (6, 16)  # E7 no longer names a manager


def test_a_large_import_on_postgresql_leaves_the_planner_the_tables_new_sizes(
    tmp_path: Path, database: Database, template: TemplateConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without it, an import right after a large one (before autovacuum's analyze) reads memberships by user id with
    a scan of the whole table per chunk: a re-import of a million users took three times as long."""
    if database.engine.dialect.name != "postgresql":
        pytest.skip("ANALYZE matters to PostgreSQL's planner; SQLite's plans here use the primary keys as they are")
    monkeypatch.setattr(ingest.apply, "STATISTICS_FROM", 3)
    store = UserStore(database)

    def planned_rows(table: str) -> float:
        with database.engine.connect() as connection:
            return float(connection.execute(text(f"SELECT reltuples FROM pg_class WHERE relname = '{table}'")).one()[0])

    import_file(store, template, write(tmp_path / "a.csv", row("E1"), row("E2")))
    assert planned_rows("memberships") <= 0  # two new users: below the threshold, never analyzed
    import_file(store, template, write(tmp_path / "b.csv", *[row(f"E{i}") for i in range(1, 6)]))
    assert planned_rows("memberships") == 10  # three more new users: the statistics count all 5 x 2 memberships
    assert planned_rows("users") == 5
