"""Helpers for the report tests: a configuration with reports, users seeded straight into a database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from core.config import Config, load_config
from core.db import Database
from core.models import User
from core.runs import ReportRun, ScheduleRun

REPORT = {
    "name": "staff_list",
    "source": "users",
    "columns": ["employee_id", "first_name", "last_name", "email", "start_date"],
    "schedule": "daily",
    "format": "csv",
    "environments": ["production"],
}


def report_config(
    write_config: Callable[..., Path], *reports: dict[str, Any], database_url: str | None = None
) -> Config:
    """The two-client test configuration with ``reports`` for acme (``REPORT`` when none are given); production's
    database is ``database_url`` when given."""

    def edit(data: dict[str, Any]) -> None:
        data["clients"]["acme"]["reports"] = [dict(item) for item in (reports or (REPORT,))]
        if database_url is not None:
            data["environments"]["production"]["database"] = database_url

    return load_config(write_config(edit))


def open_database(config: Config, env: str = "production") -> Database:
    database = Database(env, config.database_url(env))
    database.upgrade()
    return database


def seed_users(database: Database, client: str = "acme", count: int = 3, first_name: str = "First") -> None:
    rows = [
        {
            "client": client,
            "employee_id": f"{i:06d}",
            "first_name": f"{first_name}{i}",
            "last_name": f"Last{i}",
            "email": f"user{i}@example.com",
            "status": "active",
            "start_date": date(2026, 1, 1 + i % 28),
        }
        for i in range(count)
    ]
    with database.engine.begin() as connection:
        connection.execute(insert(User), rows)


def report_runs(database: Database) -> list[ReportRun]:
    with database.session() as session:
        return list(session.scalars(select(ReportRun).order_by(ReportRun.id)))


def schedule_runs(database: Database) -> list[ScheduleRun]:
    with database.session() as session:
        return list(session.scalars(select(ScheduleRun).order_by(ScheduleRun.id)))
