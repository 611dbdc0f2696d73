"""One batch of raw Kafka records → DLQ, consent, state, features, online store.

``Pipeline`` knows nothing about consumer groups: ``IngestWorker`` feeds it records
and commits offsets after ``flush``. The order inside ``process`` is what makes a
replay harmless: (1) consent events update the consent table and erase withdrawn
users; (2) one state transaction de-duplicates by ``event_id``, adds the new events'
window buckets, marks the touched entities dirty and parks loggable feedback/exposure
events; (3) features of every touched entity (replayed ones too) are recomputed from
the stored buckets and written online. ``flush`` then writes offline parts and event
logs; only after it may the offsets be committed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import polars as pl

from features import VIEWS_BY_NAME, append_events
from streaming._codec import MESSAGE_TYPES, decode
from streaming._consent import Purposes, decide
from streaming._eventlog import exposure_rows, feedback_rows, logged_ids_since
from streaming._feast import FeatureSink
from streaming._state import StateStore
from streaming._windows import BUCKET_VIEWS, WindowParams, compute_features, to_buckets
from streaming.errors import InvalidMessage

log = logging.getLogger(__name__)

_PSEUDONYM_CACHE_MAX = 500_000
_USER_VIEWS = ("user_context", "user_engagement")

_CONTEXT_SCHEMA = {"event_id": pl.String, "ts": pl.Int64, "user_id": pl.String, "user_keyed": pl.Boolean,
                   "scene": pl.String, "objects": pl.List(pl.String), "intent_categories": pl.List(pl.String),
                   "categories": pl.List(pl.String)}
_FEEDBACK_SCHEMA = {"event_id": pl.String, "ts": pl.Int64, "user_id": pl.String, "user_keyed": pl.Boolean,
                    "type": pl.Int64, "item_id": pl.String, "campaign_id": pl.String, "category": pl.String,
                    "scene": pl.String, "spend": pl.Float64}


def _frame(rows: list[tuple], schema: dict) -> pl.DataFrame:
    """Row tuples → DataFrame via arrow (polars builds one Series per nested list otherwise)."""
    if not rows:
        return pl.DataFrame(schema=schema)
    import pyarrow as pa

    arrow_types = {pl.String: pa.string(), pl.Int64: pa.int64(), pl.Boolean: pa.bool_(), pl.Float64: pa.float64(),
                   pl.List(pl.String): pa.list_(pa.string())}
    columns = zip(*rows)
    return pl.from_arrow(pa.table({name: pa.array(col, type=arrow_types[dtype])
                                   for (name, dtype), col in zip(schema.items(), columns)}))


def offline_frame(view: str, frames: list[pl.DataFrame], tombstones) -> pl.DataFrame | None:
    """One flush's offline rows of ``view``: the buffered frames, one row per entity and time,
    without rows of users erased since they were computed (an erasure runs in another process)."""
    frames = [f for f in frames if f.height]
    if not frames:
        return None
    from features import VIEWS_BY_NAME

    key = VIEWS_BY_NAME[view].entity
    frame = pl.concat(frames, how="vertical_relaxed").unique(subset=[key, "event_timestamp"], keep="last",
                                                             maintain_order=True)
    if view not in _USER_VIEWS:
        return frame
    users = frame["user_id"].unique().to_list()
    erased = {u: at for u in users if (at := tombstones.erased_at(u)) is not None}
    if not erased:
        return frame
    at = pl.col("user_id").replace_strict(erased, default=None, return_dtype=pl.Int64)
    ts_ms = pl.col("event_timestamp").dt.epoch("ms")
    return frame.filter(at.is_null() | (ts_ms > at))


@dataclass
class Record:
    """The parts of a Kafka ``ConsumerRecord`` the pipeline reads (tests build these directly)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: list = field(default_factory=list)
    timestamp: int = -1


class DeadLetters(Protocol):
    def send(self, record, kind: str, error: InvalidMessage) -> None: ...


@dataclass
class BatchResult:
    """What one ``process`` call did; ``freshness_s`` has one value per stored event."""

    counts: Counter
    freshness_s: list[float]
    event_ts_ms: list[int]


class Pipeline:
    """Decode → validate → consent → de-duplicate → windows → online, for one worker."""

    def __init__(self, *, kinds_by_topic: dict[str, str], state: StateStore, sink: FeatureSink, dead_letters: DeadLetters,
                 matcher, data_dir: Path, worker_id: str = "0", params: WindowParams = WindowParams(),
                 max_message_bytes: int = 64 * 1024, clock: Callable[[], float] = time.time,
                 hmac_key: str | None = None, tombstones=None) -> None:
        """``hmac_key`` is ``settings.privacy.hmac_key`` (default: the development key of
        ``PrivacySettings``, as ``load_settings`` gives without a configured one);
        ``tombstones`` a ``privacy.Tombstones`` (default: the one under ``data_dir``)."""
        from privacy import Tombstones, tombstone_path

        if hmac_key is None:
            from sightline.settings import PrivacySettings

            hmac_key = PrivacySettings().hmac_key
        self.kinds_by_topic = kinds_by_topic
        self.state = state
        self.sink = sink
        self.dlq = dead_letters
        self.matcher = matcher
        self.data_dir = Path(data_dir)
        self.worker_id = worker_id
        self.params = params
        self.max_bytes = max_message_bytes
        self.clock = clock
        self._offline: dict[str, list[pl.DataFrame]] = {}
        self._offline_keys: dict[str, set[str]] = {}
        self._hmac_key = hmac_key
        self._pseudonyms: dict[str, str] = {}
        self.tombstones = tombstones if tombstones is not None else Tombstones(path=tombstone_path(self.data_dir))

    # ------------------------------------------------------------------ privacy
    def pseudonym(self, user_id: str) -> str:
        """``privacy.pseudonymize(user_id, hmac_key)`` (cached): the only form of a user id streaming stores.

        An empty id (anonymous feedback/exposures without personalization) stays empty."""
        if not user_id:
            return ""
        p = self._pseudonyms.get(user_id)
        if p is None:
            from privacy import pseudonymize

            if len(self._pseudonyms) >= _PSEUDONYM_CACHE_MAX:
                self._pseudonyms.clear()
            p = self._pseudonyms[user_id] = pseudonymize(user_id, self._hmac_key)
        return p

    def _pseudonymize(self, kind: str, msg) -> None:
        """Replace the app's ids in the decoded message, before anything is stored or logged."""
        msg.user_id = self.pseudonym(msg.user_id)
        if kind == "exposures" and msg.unit_type == "user" and msg.unit_id:
            # A user unit is the user: store the same pseudonym (serving already assigns on
            # it, so the analysis can re-derive the arm; a raw id from another producer is hashed).
            msg.unit_id = msg.user_id or self.pseudonym(msg.unit_id)

    # ------------------------------------------------------------------ per batch
    def process(self, records: list) -> BatchResult:
        counts: Counter = Counter()
        now_ms = int(self.clock() * 1000)
        good: dict[str, dict[str, tuple]] = {k: {} for k in MESSAGE_TYPES}
        decoded: Counter = Counter()
        erased = self.tombstones.current()
        kinds, max_bytes = self.kinds_by_topic, self.max_bytes
        for r in records:   # the per-event loop: ~1/3 of a worker's CPU, so lookups are hoisted
            kind = kinds[r.topic]
            try:
                msg = decode(kind, r.value, r.headers, max_bytes=max_bytes, now_ms=now_ms)
            except InvalidMessage as exc:
                self.dlq.send(r, kind, exc)
                counts[f"dlq.{kind}.{exc.reason}"] += 1
                continue
            decoded[kind] += 1
            self._pseudonymize(kind, msg)
            if erased and msg.user_id and msg.event_time_ms <= erased.get(msg.user_id, -1):
                counts[f"dropped.{kind}.erased"] += 1   # produced before the user's erasure: never re-create them
                continue
            same_kind = good[kind]
            if msg.event_id in same_kind:
                counts[f"duplicate.{kind}"] += 1
                continue
            same_kind[msg.event_id] = (r, msg)
        for kind, n in decoded.items():
            counts[f"in.{kind}"] += n

        self._apply_consent([m for _, m in good["consent"].values()], counts)

        users = {m.user_id for kind in ("context", "feedback", "exposures") for _, m in good[kind].values()}
        latest = self.state.consent(users) if users else {}
        ctx_rows, ctx_ts = self._context_rows(good["context"], latest, counts)
        fb_rows, fb_msgs, fb_ts = self._feedback_rows(good["feedback"], latest, counts)
        exposures = []
        for r, m in good["exposures"].values():
            d = decide("exposures", Purposes.of(m.consent), latest.get(m.user_id))
            if d.keep:
                exposures.append((r, m))
            else:
                counts["dropped.exposures.no_measurement"] += 1

        ctx = _frame(ctx_rows, _CONTEXT_SCHEMA)
        fb = _frame(fb_rows, _FEEDBACK_SCHEMA)
        buckets = to_buckets(ctx, fb)
        touched = buckets.select("view", "entity").unique()
        ids_ts = dict(zip(ctx["event_id"].to_list(), ctx["ts"].to_list()))
        ids_ts.update(zip(fb["event_id"].to_list(), fb["ts"].to_list()))
        ids_ts.update((m.event_id, m.event_time_ms) for _, m in exposures)
        with self.state.transaction() as db:
            new = self.state.unseen(db, list(ids_ts))
            counts["replayed"] += len(ids_ts) - len(new)
            if len(new) < len(ids_ts):   # a replay: only the events not seen before add to the buckets
                buckets = to_buckets(ctx.filter(pl.col("event_id").is_in(new)), fb.filter(pl.col("event_id").is_in(new)))
            self.state.add_buckets(db, buckets)
            self.state.mark_dirty(db, self.worker_id, touched.sort("view", "entity").iter_rows())
            # parked as the re-serialized message: it carries the pseudonym, never the app's id
            pending = [("feedback", m.event_id, now_ms, m.SerializeToString(), p, True) for r, m, p, log_it in fb_msgs
                       if log_it and m.event_id in new]
            pending += [("exposures", m.event_id, now_ms, m.SerializeToString(), False, True) for r, m in exposures
                        if m.event_id in new]
            self.state.add_pending(db, pending)
            self.state.mark_seen(db, sorted((i, ts) for i, ts in ids_ts.items() if i in new))
        counts["stored"] += len(new)
        self._recompute(touched)
        done = self.clock()
        stored_ts = ctx_ts + fb_ts
        return BatchResult(counts, [done - ts / 1000 for ts in stored_ts], stored_ts)

    def _apply_consent(self, events: list, counts: Counter) -> None:
        if not events:
            return
        withdrawn: set[str] = set()
        with self.state.transaction() as db:
            for m in sorted(events, key=lambda m: m.event_time_ms):
                purposes = Purposes.of(m.consent)
                self.state.set_consent(db, m.user_id, m.event_time_ms, purposes)
                if purposes.withdraws_profile:
                    withdrawn.add(m.user_id)   # also when replayed: erasing again is harmless
            # the latest stored consent decides (an older grant replayed after a withdrawal must not win)
            latest = self.state.consent(withdrawn) if withdrawn else {}
            withdrawn = {u for u in withdrawn if latest.get(u, Purposes()).withdraws_profile}
            if withdrawn:
                self.state.erase_user_state(db, sorted(withdrawn), keep_consent=True)
            self.state.mark_seen(db, [(m.event_id, m.event_time_ms) for m in events])
        counts["consent.updates"] += len(events)
        if withdrawn:
            self.sink.delete_users(sorted(withdrawn))
            for view in ("user_context", "user_engagement"):
                if view in self._offline:
                    self._offline[view] = [f.filter(~pl.col("user_id").is_in(withdrawn)) for f in self._offline[view]]
            counts["consent.erased_users"] += len(withdrawn)

    def _scene(self, scene: str, counts: Counter) -> str | None:
        if not scene:
            return None
        if self.matcher.match(scene).sensitive:
            counts["sensitive.scene"] += 1
            return None
        return scene

    def _context_rows(self, events: dict, latest: dict, counts: Counter):
        rows, stored_ts = [], []
        match = self.matcher.match
        for _, m in events.values():
            d = decide("context", Purposes.of(m.consent), latest.get(m.user_id))
            if not d.keep:
                counts["dropped.context.no_context"] += 1
                continue
            c = m.context
            objects, categories = [], []
            for label in c.objects:
                hit = match(label)
                if hit.sensitive:
                    counts["sensitive.object"] += 1
                    continue
                objects.append(label)
                categories.extend(hit.categories)
            intent = match(c.intent_text)
            if intent.sensitive:
                counts["sensitive.intent"] += 1
            categories.extend(intent.categories)
            rows.append((m.event_id, m.event_time_ms, m.user_id, d.user_keyed, self._scene(c.scene, counts), objects,
                         list(intent.categories), categories))
            stored_ts.append(m.event_time_ms)
            counts["kept.context"] += 1
            if not d.user_keyed:
                counts["kept.context.not_personalized"] += 1
        return rows, stored_ts

    def _feedback_rows(self, events: dict, latest: dict, counts: Counter):
        rows, msgs, stored_ts = [], [], []
        for r, m in events.values():
            event_purposes = Purposes.of(m.consent)
            d = decide("feedback", event_purposes, latest.get(m.user_id))
            if not d.keep:
                counts["dropped.feedback.no_context"] += 1
                continue
            category = m.category or None
            if category and self.matcher.is_sensitive(category):
                counts["sensitive.category"] += 1
                category = None
            rows.append((m.event_id, m.event_time_ms, m.user_id, d.user_keyed, int(m.type), m.item_id,
                         m.campaign_id or None, category, self._scene(m.context.scene, counts), m.spend))
            msgs.append((r, m, d.user_keyed, d.log))
            stored_ts.append(m.event_time_ms)
            counts["kept.feedback"] += 1
        return rows, msgs, stored_ts

    def _recompute(self, touched: pl.DataFrame) -> None:
        """Features of the touched entities from their stored buckets, written online and buffered
        for the offline store. A sink that ``recomputes`` a view (the writer process of
        ``FeastSink``, for the user-keyed views) is handed the entities instead: it reads the
        same committed buckets on the other core and buffers the offline rows itself."""
        remote = getattr(self.sink, "recomputes", None)
        for code, entities in touched.group_by("view"):
            view = BUCKET_VIEWS[code[0]]
            keys = entities["entity"].to_list()
            self._offline_keys.setdefault(code[0], set()).update(keys)
            if remote is not None and remote(view):
                self.sink.recompute(view, code[0], keys)
                continue
            # shared entities: computed and written under one host-wide lock, so the last row
            # written for an entity is computed from every commit before it (user-keyed views
            # are on one worker's partitions at a time and go to the sink's writer above)
            with nullcontext() if VIEWS_BY_NAME[view].user_keyed else self.state.shared_rows_lock():
                rows = compute_features(view, self.state.buckets(code[0], keys), self.params)
                self.sink.write_online(view, rows)
            self._offline.setdefault(view, []).append(rows)

    # ------------------------------------------------------------------ flush
    def recover(self) -> None:
        """After a crash: recompute the offline snapshots this worker still owed."""
        dirty = self.state.dirty(self.worker_id)
        if dirty:
            touched = pl.DataFrame([(v, e) for v, es in dirty.items() for e in es], schema=["view", "entity"], orient="row")
            log.info("worker %s: recomputing %d entities left dirty by a previous run", self.worker_id, touched.height)
            self._recompute(touched)

    def flush(self) -> Counter:
        """Write buffered offline snapshots and pending event-log rows; then offsets may be committed."""
        counts: Counter = Counter()
        for view, frames in self._offline.items():
            frame = offline_frame(view, frames, self.tombstones)
            if frame is not None:
                self.sink.write_offline(view, frame)
                counts[f"offline.{view}"] += frame.height
        self._offline.clear()
        flush_remote = getattr(self.sink, "flush_offline", None)
        if flush_remote is not None:   # the views the sink recomputes: written before the dirty marks go
            counts.update(flush_remote())
        if self._offline_keys:
            self.state.clear_dirty(self.worker_id, {k: sorted(v) for k, v in self._offline_keys.items()})
            self._offline_keys.clear()
        for kind in ("feedback", "exposures"):
            counts[f"logged.{kind}"] += self._flush_log(kind)
        return counts

    def _flush_log(self, kind: str) -> int:
        with self.state.event_log_lock():      # the parked rows are shared by the host's workers
            return self._write_parked(kind)

    def _write_parked(self, kind: str) -> int:
        pending = self.state.pending(kind)
        if not pending:
            return 0
        ids = [p[0] for p in pending]
        already = logged_ids_since(self.data_dir, kind, min(p[1] for p in pending) - 1000)
        todo = [p for p in pending if p[0] not in already]
        msgs = []
        if todo:
            cls = MESSAGE_TYPES[kind]
            for _, _, payload, personalization, measurement in todo:
                m = cls()
                m.ParseFromString(payload)
                if m.user_id and self.tombstones.drops(m.user_id, m.event_time_ms):
                    continue   # erased while parked
                msgs.append((m, bool(personalization), bool(measurement)))
            if kind == "feedback":
                cols = feedback_rows(msgs)
            else:
                cols = exposure_rows([m for m, _, _ in msgs])
            import pyarrow as pa

            from features import event_log_schema

            if msgs:
                append_events(self.data_dir, kind, pa.table(cols, schema=event_log_schema(kind)))
        self.state.clear_pending(kind, ids)
        return len(msgs)


