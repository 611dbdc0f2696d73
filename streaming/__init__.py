"""Streaming ingestion: Kafka consumer-group workers that validate events, apply
consent, compute windowed features with polars and push them to Feast (online and
offline), with dead-letter topics and exactly-once effect on replays.

Entry points: ``IngestWorker`` (one consumer), ``run_workers`` (N processes in one
group), ``read_stats`` (what ``sightline ingest --stats`` shows). The pure cores —
``decode``, ``decide``, ``to_buckets``/``compute_features``, the category matchers —
are exported for tests, the benchmark and the simulator.
"""

from streaming._categories import EncoderMatcher, LexiconMatcher, Match, make_matcher
from streaming._codec import STREAMS, decode, encode_event, schema_name
from streaming._consent import Decision, Purposes, decide
from streaming._feast import FeastSink, FeatureSink
from streaming._pipeline import BatchResult, Pipeline, Record
from streaming._state import StateStore, state_path
from streaming._stats import IngestStats, read_stats
from streaming._supervisor import run_workers
from streaming._windows import WindowParams, compute_features, to_buckets
from streaming._worker import IngestWorker, KafkaDeadLetters
from streaming.errors import IngestUnavailable, InvalidMessage, StateStoreError, StreamingError

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
