"""Streaming ingestion: Kafka consumer-group workers that validate events, apply
consent, compute windowed features with polars and push them to Feast (online and
offline), with dead-letter topics and exactly-once effect on replays.

Entry points: ``IngestWorker`` (one consumer), ``run_workers`` (N processes in one
group), ``read_stats`` (what ``sightline ingest --stats`` shows). The pure cores —
``decode``, ``decide``, ``to_buckets``/``compute_features``, the category matchers —
are exported for tests, the benchmark and the simulator.

Names are imported on first use (PEP 562): ``import streaming`` stays cheap, so the
online writer process (``streaming._online_writer``) starts without campaigns,
SQLAlchemy or Feast.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "_categories": ("EncoderMatcher", "LexiconMatcher", "Match", "make_matcher"),
    "_codec": ("STREAMS", "decode", "encode_event", "schema_name"),
    "_consent": ("Decision", "Purposes", "decide"),
    "_feast": ("FeastSink", "FeatureSink"),
    "_pipeline": ("BatchResult", "Pipeline", "Record"),
    "_state": ("StateStore", "state_path"),
    "_stats": ("IngestStats", "read_stats"),
    "_supervisor": ("run_workers",),
    "_windows": ("WindowParams", "compute_features", "to_buckets"),
    "_worker": ("IngestWorker", "KafkaDeadLetters"),
    "errors": ("IngestUnavailable", "InvalidMessage", "StateStoreError", "StreamingError"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "STREAMS", "decode", "encode_event", "schema_name",
    "Purposes", "Decision", "decide",
    "LexiconMatcher", "EncoderMatcher", "Match", "make_matcher",
    "WindowParams", "to_buckets", "compute_features",
    "StateStore", "state_path", "FeatureSink", "FeastSink",
    "Pipeline", "Record", "BatchResult", "IngestWorker", "KafkaDeadLetters", "run_workers",
    "IngestStats", "read_stats",
    "StreamingError", "InvalidMessage", "IngestUnavailable", "StateStoreError",
]


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'streaming' has no attribute {name!r}")
    value = getattr(import_module(f"streaming.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
