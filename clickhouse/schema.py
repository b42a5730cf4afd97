"""Ordered migrations from `clickhouse/migrations/`, each applied once."""

import time
from pathlib import Path

from clickhouse.backends import Backend

MIGRATIONS = Path(__file__).parent / "migrations"


def statements(text: str) -> list[str]:
    """The statements of a migration file: `;`-terminated, `--` comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def migrate(
    backend: Backend, raw_days: int, aggregate_days: int, audit_days: int = 400
) -> list[str]:
    """Apply the migrations not applied yet, in file-name order; the names applied now."""
    if raw_days <= 0 or aggregate_days <= 0 or audit_days <= 0:
        raise ValueError("retention must be a positive number of days")
    backend.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version String, applied Int64) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in backend.rows("SELECT version FROM schema_migrations")}
    applied = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.stem in done:
            continue
        # only these are substituted: `{name:Type}` is ClickHouse's own parameter syntax
        text = (
            path.read_text()
            .replace("{raw_days}", str(int(raw_days)))
            .replace("{aggregate_days}", str(int(aggregate_days)))
            .replace("{audit_days}", str(int(audit_days)))
        )
        for sql in statements(text):
            backend.execute(sql)
        backend.insert(
            "schema_migrations", ("version", "applied"), [(path.stem, int(time.time() * 1000))]
        )
        applied.append(path.stem)
    retention(backend, {"raw": raw_days, "aggregate": aggregate_days, "audit": audit_days})
    return applied


# table -> (time column, which retention applies)
RETENTION = {
    "raw_pings": ("ts", "raw"),
    "presence": ("day", "aggregate"),
    "door_events": ("ts", "aggregate"),
    "audit": ("ts", "audit"),
    "space_hours": ("hour", "aggregate"),
    "space_days": ("day", "aggregate"),
}


def retention(backend: Backend, days_of: dict[str, int]) -> None:
    """Set each table's TTL to the configured retention (`days_of` kind, it may have changed
    since the table was made); existing parts are trimmed by the next merges, not by a rewrite
    now."""
    for table, (column, kind) in RETENTION.items():
        days = int(days_of[kind])
        backend.execute(
            f"ALTER TABLE {table} MODIFY TTL toDateTime(intDiv({column}, 1000)) "
            f"+ INTERVAL {days} DAY SETTINGS materialize_ttl_after_modify = 0"
        )
