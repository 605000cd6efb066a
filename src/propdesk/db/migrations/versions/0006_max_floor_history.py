"""The max-loss floor per trading day, so a trailing floor can be drawn as it moved.

``daily_stats.max_floor`` is the max-loss floor the engine held at the day's last evaluation (written with the
rest of the row by the engine role, under the same engine-only trigger). Older rows stay NULL: their history was
not kept, and the read model draws them with the first known value.

Revision ID: 0006
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE daily_stats ADD COLUMN max_floor numeric(28,10)"
        " CHECK (max_floor NOT IN ('NaN'::numeric, 'Infinity'::numeric, '-Infinity'::numeric))"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE daily_stats DROP COLUMN max_floor")
