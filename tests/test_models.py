"""The user store's schema (core.models, migration 0003) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from core.db import Database, upgrade
from core.models import Base, CustomField, CustomValue, Group, GroupType, Membership, User, UserAudit

USER_STORE_TABLES = {
    "users",
    "group_types",
    "user_groups",
    "memberships",
    "custom_fields",
    "custom_values",
    "user_audit",
    "import_outcomes",
}


def test_migrations_create_every_table_of_the_models(database: Database) -> None:
    tables = set(inspect(database.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert tables >= USER_STORE_TABLES


def test_migrations_match_the_models_column_for_column(database: Database) -> None:
    inspector = inspect(database.engine)
    for name in USER_STORE_TABLES:
        migrated = {c["name"] for c in inspector.get_columns(name)}
        assert migrated == set(Base.metadata.tables[name].columns.keys()), name


def test_downgrade_to_0002_removes_the_user_store_and_upgrade_restores_it(database: Database) -> None:
    from alembic import command
    from alembic.config import Config

    from core.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert not USER_STORE_TABLES & set(inspect(database.engine).get_table_names())
    upgrade(database.engine)
    assert set(inspect(database.engine).get_table_names()) >= USER_STORE_TABLES


def test_link_tables_are_without_rowid_on_sqlite(database: Database) -> None:
    if database.engine.dialect.name != "sqlite":
        pytest.skip("WITHOUT ROWID is SQLite's")
    with database.engine.connect() as connection:
        for table in ("memberships", "custom_values", "import_outcomes"):
            sql = connection.execute(text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}).scalar_one()
            assert "WITHOUT ROWID" in sql


def _user(client: str, key: str, **fields: object) -> User:
    return User(client=client, employee_id=key, status="active", **fields)


def test_an_employee_id_is_unique_within_a_client_only(database: Database) -> None:
    with database.session() as session:
        session.add_all([_user("acme", "007"), _user("globex", "007")])
        session.commit()
        session.add(_user("acme", "007"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_a_user_has_at_most_one_group_of_each_type(database: Database) -> None:
    with database.session() as session:
        user = _user("acme", "E1", start_date=date(2024, 1, 31))
        department = GroupType(client="acme", name="Department")
        session.add_all([user, department])
        session.flush()
        sales = Group(group_type_id=department.id, name="Sales")
        support = Group(group_type_id=department.id, name="Support")
        session.add_all([sales, support])
        session.flush()
        session.add(Membership(user_id=user.id, group_type_id=department.id, group_id=sales.id))
        session.commit()
        session.add(Membership(user_id=user.id, group_type_id=department.id, group_id=support.id))
        with pytest.raises(IntegrityError):
            session.commit()


def test_a_manager_must_be_a_stored_user_by_the_end_of_the_transaction(database: Database) -> None:
    with database.session() as session:
        session.add(_user("acme", "E1", manager_id=999))
        with pytest.raises(IntegrityError):
            session.commit()


def test_orm_reads_what_the_store_writes(database: Database) -> None:
    with database.session() as session:
        user = _user("acme", "E1", email="a@example.com", start_date=date(2024, 2, 29))
        field = CustomField(client="acme", name="Cost Centre")
        session.add_all([user, field])
        session.flush()
        session.add(CustomValue(user_id=user.id, field_id=field.id, value="CC1"))
        session.add(UserAudit(user_id=user.id, job_id=None, field="email", old_value=None, new_value="a@example.com"))
        session.commit()
    with database.session() as session:
        stored = session.scalars(select(User)).one()
        assert stored.start_date == date(2024, 2, 29)
        assert stored.created_at is not None
        assert session.scalars(select(CustomValue.value)).one() == "CC1"
        assert session.scalars(select(UserAudit.field)).one() == "email"
