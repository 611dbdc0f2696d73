"""The SQL store of experiment definitions (same database as the campaigns).

Own SQLAlchemy table ``experiment_definitions``; every write bumps a store-wide
``revision`` so ``ExperimentCache`` can tell with one tiny query whether to reload.
Lifecycle: draft → running → stopped. While running, the split (salt, layer, buckets,
unit, arms, weights) and the arms' parameters cannot change; a stopped experiment
cannot restart. Both cases mean: create a new experiment.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from experiments._definitions import Experiment, parse_experiment
from experiments.errors import (
    ExperimentExists,
    ExperimentImmutable,
    ExperimentNotFound,
    ExperimentStoreUnavailable,
    ExperimentValidationError,
    LayerConflict,
)

log = logging.getLogger(__name__)

TABLE = "experiment_definitions"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class ExperimentStore:
    """CRUD and lifecycle of experiments in a SQLAlchemy database (SQLite or PostgreSQL)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        import sqlalchemy as sa

        self.url = url
        self._sa = sa
        try:
            self._engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        except Exception as exc:  # bad URL or missing driver
            raise ExperimentStoreUnavailable(f"cannot open the experiment store {url!r}: {exc}; check campaigns.url") from exc
        self._meta = sa.MetaData()
        self._table = sa.Table(
            TABLE, self._meta,
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("layer", sa.String(64), nullable=False, index=True),
            sa.Column("status", sa.String(16), nullable=False, index=True),
            sa.Column("definition", sa.Text, nullable=False),
            sa.Column("revision", sa.Integer, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True)),
            sa.Column("stopped_at", sa.DateTime(timezone=True)),
        )
        if create:
            self._create()

    def _create(self, attempts: int = 3) -> None:
        """Create the table if it is missing. Two processes opening a fresh database at once
        (``sightline serve`` twice, or a server and the CLI) both see no table and both
        create it: the loser's CREATE fails with "already exists", and its retry finds the
        table and does nothing."""
        for attempt in range(attempts):
            try:
                self._run(lambda conn: self._meta.create_all(conn))
                return
            except ExperimentStoreUnavailable as exc:
                cause = str(exc.__cause__ or exc).lower()
                raced = any(word in cause for word in ("already exists", "duplicate", "locked", "unique"))
                if not raced or attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    @classmethod
    def from_settings(cls, settings) -> "ExperimentStore":
        """The store in ``settings.campaign_db_url`` (creates the data directory for SQLite)."""
        url = settings.campaign_db_url
        if url.startswith("sqlite:///"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(url)

    def close(self) -> None:
        self._engine.dispose()

    # -- plumbing ------------------------------------------------------------------
    def _run(self, fn: Callable, write: bool = True):
        from sqlalchemy.exc import OperationalError, InterfaceError

        try:
            with (self._engine.begin() if write else self._engine.connect()) as conn:
                return fn(conn)
        except (OperationalError, InterfaceError) as exc:
            raise ExperimentStoreUnavailable(
                f"the experiment store {self._engine.url.render_as_string(hide_password=True)} is unavailable: "
                f"{exc.orig if hasattr(exc, 'orig') else exc}; check that the database is up and campaigns.url is right"
            ) from exc

    def _next_revision(self, conn) -> int:
        sa = self._sa
        current = conn.execute(sa.select(sa.func.max(self._table.c.revision))).scalar()
        return int(current or 0) + 1

    def _row_to_experiment(self, row) -> Experiment:
        data = json.loads(row.definition)
        data.update(status=row.status, version=row.revision, created_at=_utc(row.created_at),
                    started_at=_utc(row.started_at), stopped_at=_utc(row.stopped_at))
        return parse_experiment(data)

    def _get(self, conn, experiment_id: str):
        row = conn.execute(self._sa.select(self._table).where(self._table.c.id == experiment_id)).first()
        if row is None:
            raise ExperimentNotFound(f"experiment {experiment_id!r} does not exist; see `sightline experiments list`")
        return row

    # -- reads -----------------------------------------------------------------------
    def get(self, experiment_id: str) -> Experiment:
        return self._run(lambda conn: self._row_to_experiment(self._get(conn, experiment_id)), write=False)

    def list(self, status: str | None = None) -> list[Experiment]:
        sa = self._sa

        def q(conn):
            stmt = sa.select(self._table).order_by(self._table.c.created_at, self._table.c.id)
            if status:
                stmt = stmt.where(self._table.c.status == status)
            return [self._row_to_experiment(r) for r in conn.execute(stmt)]

        return self._run(q, write=False)

    def revision(self) -> int:
        """Store-wide revision; changes whenever any experiment changes."""
        sa = self._sa
        return int(self._run(lambda conn: conn.execute(sa.select(sa.func.max(self._table.c.revision))).scalar() or 0,
                             write=False))

    # -- writes ----------------------------------------------------------------------
    def create(self, experiment: Experiment) -> Experiment:
        """Store a new experiment as a draft."""
        sa = self._sa

        def tx(conn):
            exists = conn.execute(sa.select(self._table.c.id).where(self._table.c.id == experiment.id)).first()
            if exists:
                raise ExperimentExists(f"experiment {experiment.id!r} already exists; pick a new id "
                                       f"(or `sightline experiments update` a draft)")
            now = _now()
            conn.execute(self._table.insert().values(
                id=experiment.id, layer=experiment.layer, status="draft",
                definition=json.dumps(experiment.definition(), sort_keys=True),
                revision=self._next_revision(conn), created_at=now, updated_at=now))
            return self._row_to_experiment(self._get(conn, experiment.id))

        return self._run(tx)

    def update(self, experiment: Experiment) -> Experiment:
        """Replace a definition. Drafts may change freely; running ones only their description."""
        def tx(conn):
            row = self._get(conn, experiment.id)
            current = self._row_to_experiment(row)
            if current.status == "stopped":
                raise ExperimentImmutable(f"experiment {experiment.id!r} is stopped and cannot change; "
                                          "create a new experiment (new id) instead")
            if current.status == "running":
                changed = [name for name in ("salt", "layer", "buckets", "unit_type", "request_fallback", "arms",
                                             "control", "primary_metric")
                           if getattr(current, name) != getattr(experiment, name)]
                if current.split_signature() != experiment.split_signature() or changed:
                    raise ExperimentImmutable(
                        f"experiment {experiment.id!r} is running; its salt, splits and arms cannot change "
                        f"(changed: {', '.join(changed) or 'split'}). Stop it and create a new experiment "
                        "with a new id and salt for the new split")
            conn.execute(self._table.update().where(self._table.c.id == experiment.id).values(
                layer=experiment.layer, definition=json.dumps(experiment.definition(), sort_keys=True),
                revision=self._next_revision(conn), updated_at=_now()))
            return self._row_to_experiment(self._get(conn, experiment.id))

        return self._run(tx)

    def start(self, experiment_id: str) -> Experiment:
        """draft → running, refusing a bucket overlap with a running experiment of the same layer."""
        sa = self._sa

        def tx(conn):
            exp = self._row_to_experiment(self._get(conn, experiment_id))
            if exp.status == "running":
                return exp
            if exp.status == "stopped":
                raise ExperimentImmutable(f"experiment {experiment_id!r} was stopped and cannot restart "
                                          "(its units already saw the arms); create a new experiment with a new id and salt")
            rows = conn.execute(sa.select(self._table).where(
                (self._table.c.layer == exp.layer) & (self._table.c.status == "running"))).all()
            for other in (self._row_to_experiment(r) for r in rows):
                if exp.buckets[0] < other.buckets[1] and other.buckets[0] < exp.buckets[1]:
                    raise LayerConflict(
                        f"experiment {exp.id!r} buckets {list(exp.buckets)} overlap running experiment "
                        f"{other.id!r} buckets {list(other.buckets)} in layer {exp.layer!r}; stop {other.id!r}, "
                        "or give this experiment free buckets or another layer")
            now = _now()
            conn.execute(self._table.update().where(self._table.c.id == experiment_id).values(
                status="running", started_at=now, updated_at=now, revision=self._next_revision(conn)))
            return self._row_to_experiment(self._get(conn, experiment_id))

        return self._run(tx)

    def stop(self, experiment_id: str) -> Experiment:
        """running (or draft) → stopped."""
        def tx(conn):
            exp = self._row_to_experiment(self._get(conn, experiment_id))
            if exp.status == "stopped":
                return exp
            now = _now()
            conn.execute(self._table.update().where(self._table.c.id == experiment_id).values(
                status="stopped", stopped_at=now, updated_at=now, revision=self._next_revision(conn)))
            return self._row_to_experiment(self._get(conn, experiment_id))

        return self._run(tx)


class ExperimentCache:
    """Running experiments for serving, reloaded without restart.

    ``running()`` returns an immutable snapshot; at most every ``refresh_s`` one caller
    checks the store's revision (one small query) and reloads only when it changed. If
    the store is down after the first load, the last snapshot keeps serving and
    ``refresh_failures`` counts the misses.
    """

    def __init__(self, store: ExperimentStore, refresh_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if refresh_s <= 0:
            raise ExperimentValidationError(f"refresh_s must be > 0, got {refresh_s}")
        self._store = store
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: tuple[Experiment, ...] | None = None
        self._revision = -1
        self._checked_at = float("-inf")
        self.refresh_failures = 0
        self.reloads = 0

    @property
    def revision(self) -> int:
        return self._revision

    def refresh(self, force: bool = False) -> bool:
        """Check the store now; True if the snapshot changed."""
        revision = self._store.revision()
        if not force and revision == self._revision:
            return False
        snapshot = tuple(self._store.list(status="running"))
        self._snapshot, self._revision = snapshot, revision
        self.reloads += 1
        log.debug("experiment cache reloaded: revision %s, %d running", revision, len(snapshot))
        return True

    def running(self) -> tuple[Experiment, ...]:
        """The running experiments (first call loads and raises if the store is down)."""
        if self._snapshot is None:
            with self._lock:
                if self._snapshot is None:
                    self.refresh(force=True)
                    self._checked_at = self._clock()
            return self._snapshot  # type: ignore[return-value]
        now = self._clock()
        if now - self._checked_at >= self._refresh_s and self._lock.acquire(blocking=False):
            try:
                self._checked_at = now
                self.refresh()
            except ExperimentStoreUnavailable as exc:
                self.refresh_failures += 1
                log.warning("experiment cache keeps revision %s: %s", self._revision, exc)
            finally:
                self._lock.release()
        return self._snapshot
