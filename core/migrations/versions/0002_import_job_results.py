"""import jobs: counts, heartbeat, result and archive paths, release

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COUNTS = (
    "rows_total",
    "rows_created",
    "rows_updated",
    "rows_unchanged",
    "rows_reactivated",
    "rows_suspended",
    "rows_error",
)


def upgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        for name in COUNTS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.add_column(sa.Column("result_path", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("archive_path", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_import_jobs_client_status", "import_jobs", ["client", "status"])


def downgrade() -> None:
    op.drop_index("ix_import_jobs_client_status", "import_jobs")
    with op.batch_alter_table("import_jobs") as batch:
        for name in ("released_at", "archive_path", "result_path", *COUNTS, "heartbeat_at"):
            batch.drop_column(name)
