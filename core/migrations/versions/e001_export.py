"""export: courses, completions, report runs, schedule runs

Revision ID: e001
Revises:
Depends on: 0003 (the users table)
Create Date: 2026-11-28

A branch of its own (label "export") so that the import side's numbering never collides with it; core.db.upgrade
applies "heads", every branch. See core.training and core.runs for what each table is for.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "e001"
down_revision = None
branch_labels = ("export",)
depends_on = "0003"


def upgrade() -> None:
    op.create_table(
        "courses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.UniqueConstraint("client", "code", name="uq_courses_client_code"),
    )
    op.create_table(
        "completions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_completions_user_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "course_id", sa.Integer(), sa.ForeignKey("courses.id", name="fk_completions_course_id"), nullable=False
        ),
        sa.Column("completion_status", sa.String(16), nullable=False),
        sa.Column("completed_at", sa.Date(), nullable=True),
        sa.Column("expires_at", sa.Date(), nullable=True),
        sa.Column("score", sa.Numeric(7, 2), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_id", "course_id", name="uq_completions_user_course"),
    )
    op.create_index("ix_completions_client", "completions", ["client"])
    op.create_table(
        "report_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("report", sa.String(128), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("outbox_path", sa.String(1024), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_path", sa.String(1024), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.UniqueConstraint("client", "report", "scheduled_for", name="uq_report_runs_client_report_scheduled_for"),
    )
    op.create_index("ix_report_runs_status", "report_runs", ["status"])
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job", sa.String(255), nullable=False),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.UniqueConstraint("job", "fire_time", name="uq_schedule_runs_job_fire_time"),
    )


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_table("report_runs")
    op.drop_index("ix_completions_client", "completions")
    op.drop_table("completions")
    op.drop_table("courses")
