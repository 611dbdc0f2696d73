"""Erasure of one user from every store Sightline keeps, with a receipt.

Order matters: the tombstone is written first (durably), so an event racing the
deletion is dropped by ingestion rather than re-creating the user; then the online
store, the offline feature parts and the event logs are cleaned; then any in-process
erasers the caller registered (serving's frequency counters, streaming's local state)
run. Kafka is an immutable log: messages age out after ``kafka.retention_hours`` and
the tombstone drops them if they are replayed — the receipt says so.

The operator gives the app's user id; the stores hold its pseudonym (under the current
and, in a rotation window, the previous key). Stores written before pseudonymization
was applied may hold the app id itself, so that is searched too (``pseudonymous=False``).
The receipt and the audit log only ever show the pseudonym.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from privacy._parts import remove_rows
from privacy._pseudonym import pseudonym_candidates
from privacy._tombstones import Tombstones
from privacy.errors import InvalidUserId, StoreUnavailable

log = logging.getLogger(__name__)

Eraser = Callable[[Sequence[str]], int]
"""An extra store's eraser: given the ids to erase, deletes them and returns how many entries went."""

_MAX_ID = 256


@dataclass(frozen=True)
class StoreDeletion:
    """What one store lost: ``deleted`` counts rows (feature rows for the online store)."""

    store: str
    location: str
    deleted: int
    detail: str = ""


@dataclass(frozen=True)
class Receipt:
    """Proof of one erasure: per-store counts, the tombstone, how long it took."""

    receipt_id: str
    user_pseudonym: str
    """The current-key pseudonym; the app id never appears in a receipt."""
    erased_at_ms: int
    duration_s: float
    stores: tuple[StoreDeletion, ...]
    tombstoned: bool
    requested_by: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total_deleted(self) -> int:
        return sum(s.deleted for s in self.stores)

    def deleted(self, store: str) -> int:
        return sum(s.deleted for s in self.stores if s.store == store)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["total_deleted"] = self.total_deleted
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def receipts_path(data_dir: Path) -> Path:
    return Path(data_dir) / "privacy" / "receipts.jsonl"


def erasure_ids(settings, user_id: str, *, pseudonymous: bool = False) -> tuple[str, ...]:
    """Every id under which ``user_id`` may be stored (pseudonyms first)."""
    if not user_id or not user_id.strip():
        raise InvalidUserId("user id is empty; pass the id the app sent (--user)")
    if len(user_id) > _MAX_ID or any(c in user_id for c in "\t\n\r\x00"):
        raise InvalidUserId(f"user id is longer than {_MAX_ID} characters or has control characters; "
                            "pass the id exactly as the app sent it")
    if pseudonymous:
        return (user_id,)
    keys = [settings.privacy.hmac_key]
    if settings.privacy.previous_hmac_key:
        keys.append(settings.privacy.previous_hmac_key)
    return (*pseudonym_candidates(user_id, keys), user_id)


def _offline(settings, ids: Sequence[str]) -> list[StoreDeletion]:
    import pyarrow as pa
    import pyarrow.compute as pc

    from features import EVENT_KINDS, VIEWS, event_log_dir, offline_dir

    value_set = pa.array(list(ids), pa.string())
    out = []
    for view in VIEWS:
        if not view.user_keyed:
            continue
        directory = offline_dir(settings.feast_dir, view.name)
        res = remove_rows(directory, [view.entity], lambda t, c=view.entity: pc.is_in(t[c], value_set=value_set),
                          keep_empty=False)
        out.append(StoreDeletion("feast_offline", str(directory), res.rows_removed,
                                 f"{view.name}: {res.files_rewritten} part files rewritten, "
                                 f"{res.files_deleted} deleted of {res.files_scanned}"))
    for kind in EVENT_KINDS:
        directory = event_log_dir(settings.data_dir, kind)
        if kind == "exposures":
            cols = ["user_id", "unit_id"]

            def pred(t):
                return pc.or_(pc.is_in(t["user_id"], value_set=value_set), pc.is_in(t["unit_id"], value_set=value_set))
        else:
            cols = ["user_id"]

            def pred(t):
                return pc.is_in(t["user_id"], value_set=value_set)
        res = remove_rows(directory, cols, pred)
        out.append(StoreDeletion(f"event_log_{kind}", str(directory), res.rows_removed,
                                 f"{res.files_rewritten} part files rewritten, {res.files_deleted} deleted "
                                 f"of {res.files_scanned}"))
    return out


def _streaming_state(settings, ids: Sequence[str]) -> list[StoreDeletion]:
    """The ingest workers' local window buckets of the user (else a recompute could re-create features)."""
    import sqlite3

    try:
        from streaming import StateStore, state_path
    except ImportError:  # pragma: no cover - streaming is part of the product
        return []
    path = state_path(settings.data_dir)
    if not path.exists():
        return []
    count = 0
    try:  # count first (erase_user_state does not say how many rows went)
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as ro:
            marks = ",".join("?" * len(ids))
            count = ro.execute(f"SELECT count(*) FROM buckets WHERE entity IN ({marks})", list(ids)).fetchone()[0]
    except sqlite3.Error:
        count = 0
    state = StateStore(path)
    try:
        with state.transaction() as db:
            StateStore.erase_user_state(db, list(ids))
    finally:
        close = getattr(state, "close", None)
        if close:
            close()
    return [StoreDeletion("streaming_state", str(path), int(count), "user-keyed window buckets and dirty marks")]


def _frequency_caps(settings, ids: Sequence[str]) -> list[StoreDeletion]:
    """Serving's shared frequency-cap counts (SQLite file or Redis); an in-process store
    (``serving.frequency_store = memory``) is cleared by the running server's eraser instead."""
    kind = settings.frequency_store_kind
    if kind == "memory" or (kind == "sqlite" and not settings.frequency_store_path.exists()):
        return []
    from serving import frequency_store

    store = frequency_store(settings)
    try:
        deleted = sum(store.erase_user(i) for i in ids)
    finally:
        store.close()
    where = str(settings.frequency_store_path) if kind == "sqlite" else f"redis {settings.feast.redis_url}"
    return [StoreDeletion("serving_frequency_caps", where, int(deleted), "campaign entries of per-day impression counts")]


def erase_user(settings, user_id: str, *, pseudonymous: bool = False, requested_by: str = "",
               erasers: Mapping[str, Eraser] | None = None) -> Receipt:
    """Erase ``user_id`` (the app's id; ``pseudonymous=True`` if it is already the stored pseudonym).

    ``erasers`` adds in-process stores (name → eraser), e.g. a running server's
    frequency counters. Returns the ``Receipt``; it is also appended to
    ``<data_dir>/privacy/receipts.jsonl``.
    """
    from privacy._online import erase_online

    start = time.perf_counter()
    ids = erasure_ids(settings, user_id, pseudonymous=pseudonymous)
    erased_at = Tombstones(settings).add(ids[:-1] if not pseudonymous and len(ids) > 1 else ids)
    stores: list[StoreDeletion] = []
    failed: list[str] = []

    def online() -> list[StoreDeletion]:
        r = erase_online(settings, list(ids))
        return [StoreDeletion(r.store, r.location, r.rows, f"{r.entities} entity rows in {', '.join(r.views)}")]

    steps: list[tuple[str, Callable[[], list[StoreDeletion]]]] = [
        ("feast_online", online), ("offline files", lambda: _offline(settings, ids)),
        ("streaming_state", lambda: _streaming_state(settings, ids)),
        ("serving_frequency_caps", lambda: _frequency_caps(settings, ids)),
    ]
    for name, eraser in (erasers or {}).items():
        steps.append((name, lambda n=name, e=eraser: [StoreDeletion(n, "in-process", int(e(list(ids))))]))
    for name, step in steps:  # every store is attempted even if one fails; a retry is safe (idempotent)
        try:
            stores += step()
        except Exception as exc:  # noqa: BLE001 - reported in the receipt and raised below
            log.exception("erasure step %s failed", name)
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            stores.append(StoreDeletion(name, "", 0, f"FAILED: {type(exc).__name__}: {exc}"))
    notes = (
        f"kafka: messages are not rewritten; they expire after kafka.retention_hours="
        f"{settings.kafka.retention_hours} and the tombstone drops them on replay",
    )
    receipt = Receipt(
        receipt_id=uuid.uuid4().hex, user_pseudonym=ids[0], erased_at_ms=erased_at,
        duration_s=round(time.perf_counter() - start, 4), stores=tuple(stores), tombstoned=True,
        requested_by=requested_by, notes=notes + tuple(f"failed: {f}" for f in failed),
    )
    path = receipts_path(settings.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(receipt.to_json() + "\n")
    if failed:
        raise StoreUnavailable(f"erasure of {receipt.user_pseudonym} is incomplete ({'; '.join(failed)}); the "
                               f"tombstone is recorded and the other stores are clean — fix the store and run the "
                               f"erasure again (receipt {receipt.receipt_id})")
    log.info("erased user %s: %d rows in %.2f s", receipt.user_pseudonym, receipt.total_deleted, receipt.duration_s)
    return receipt
