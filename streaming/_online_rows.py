"""Feature rows → the parameter tuples of Feast's SQLite online table, cheaply.

Feast's SQLite store keeps one row per (entity, feature): the serialized entity key, the
feature name, the serialized ``Value`` proto, its text form, the event time in epoch
seconds and the created time — here the time the row is written, which Feast's reads
ignore and serving's statistics refresher watches (a late event's row is new to it even
though its event time is old). Building a ``Value`` proto and serializing it per cell
was a third of the worker's time (bench.ingest); most cells repeat (small counts, short
lists), so the encoded ``(bytes, text)`` of each distinct value is cached, entity keys
are the key prefix Feast produces plus the value, and timestamps are converted per
column, not per cell. Everything stays byte-for-byte what Feast's own
``online_write_batch`` writes given the same created time (tests/integration/streaming/
test_online_rows.py compares).

Pure: no database here; ``streaming._feast`` and the writer process
(``streaming._online_writer``) execute the tuples.
"""

from __future__ import annotations

import struct
import time
from typing import Callable, Sequence

import polars as pl

from features import TIMESTAMP_FIELD

_CACHE_MAX = 200_000          # distinct encoded values kept (per encoder); cleared when full
_KEY_CACHE_MAX = 500_000      # serialized entity keys kept


def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF            # negative int64: ten bytes of two's complement, as protobuf does
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def encode_value(type_name: str, v) -> tuple[bytes, str | None]:
    """(serialized ``feast.types.Value``, Feast's ``value_text``) of one cell, without Feast's protos.

    Wire format of the fields the views use: string_val = 2, int64_val = 4, double_val = 5,
    string_list_val = 12, int64_list_val = 14 (packed), double_list_val = 15 (packed); a
    None cell is an empty ``Value``. A writer process must not import feast (tens of seconds
    on a busy host), so the bytes are built here; the integration test compares them with
    Feast's own serialization byte for byte."""
    if v is None and not type_name.startswith("Array("):
        return b"", None
    if type_name == "String":
        return _field(0x12, v.encode()), v
    if type_name == "Int64":
        return b"\x20" + _varint(v), str(v)
    if type_name in ("Float64", "Float32"):
        return b"\x29" + struct.pack("<d", v), str(float(v))
    if type_name == "Array(String)":
        return _field(0x62, b"".join(_field(0x0A, x.encode()) for x in v or ())), None
    if type_name == "Array(Int64)":
        packed = b"".join(_varint(x) for x in v or ())
        return _field(0x72, _field(0x0A, packed) if packed else b""), None
    if type_name == "Array(Float64)":
        packed = struct.pack(f"<{len(v or ())}d", *(v or ()))
        return _field(0x7A, _field(0x0A, packed) if packed else b""), None
    raise ValueError(f"no online encoder for feast type {type_name}; add one in streaming/_online_rows.py")


def entity_key_prefix(serialize: Callable[[str], bytes]) -> bytes | None:
    """The bytes every serialized key of one string join key starts with, if Feast's layout is
    ``prefix + len(value) as 4 bytes little-endian + value`` (serialization version 3); else None.

    ``serialize(value)`` is Feast's ``serialize_entity_key`` for that join key; the layout is
    checked on probe values, so a Feast that changes it makes the caller fall back to it."""
    empty = serialize("")
    prefix = empty[:-4]
    if empty[-4:] != b"\x00\x00\x00\x00":
        return None
    for probe in ("u", "user-\u00e9-0123456789abcdef"):
        raw = probe.encode()
        if serialize(probe) != prefix + len(raw).to_bytes(4, "little") + raw:
            return None
    return prefix


def _epoch_seconds(stamps: pl.Series) -> list[int]:
    """What Feast's sqlite3 datetime adapter stores: ``int(naive_utc.timestamp())`` (local-time reading)."""
    if time.timezone == 0 and time.altzone == 0:
        return (stamps.dt.epoch("ms") // 1000).to_list()
    return [int(d.timestamp()) for d in stamps.dt.replace_time_zone(None).to_list()]


def write_stamp() -> int:
    """Now as Feast's sqlite3 datetime adapter stores a time (``int(naive_utc.timestamp())``):
    the ``created_ts`` of the rows written now."""
    from datetime import datetime, timezone

    return int(datetime.now(timezone.utc).replace(tzinfo=None).timestamp())


def upsert_sql(table: str) -> str:
    """The statement Feast's ``online_write_batch`` runs per cell, for ``executemany``."""
    return (f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
            "created_ts = excluded.created_ts")


class SqliteRowEncoder:
    """Encodes feature frames of the views in ``fields`` for Feast's SQLite online table.

    ``fields``: view → [(feature name, Feast type name)]; ``entities``: view → join key;
    ``key_prefix``: join key → ``entity_key_prefix`` result (None: ``serialize_key`` per key);
    ``serialize_key(join_key, value)``: Feast's entity-key serialization, the fallback."""

    def __init__(self, fields: dict[str, Sequence[tuple[str, str]]], entities: dict[str, str],
                 key_prefix: dict[str, bytes | None], serialize_key: Callable[[str, str], bytes] | None = None) -> None:
        self._fields = {v: list(fs) for v, fs in fields.items()}
        self._entities = entities
        self._prefix = key_prefix
        self.key_prefixes = dict(key_prefix)
        self._serialize_key = serialize_key
        self._values: dict[tuple, tuple[bytes, str | None]] = {}
        self._keys: dict[tuple[str, str], bytes] = {}

    def _key(self, join_key: str, value: str) -> bytes:
        blob = self._keys.get((join_key, value))
        if blob is None:
            prefix = self._prefix.get(join_key)
            if prefix is not None:
                raw = value.encode()
                blob = prefix + len(raw).to_bytes(4, "little") + raw
            else:
                blob = self._serialize_key(join_key, value)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[(join_key, value)] = blob
        return blob

    def _encoded(self, type_name: str, values: list) -> list[tuple[bytes, str | None]]:
        cache = self._values
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        scalar = not type_name.startswith("Array(")
        out = []
        for v in values:
            k = (type_name, v if scalar or v is None else tuple(v))
            hit = cache.get(k)
            if hit is None:
                hit = cache[k] = encode_value(type_name, v)
            out.append(hit)
        return out

    def rows(self, view: str, frame: pl.DataFrame) -> list[tuple]:
        """``(entity_key, feature_name, value, value_text, event_ts, created_ts)`` per cell of
        ``frame``; ``created_ts`` is now (``write_stamp``)."""
        if frame.height == 0:
            return []
        created = write_stamp()
        join_key = self._entities[view]
        key = self._key
        keys = [key(join_key, k) for k in frame[join_key].to_list()]
        stamps = _epoch_seconds(frame[TIMESTAMP_FIELD])
        columns = [(name, self._encoded(t, frame[name].to_list())) for name, t in self._fields[view]]
        params = []
        append = params.append
        for i, blob in enumerate(keys):
            ts = stamps[i]
            for name, encoded in columns:
                value, text = encoded[i]
                append((blob, name, value, text, ts, created))
        return params
