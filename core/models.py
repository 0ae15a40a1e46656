"""The tables of one environment's database."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    APPLIED = "applied"
    HELD = "held"
    REJECTED = "rejected"
    FAILED = "failed"
    DUPLICATE = "duplicate"


class ImportJob(Base):
    """One completed upload of a User Data file, from the moment it is spooled until it is processed."""

    __tablename__ = "import_jobs"
    __table_args__ = (UniqueConstraint("source_key", name="uq_import_jobs_source_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    spool_path: Mapped[str] = mapped_column(String(1024))
    # device:inode of the upload/ entry while it waits; cleared when the import takes the file. Unique, so the FTP
    # hook, the watcher and a second node can never queue one completed file twice.
    source_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    received_via: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(64), nullable=True)
    remote_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Filled in by the import (migration 0002).
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rows_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows_created: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows_updated: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows_unchanged: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows_reactivated: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows_suspended: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows_error: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    archive_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# --- the user store (migration 0003) -------------------------------------------------------------------------------
#
# Written only by ingest.apply.UserStore, in one transaction per file, with bulk statements (executemany on SQLite,
# COPY on PostgreSQL). Integer surrogate keys everywhere so that the wide text keys appear once; the narrow link
# tables (memberships, custom values, per-row outcomes) are WITHOUT ROWID on SQLite, clustered on the primary key they
# are always read by. Indexes exist only where something queries: users by (client, employee_id), audit by user.


class UserStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class User(Base):
    """One LMS user of one client, keyed by ``employee_id`` within the client.

    ``row_hash`` is a 64-bit digest of what the last import wrote for the user: the record's cells as the file wrote
    them, with how its columns map onto the template (see ingest.reader.FingerprintedRecords and ingest.apply). A
    re-import compares it before anything else, so an unchanged user costs one dict lookup. Anything else that edits a
    user must set it to NULL (the next import then compares field by field).
    """

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("client", "employee_id", name="uq_users_client_employee_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64))
    employee_id: Mapped[str] = mapped_column(String(255))
    username: Mapped[str | None] = mapped_column(String(255), nullable=True)
    first_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    email: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=UserStatus.ACTIVE)
    # The manager link: a user of the same client. Deferred, so that one file can name a manager on a later line.
    manager_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", deferrable=True, initially="DEFERRED"), nullable=True
    )
    start_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    end_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    phone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_title: Mapped[str | None] = mapped_column(String(255), nullable=True)
    row_hash: Mapped[bytes | None] = mapped_column(LargeBinary(8), nullable=True)
    created_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # no FK: history outlives jobs
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GroupType(Base):
    """A kind of group a client declares in its template (Department, Location, ...); created on first use."""

    __tablename__ = "group_types"
    __table_args__ = (UniqueConstraint("client", "name", name="uq_group_types_client_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))


class Group(Base):
    """One group of a group type (the "Sales" Department); created the first time a file names it."""

    __tablename__ = "user_groups"
    __table_args__ = (UniqueConstraint("group_type_id", "name", name="uq_user_groups_type_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_type_id: Mapped[int] = mapped_column(Integer, ForeignKey("group_types.id"))
    name: Mapped[str] = mapped_column(String(255))


class Membership(Base):
    """A user's group of one group type: at most one per user and type (the primary key says so)."""

    __tablename__ = "memberships"
    __table_args__ = {"sqlite_with_rowid": False}

    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    group_type_id: Mapped[int] = mapped_column(Integer, ForeignKey("group_types.id"), primary_key=True)
    group_id: Mapped[int] = mapped_column(Integer, ForeignKey("user_groups.id"))


class CustomField(Base):
    """A custom field a client's template declares ("Cost Centre"); created on first use."""

    __tablename__ = "custom_fields"
    __table_args__ = (UniqueConstraint("client", "name", name="uq_custom_fields_client_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))


class CustomValue(Base):
    """A user's value of one custom field (an empty cell stores no row)."""

    __tablename__ = "custom_values"
    __table_args__ = {"sqlite_with_rowid": False}

    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    field_id: Mapped[int] = mapped_column(Integer, ForeignKey("custom_fields.id"), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class UserAudit(Base):
    """One change to one user: a field (``first_name``), a group (``group:Department``) or a custom field
    (``custom:Cost Centre``), with the old and new values as text and the import job that made it.

    Creating a user writes no audit rows (the user row records ``created_job_id`` and ``created_at``); every later
    change does, suspensions and reactivations included. ``job_id`` has no foreign key: history outlives purged jobs.
    """

    __tablename__ = "user_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    field: Mapped[str] = mapped_column(String(255))
    old_value: Mapped[str | None] = mapped_column(Text, nullable=True)
    new_value: Mapped[str | None] = mapped_column(Text, nullable=True)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ImportOutcome(Base):
    """The per-row outcome of an import job for every row that changed something: updated, reactivated and
    suspended users, in the order the result file lists them (``seq``).

    Created rows are not repeated here (``users.created_job_id`` names them) and unchanged rows are only counted
    (``import_jobs.rows_unchanged``): storing a row per unchanged user would cost a write per row for nothing.
    """

    __tablename__ = "import_outcomes"
    __table_args__ = {"sqlite_with_rowid": False}

    job_id: Mapped[int] = mapped_column(Integer, ForeignKey("import_jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    line: Mapped[int | None] = mapped_column(Integer, nullable=True)
    employee_id: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
