"""Retention: offline rows older than ``privacy.retention_days`` are removed.

Covers the offline feature parts of every view (user-keyed or not: aggregates were
computed from users' events too) and the feedback and exposure logs, row by row on
their event time, with the same atomic part-file rewrite erasure uses; and the
user-keyed rows of the SQLite online store not updated within the retention (a user
who stopped using the app; the view TTL only hides such rows from serving). Tombstones are
kept as long as a late event can still arrive (the longer of Kafka retention and the
offline retention, plus a day), then forgotten. Kafka enforces its own retention
(``kafka.retention_hours``, set on the topics by ``sightline stack``); docs/privacy.md
explains how the two are aligned.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from privacy._parts import remove_rows
from privacy._tombstones import Tombstones

_DAY_MS = 86_400_000


@dataclass(frozen=True)
class PurgeReport:
    cutoff: str
    """ISO time; rows with an event time before it were removed."""
    retention_days: int
    stores: tuple[tuple[str, str, int, int, int], ...]
    """(store, directory, rows removed, files rewritten, files deleted)."""
    tombstones_pruned: int
    dry_run: bool
    duration_s: float

    @property
    def rows_removed(self) -> int:
        return sum(s[2] for s in self.stores)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["rows_removed"] = self.rows_removed
        return out


def purge_expired(settings, *, now_ms: int | None = None, dry_run: bool = False, progress=None) -> PurgeReport:
    """Remove offline rows older than ``settings.privacy.retention_days`` (relative to ``now_ms``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from features import EVENT_KINDS, TIMESTAMP_FIELD, VIEWS, event_log_dir, offline_dir

    start = time.perf_counter()
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    days = settings.privacy.retention_days
    cutoff_ms = now_ms - days * _DAY_MS
    cutoff = pa.scalar(datetime.fromtimestamp(cutoff_ms / 1000, tz=timezone.utc), pa.timestamp("us", tz="UTC"))

    targets = [(f"feast_offline:{v.name}", offline_dir(settings.feast_dir, v.name), TIMESTAMP_FIELD) for v in VIEWS]
    targets += [(f"event_log_{k}", event_log_dir(settings.data_dir, k), "event_time") for k in EVENT_KINDS]
    stores = []
    for name, directory, column in targets:
        def older(t, c=column):
            col = t[c]
            if col.type != cutoff.type:
                col = pc.cast(col, cutoff.type)
            return pc.less(col, cutoff)

        res = remove_rows(directory, [column], older, dry_run=dry_run)
        stores.append((name, str(directory), res.rows_removed, res.files_rewritten, res.files_deleted))
        if progress is not None:
            progress(1)
    from privacy._online import purge_online_sqlite

    online = purge_online_sqlite(settings, cutoff_ms, dry_run=dry_run)
    if online is not None:
        stores.append(("feast_online_sqlite:user views", online.location, online.rows, 0, 0))
    horizon_ms = max(settings.kafka.retention_hours * 3_600_000, days * _DAY_MS) + _DAY_MS
    pruned = 0 if dry_run else Tombstones(settings).prune(now_ms - horizon_ms)
    return PurgeReport(datetime.fromtimestamp(cutoff_ms / 1000, tz=timezone.utc).isoformat(), days, tuple(stores),
                       pruned, dry_run, round(time.perf_counter() - start, 4))


def purge_targets() -> int:
    """How many directories a purge visits (for progress bars)."""
    from features import EVENT_KINDS, VIEWS

    return len(VIEWS) + len(EVENT_KINDS)
