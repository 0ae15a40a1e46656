"""What the export side remembers between runs: generated report files and claimed scheduled runs.

``ReportRun``: one generated report file, from staging in the outbox to delivery into the client's ``reports/``
folder. Unique per (client, report, scheduled_for), so a scheduled generation happens once however many nodes fire
it; a manual ``lcsync report run`` has ``scheduled_for`` NULL and may happen any number of times.

``ScheduleRun``: one firing of one scheduled job. Several ``lcsync serve`` nodes may share one database: the node
whose insert of (job, fire_time) succeeds runs the job, the others see the unique constraint and stand aside.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models import Base, utcnow


class ReportRunStatus(enum.StrEnum):
    STAGED = "staged"
    DELIVERED = "delivered"
    FAILED = "failed"


class ScheduleRunStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ReportRun(Base):
    """One generated report file: ``{name}_{YYYYMMDD}_{HHMMSS}.{ext}``, staged in the outbox, then delivered."""

    __tablename__ = "report_runs"
    __table_args__ = (
        UniqueConstraint("client", "report", "scheduled_for", name="uq_report_runs_client_report_scheduled_for"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64))
    report: Mapped[str] = mapped_column(String(128))
    file_name: Mapped[str] = mapped_column(String(255))
    outbox_path: Mapped[str] = mapped_column(String(1024))  # relative to data_dir
    rows: Mapped[int] = mapped_column(Integer, default=0)
    # The fire time (UTC) this run is for; NULL for a manual run, which the unique constraint then never limits.
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    generated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delivered_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=ReportRunStatus.STAGED, index=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class ScheduleRun(Base):
    """One firing of one scheduled job (``deliver``, ``generate:acme/compliance_report``, ``retention``)."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("job", "fire_time", name="uq_schedule_runs_job_fire_time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(255))
    fire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the UTC instant of the scheduled fire
    node: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=ScheduleRunStatus.RUNNING)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
