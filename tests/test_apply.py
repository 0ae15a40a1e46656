"""The user store's applier (ingest.apply.UserStore) on SQLite and PostgreSQL: SPEC 5 "Applying"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import template as template_dict
from sqlalchemy import text

from core.config import TemplateConfig
from core.db import Database
from core.models import ImportJob
from ingest.apply import ApplyCounts, UserStore
from ingest.rows import Outcome, RowError, RowOutcome, UserRow

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "users": "client, employee_id",
    "group_types": "client, name",
    "user_groups": "id",
    "memberships": "user_id, group_type_id",
    "custom_fields": "client, name",
    "custom_values": "user_id, field_id",
    "user_audit": "id",
    "import_outcomes": "job_id, seq",
}


@dataclass
class StandInValidation:
    """What ingest.validate.Validation hands the applier: valid rows in file order, and every key of the file."""

    rows: list[UserRow]
    bad: list[UserRow] = field(default_factory=list)

    @property
    def keys_in_file(self) -> frozenset[str]:
        return frozenset(r.key for r in [*self.rows, *self.bad])

    @property
    def bad_lines(self) -> frozenset[int]:
        return frozenset(r.line for r in self.bad)

    @property
    def errors(self) -> list[RowError]:
        return [RowError(r.line, None, "bad row", r.key) for r in self.bad]

    @property
    def total_rows(self) -> int:
        return len(self.rows) + len(self.bad)

    @property
    def valid_count(self) -> int:
        return len(self.rows)

    def valid_rows(self) -> Iterator[UserRow]:
        return iter(self.rows)


def user(
    line: int,
    key: str,
    first: str = "First",
    last: str | None = None,
    *,
    email: str | None = None,
    status: str | None = "active",
    manager: str | None = None,
    start: date | None = None,
    department: str | None = "Sales",
    location: str | None = "Melbourne",
    position: str | None = None,
    cost_centre: str | None = None,
) -> UserRow:
    """A row as the reader produces it for the conftest template (every template column present)."""
    return UserRow(
        line=line,
        key=key,
        fields={
            "employee_id": key,
            "first_name": first,
            "last_name": last or f"Last{key}",
            "email": email or f"{key.lower()}@example.com",
            "status": status,
            "manager_id": manager,
            "start_date": start,
        },
        groups={"Department": department, "Location": location, "Position": position},
        custom={"Cost Centre": cost_centre},
    )


@pytest.fixture
def template() -> TemplateConfig:
    return TemplateConfig(**template_dict())


@pytest.fixture
def store(database: Database) -> UserStore:
    return UserStore(database, batch_size=3)


def new_job(database: Database, client: str = "acme") -> int:
    with database.session() as session:
        job = ImportJob(
            client=client, filename="acme_users.csv", spool_path="/x", size=1, received_via="test", status="running"
        )
        session.add(job)
        session.commit()
        return job.id


def run(
    store: UserStore,
    template: TemplateConfig,
    rows: list[UserRow],
    *,
    bad: list[UserRow] | None = None,
    job_id: int | None = None,
    client: str = "acme",
    dry_run: bool = False,
    on_outcome: Callable[[RowOutcome], None] | None = None,
) -> tuple[ApplyCounts, list[RowOutcome]]:
    seen: list[RowOutcome] = []
    counts = store.apply(
        client,
        template,
        StandInValidation(rows, bad or []),
        job_id,
        on_outcome or seen.append,
        dry_run=dry_run,
    )
    return counts, seen


def query(database: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with database.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text(sql), params)]


def users(database: Database) -> dict[str, dict[str, Any]]:
    with database.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT u.*, m.employee_id AS manager_key FROM users u LEFT JOIN users m ON m.id = u.manager_id "
                "ORDER BY u.employee_id"
            )
        )
        return {r.employee_id: dict(r._mapping) for r in rows}


def groups_of(database: Database, key: str) -> dict[str, str]:
    return dict(
        query(
            database,
            "SELECT t.name, g.name FROM memberships ms JOIN users u ON u.id = ms.user_id "
            "JOIN group_types t ON t.id = ms.group_type_id JOIN user_groups g ON g.id = ms.group_id "
            "WHERE u.employee_id = :key",
            key=key,
        )
    )


def custom_of(database: Database, key: str) -> dict[str, str]:
    return dict(
        query(
            database,
            "SELECT f.name, v.value FROM custom_values v JOIN users u ON u.id = v.user_id "
            "JOIN custom_fields f ON f.id = v.field_id WHERE u.employee_id = :key",
            key=key,
        )
    )


def audit(database: Database) -> list[tuple[Any, ...]]:
    return query(
        database,
        "SELECT u.employee_id, a.field, a.old_value, a.new_value, a.job_id FROM user_audit a "
        "JOIN users u ON u.id = a.user_id ORDER BY a.id",
    )


def dump(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every user-store table, in a stable order."""
    return {table: query(database, f"SELECT * FROM {table} ORDER BY {order}") for table, order in TABLES.items()}


def outcomes(seen: list[RowOutcome]) -> list[tuple[int | None, str, str]]:
    return [(o.line, o.key, o.outcome.value) for o in seen]


FIVE = [user(2, "E1"), user(3, "E2"), user(4, "E3"), user(5, "E4"), user(6, "E5")]


# --- creating, updating, leaving alone ------------------------------------------------------------------------------


def test_new_keys_are_created_with_username_defaulting_to_email(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    rows = [user(2, "007", "Ann", "Lee", start=date(2024, 2, 29)), user(3, "E2", "Bob", email="bob@x.org")]
    counts, seen = run(store, template, rows)
    assert counts == ApplyCounts(created=2)
    assert outcomes(seen) == [(2, "007", "created"), (3, "E2", "created")]
    stored = users(database)
    assert stored["007"]["first_name"] == "Ann"
    assert stored["007"]["last_name"] == "Lee"
    assert stored["007"]["username"] == "007@example.com"
    assert str(stored["007"]["start_date"]) == "2024-02-29"
    assert stored["E2"]["username"] == "bob@x.org"
    assert stored["E2"]["status"] == "active"
    assert stored["E2"]["client"] == "acme"
    assert audit(database) == []  # a creation is recorded on the user (created_job_id), not field by field


def test_a_mapped_username_wins_over_the_email(store: UserStore, database: Database) -> None:
    data = template_dict()
    data["columns"]["Login"] = "username"
    row = user(2, "E1")
    row.fields["username"] = "ann.lee"
    run(store, TemplateConfig(**data), [row])
    assert users(database)["E1"]["username"] == "ann.lee"
    row = user(2, "E1")
    row.fields["username"] = None  # an empty Login cell: the email again
    counts, _ = run(store, TemplateConfig(**data), [row])
    assert counts.updated == 1
    assert users(database)["E1"]["username"] == "e1@example.com"


def test_reimport_of_the_same_file_changes_nothing(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    run(store, template, FIVE)
    before = dump(database)
    counts, seen = run(store, template, FIVE)
    assert counts == ApplyCounts(unchanged=5)
    assert [o.outcome for o in seen] == [Outcome.UNCHANGED] * 5
    assert dump(database) == before


def test_only_changed_fields_are_updated_and_audited(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    first_job, second_job = new_job(database), new_job(database)
    run(store, template, FIVE, job_id=first_job)
    before = users(database)
    changed = [*FIVE]
    changed[1] = user(3, "E2", "Robert", start=date(2020, 1, 1))
    counts, seen = run(store, template, changed, job_id=second_job)
    assert counts == ApplyCounts(updated=1, unchanged=4)
    assert outcomes(seen)[1] == (3, "E2", "updated")
    after = users(database)
    assert after["E2"]["first_name"] == "Robert"
    assert str(after["E2"]["start_date"]) == "2020-01-01"
    assert after["E2"]["updated_at"] > before["E2"]["updated_at"]
    for key in ("E1", "E3", "E4", "E5"):
        assert after[key] == before[key]
    assert audit(database) == [
        ("E2", "first_name", "First", "Robert", second_job),
        ("E2", "start_date", None, "2020-01-01", second_job),
    ]
    assert query(database, "SELECT job_id, seq, line, employee_id, outcome FROM import_outcomes ORDER BY seq") == [
        (second_job, 1, 3, "E2", "updated")
    ]


def test_a_column_missing_from_the_file_leaves_the_stored_value_alone(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    run(store, template, [user(2, "E1", start=date(2021, 5, 1))])
    row = user(2, "E1", "Changed")
    del row.fields["start_date"]
    counts, _ = run(store, template, [row])
    assert counts.updated == 1
    assert str(users(database)["E1"]["start_date"]) == "2021-05-01"
    assert [a[1] for a in audit(database)] == ["first_name"]


def test_an_empty_cell_clears_the_stored_value(store: UserStore, database: Database, template: TemplateConfig) -> None:
    run(store, template, [user(2, "E1", start=date(2021, 5, 1))])
    run(store, template, [user(2, "E1", start=None)])
    assert users(database)["E1"]["start_date"] is None
    assert audit(database) == [("E1", "start_date", "2021-05-01", None, None)]


# --- suspensions and reactivations ----------------------------------------------------------------------------------


def test_full_mode_suspends_active_users_absent_from_the_file(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    run(store, template, FIVE)
    before = users(database)
    job = new_job(database)
    counts, seen = run(store, template, FIVE[:3], job_id=job)
    assert counts == ApplyCounts(unchanged=3, suspended=2)
    assert outcomes(seen)[3:] == [(None, "E4", "suspended"), (None, "E5", "suspended")]
    after = users(database)
    assert [after[k]["status"] for k in ("E1", "E2", "E3", "E4", "E5")] == ["active"] * 3 + ["suspended"] * 2
    assert after["E4"]["updated_at"] > before["E4"]["updated_at"]
    assert audit(database) == [
        ("E4", "status", "active", "suspended", job),
        ("E5", "status", "active", "suspended", job),
    ]
    # Already suspended users are not suspended again.
    counts, _ = run(store, template, FIVE[:3])
    assert counts == ApplyCounts(unchanged=3)


def test_delta_mode_suspends_nobody(store: UserStore, database: Database) -> None:
    delta = TemplateConfig(**{**template_dict(), "mode": "delta"})
    run(store, delta, FIVE)
    counts, seen = run(store, delta, FIVE[:2])
    assert counts == ApplyCounts(unchanged=2)
    assert len(seen) == 2
    assert {u["status"] for u in users(database).values()} == {"active"}


def test_users_whose_rows_were_rejected_are_not_suspended(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    run(store, template, FIVE)
    counts, _ = run(store, template, FIVE[:3], bad=[user(5, "E4", email="not-an-email")])
    assert counts == ApplyCounts(unchanged=3, suspended=1)
    stored = users(database)
    assert stored["E4"]["status"] == "active"
    assert stored["E4"]["email"] == "e4@example.com"
    assert stored["E5"]["status"] == "suspended"


def test_a_suspended_user_listed_as_active_again_is_reactivated(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    run(store, template, FIVE)
    run(store, template, FIVE[:4])
    job = new_job(database)
    counts, seen = run(store, template, FIVE, job_id=job)
    assert counts == ApplyCounts(unchanged=4, reactivated=1)
    assert outcomes(seen)[4] == (6, "E5", "reactivated")
    assert users(database)["E5"]["status"] == "active"
    assert audit(database)[-1] == ("E5", "status", "suspended", "active", job)
    assert query(database, "SELECT outcome FROM import_outcomes WHERE job_id = :j", j=job) == [("reactivated",)]


def test_a_row_may_suspend_its_user(store: UserStore, database: Database, template: TemplateConfig) -> None:
    run(store, template, FIVE)
    counts, _ = run(store, template, [*FIVE[:4], user(6, "E5", status="suspended")])
    assert counts == ApplyCounts(unchanged=4, updated=1)
    assert users(database)["E5"]["status"] == "suspended"
    counts, _ = run(store, template, [*FIVE[:4], user(6, "E5", status="suspended")])
    assert counts == ApplyCounts(unchanged=5)


# --- groups, custom fields, managers --------------------------------------------------------------------------------


def test_groups_are_created_on_first_use_and_memberships_replaced(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    run(store, template, [user(2, "E1", department="Sales", location="Perth"), user(3, "E2", department="Sales")])
    assert groups_of(database, "E1") == {"Department": "Sales", "Location": "Perth"}
    assert query(database, "SELECT count(*) FROM user_groups") == [(2 + 1,)]  # Sales, Perth, Melbourne
    assert sorted(n for (n,) in query(database, "SELECT name FROM group_types")) == [
        "Department",
        "Location",
        "Position",
    ]
    counts, _ = run(
        store,
        template,
        [user(2, "E1", department="Support", location=None, position="Lead"), user(3, "E2", department="Sales")],
    )
    assert counts == ApplyCounts(updated=1, unchanged=1)
    assert groups_of(database, "E1") == {"Department": "Support", "Position": "Lead"}
    assert groups_of(database, "E2") == {"Department": "Sales", "Location": "Melbourne"}
    assert audit(database) == [
        ("E1", "group:Department", "Sales", "Support", None),
        ("E1", "group:Location", "Perth", None, None),
        ("E1", "group:Position", None, "Lead", None),
    ]
    assert users(database)["E2"]["updated_at"] < users(database)["E1"]["updated_at"]


def test_groups_and_fields_belong_to_their_client(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    run(store, template, [user(2, "E1", cost_centre="CC1")], client="acme")
    run(store, template, [user(2, "E1", cost_centre="CC2")], client="globex")
    assert query(database, "SELECT count(*) FROM group_types") == [(6,)]
    assert query(database, "SELECT count(*) FROM custom_fields") == [(2,)]
    assert query(database, "SELECT client, count(*) FROM users GROUP BY client ORDER BY client") == [
        ("acme", 1),
        ("globex", 1),
    ]
    # A full file of one client never suspends another client's users.
    run(store, template, [user(2, "E9")], client="globex")
    assert users(database)["E1"]["status"] in ("active", "suspended")
    assert query(database, "SELECT client, status FROM users WHERE employee_id = 'E1' ORDER BY client") == [
        ("acme", "active"),
        ("globex", "suspended"),
    ]


def test_custom_fields_are_stored_changed_and_cleared(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    run(store, template, [user(2, "E1", cost_centre="CC100"), user(3, "E2")])
    assert custom_of(database, "E1") == {"Cost Centre": "CC100"}
    assert custom_of(database, "E2") == {}
    run(store, template, [user(2, "E1", cost_centre="CC200"), user(3, "E2", cost_centre="CC300")])
    assert custom_of(database, "E1") == {"Cost Centre": "CC200"}
    run(store, template, [user(2, "E1", cost_centre=None), user(3, "E2", cost_centre="CC300")])
    assert custom_of(database, "E1") == {}
    assert [a[:4] for a in audit(database)] == [
        ("E1", "custom:Cost Centre", "CC100", "CC200"),
        ("E2", "custom:Cost Centre", None, "CC300"),
        ("E1", "custom:Cost Centre", "CC200", None),
    ]


@pytest.mark.parametrize("order", ["manager first", "manager later"])
def test_managers_are_linked_whichever_comes_first_in_the_file(
    store: UserStore, database: Database, template: TemplateConfig, order: str
) -> None:
    boss, staff = user(0, "B1"), [user(0, f"S{i}", manager="B1") for i in range(4)]
    ordered = [boss, *staff] if order == "manager first" else [*staff, boss]
    rows = [user(i + 2, r.key, manager=r.fields["manager_id"]) for i, r in enumerate(ordered)]  # type: ignore[arg-type]
    counts, _ = run(store, template, rows)
    assert counts == ApplyCounts(created=5)
    stored = users(database)
    assert {k: v["manager_key"] for k, v in stored.items()} == {"B1": None, **{f"S{i}": "B1" for i in range(4)}}
    assert store.manager_map("acme") == {"B1": None, **{f"S{i}": "B1" for i in range(4)}}
    assert store.manager_map("globex") == {}
    counts, _ = run(store, template, rows)
    assert counts == ApplyCounts(unchanged=5)


def test_a_manager_change_is_linked_and_audited(store: UserStore, database: Database, template: TemplateConfig) -> None:
    run(store, template, [user(2, "B1"), user(3, "S1", manager="B1")])
    # S1 moves to a manager who is new and comes later in the file.
    counts, seen = run(store, template, [user(2, "B1"), user(3, "S1", manager="B2"), user(4, "B2")])
    assert counts == ApplyCounts(created=1, updated=1, unchanged=1)
    assert outcomes(seen) == [(2, "B1", "unchanged"), (3, "S1", "updated"), (4, "B2", "created")]
    assert users(database)["S1"]["manager_key"] == "B2"
    assert audit(database) == [("S1", "manager_id", "B1", "B2", None)]
    run(store, template, [user(2, "B1"), user(3, "S1"), user(4, "B2")])
    assert users(database)["S1"]["manager_key"] is None


def test_a_manager_whose_row_never_came_is_left_unlinked(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    # A stand-in validator let through a reference to a rejected row: the store stays consistent.
    counts, _ = run(store, template, [user(2, "S1", manager="B1")], bad=[user(3, "B1", email="bad")])
    assert counts == ApplyCounts(created=1)
    assert users(database)["S1"]["manager_key"] is None
    counts, _ = run(store, template, [user(2, "S1", manager="B1"), user(3, "B1")])
    assert counts == ApplyCounts(created=1, updated=1)
    assert users(database)["S1"]["manager_key"] == "B1"


# --- planning, dry runs, transactions -------------------------------------------------------------------------------


def test_plan_suspensions_counts_active_users_and_absent_ones(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    assert store.plan_suspensions("acme", frozenset()) == (0, 0)
    run(store, template, FIVE)
    run(store, template, FIVE[:4])  # E5 suspended
    assert store.plan_suspensions("acme", frozenset({"E1", "E2", "E9"})) == (4, 2)
    assert store.plan_suspensions("acme", frozenset()) == (4, 4)
    assert store.plan_suspensions("globex", frozenset()) == (0, 0)


def test_dry_run_reports_the_same_outcomes_and_leaves_the_store_untouched(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    run(store, template, FIVE)
    before = dump(database)
    rows = [user(2, "E1", "Changed", department="New dept"), user(3, "E2"), user(4, "N1", manager="N2"), user(5, "N2")]
    dry_counts, dry_seen = run(store, template, rows, dry_run=True)
    assert dump(database) == before
    counts, seen = run(store, template, rows)
    assert dry_counts == counts == ApplyCounts(created=2, updated=1, unchanged=1, suspended=3)
    assert dry_seen == seen


def test_an_exception_mid_file_rolls_everything_back(
    store: UserStore, database: Database, template: TemplateConfig
) -> None:
    run(store, template, FIVE)
    before = dump(database)
    rows = [user(2, "E1", "Changed"), user(3, "E2", department="Other"), *[user(4 + i, f"N{i}") for i in range(8)]]

    def explode(outcome: RowOutcome) -> None:
        if outcome.key == "N5":  # third batch: earlier batches were already written
            raise RuntimeError("result file disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        run(store, template, rows, on_outcome=explode)
    assert dump(database) == before
    counts, _ = run(store, template, rows)
    assert counts == ApplyCounts(created=8, updated=2, suspended=3)


# --- a crash mid-apply ---------------------------------------------------------------------------------------------

CHILD = """
import sys, time
from pathlib import Path
sys.path[:0] = [sys.argv[3], sys.argv[4]]
from test_apply import StandInValidation, crash_rows, TemplateConfig, template_dict
from core.db import Database
from ingest.apply import UserStore

marker = Path(sys.argv[2])
def progress(done):
    if done >= 200:
        marker.write_text(str(done))
        time.sleep(600)  # the parent kills this process here, mid-transaction

store = UserStore(Database("test", sys.argv[1]), batch_size=100)
store.apply("acme", TemplateConfig(**template_dict()), StandInValidation(crash_rows()), None, lambda o: None,
            progress=progress)
"""


def crash_rows() -> list[UserRow]:
    """Known users changed, new users, managers: every kind of write the applier makes."""
    rows = [user(2 + i, f"E{i + 1}", "Renamed" if i % 2 else "First") for i in range(5)]
    rows += [user(10 + i, f"C{i:04}", manager="C0499", department=f"D{i % 7}", cost_centre="X") for i in range(500)]
    return rows


def test_a_process_killed_mid_apply_leaves_the_store_as_before(
    store: UserStore, database: Database, template: TemplateConfig, tmp_path: Path
) -> None:
    run(store, template, FIVE)
    before = dump(database)
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, database.url, str(marker), str(ROOT / "tests"), str(ROOT)],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the child ended before it was killed"
            assert time.monotonic() < deadline, "the child never got mid-apply"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert dump(database) == before
    # Applied again (the job is retried), the file lands exactly once.
    counts, _ = run(store, template, crash_rows())
    assert counts == ApplyCounts(created=500, updated=2, unchanged=3)
    assert query(database, "SELECT count(*) FROM users") == [(505,)]
    counts, _ = run(store, template, crash_rows())
    assert counts == ApplyCounts(unchanged=505)


# --- bulk paths ----------------------------------------------------------------------------------------------------


def test_a_large_file_across_many_batches_lands_like_a_small_one(database: Database, template: TemplateConfig) -> None:
    """Managers named batches before their row, groups created mid-file, changes and suspensions past batch edges."""
    rows = [
        user(2 + i, f"B{i:04}", manager=None if i == 0 else f"B{(i * 7 + 3) % 700:04}", department=f"D{i % 13}")
        for i in range(700)
    ]
    rows = [r for r in rows if r.fields["manager_id"] != r.key]
    big, small = UserStore(database, batch_size=64), UserStore(database, batch_size=100_000)
    counts, seen = run(big, template, rows, client="acme")
    assert counts.created == len(rows)
    again, _ = run(small, template, rows, client="globex")
    assert again == counts
    assert [o.key for o in seen] == [r.key for r in rows]
    changed = [
        user(r.line, r.key, "Changed", manager=r.fields["manager_id"]) if i % 50 == 0 else r for i, r in enumerate(rows)
    ]
    counts, _ = run(big, template, changed[:-10], client="acme")
    assert (counts.updated, counts.suspended) == (len(rows[:-10:50]), 10)
    names = dict(query(database, "SELECT employee_id, first_name FROM users WHERE client = 'acme'"))
    assert (names["B0050"], names["B0051"]) == ("Changed", "First")
    assert query(database, "SELECT count(*) FROM users WHERE manager_id IS NULL AND client = 'acme'") == [(1,)]


def test_references_are_checked_once_per_file_where_rows_are_not_checked_one_by_one(database: Database) -> None:
    from ingest.store_sql import store_connection

    conn = store_connection(database.engine)
    try:
        conn.begin()
        conn.check_references(lambda: {"user_groups": set(), "group_types": set()})
        if getattr(conn, "triggers_off", False):  # PostgreSQL with a role that may skip the per-row checks
            with pytest.raises(Exception, match="user_groups rows this file refers to do not exist"):
                conn.check_references(lambda: {"user_groups": {987654}})
        conn.rollback()
    finally:
        conn.close()
