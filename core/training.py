"""Courses and completions: the training records that reports of source ``completions`` read.

The LMS writes these into each environment's database; ``lcsync completions import`` (ingest.completions) and
``lcsync demo`` (lcsync.demo) load them too. Both tables sit on the user store (core.models): a completion belongs to
one user and one course of the same client, and goes with its user when the user row is deleted.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, DateTime, ForeignKey, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models import Base, utcnow


class CompletionStatus(enum.StrEnum):
    COMPLETED = "completed"
    IN_PROGRESS = "in_progress"
    NOT_STARTED = "not_started"
    EXPIRED = "expired"


class Course(Base):
    """One course of one client, keyed by ``code`` within the client; created on first use."""

    __tablename__ = "courses"
    __table_args__ = (UniqueConstraint("client", "code", name="uq_courses_client_code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))


class Completion(Base):
    """A user's record in one course: at most one per user and course (re-imports update it in place)."""

    __tablename__ = "completions"
    __table_args__ = (UniqueConstraint("user_id", "course_id", name="uq_completions_user_course"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    course_id: Mapped[int] = mapped_column(Integer, ForeignKey("courses.id"))
    completion_status: Mapped[str] = mapped_column(String(16))
    completed_at: Mapped[date | None] = mapped_column(Date, nullable=True)
    expires_at: Mapped[date | None] = mapped_column(Date, nullable=True)
    # Numeric(7, 2): 0.00 to 99999.99 exactly; a percentage needs no more, and exact values print as typed.
    score: Mapped[Decimal | None] = mapped_column(Numeric(7, 2), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
