"""user store: users, group types, groups, memberships, custom fields and values, audit history, row outcomes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

See core.models for what each table is for. Memberships, custom values and outcomes are WITHOUT ROWID on SQLite:
they are narrow, always read by their primary key, and written in bulk in primary-key order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("employee_id", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255), nullable=True),
        sa.Column("first_name", sa.String(255), nullable=True),
        sa.Column("last_name", sa.String(255), nullable=True),
        sa.Column("email", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column(
            "manager_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_users_manager_id", deferrable=True, initially="DEFERRED"),
            nullable=True,
        ),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("phone", sa.String(64), nullable=True),
        sa.Column("job_title", sa.String(255), nullable=True),
        sa.Column("row_hash", sa.LargeBinary(8), nullable=True),
        sa.Column("created_job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("client", "employee_id", name="uq_users_client_employee_id"),
    )
    op.create_table(
        "group_types",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.UniqueConstraint("client", "name", name="uq_group_types_client_name"),
    )
    op.create_table(
        "user_groups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "group_type_id",
            sa.Integer(),
            sa.ForeignKey("group_types.id", name="fk_user_groups_group_type_id"),
            nullable=False,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.UniqueConstraint("group_type_id", "name", name="uq_user_groups_type_name"),
    )
    op.create_table(
        "memberships",
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_memberships_user_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "group_type_id",
            sa.Integer(),
            sa.ForeignKey("group_types.id", name="fk_memberships_group_type_id"),
            primary_key=True,
        ),
        sa.Column(
            "group_id", sa.Integer(), sa.ForeignKey("user_groups.id", name="fk_memberships_group_id"), nullable=False
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "custom_fields",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.UniqueConstraint("client", "name", name="uq_custom_fields_client_name"),
    )
    op.create_table(
        "custom_values",
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_custom_values_user_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "field_id",
            sa.Integer(),
            sa.ForeignKey("custom_fields.id", name="fk_custom_values_field_id"),
            primary_key=True,
        ),
        sa.Column("value", sa.Text(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "user_audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_user_audit_user_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("field", sa.String(255), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_user_audit_user_id", "user_audit", ["user_id"])
    op.create_table(
        "import_outcomes",
        sa.Column(
            "job_id",
            sa.Integer(),
            sa.ForeignKey("import_jobs.id", name="fk_import_outcomes_job_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("employee_id", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    for table in (
        "import_outcomes",
        "user_audit",
        "custom_values",
        "custom_fields",
        "memberships",
        "user_groups",
        "group_types",
        "users",
    ):
        op.drop_table(table)
