"""Exposure logging: once per (experiment, unit), as structured ``ExposureEvent`` records.

Serving calls ``ExposureLogger.log`` when it reads the arms for a request; the logger
keeps a bounded LRU of recently logged (experiment, unit) keys so a unit seen again is
not logged again. If a key falls out of the LRU the unit may be logged a second time;
the analysis counts distinct units, so that only costs a few bytes on the topic.
Without measurement consent nothing is logged (the unit is still assigned).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Callable, Iterable

from experiments._assign import Assignment
from experiments.errors import ExperimentValidationError


class ExposureLogger:
    """De-duplicating producer of ``proto.events_pb2.ExposureEvent``; thread-safe.

    ``sink`` receives each new event (e.g. a buffered Kafka producer's ``send``); it may
    be ``None`` when the caller forwards the returned events itself.
    """

    def __init__(self, sink: Callable[[object], None] | None = None, *, max_keys: int = 500_000,
                 clock: Callable[[], float] = time.time, id_factory: Callable[[], str] | None = None) -> None:
        if max_keys < 1:
            raise ExperimentValidationError(f"max_keys must be >= 1, got {max_keys}")
        self._sink = sink
        self._max_keys = max_keys
        self._clock = clock
        self._id_factory = id_factory or (lambda: uuid.uuid4().hex)
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        self.logged = 0
        self.deduplicated = 0
        self.skipped_no_consent = 0

    def __len__(self) -> int:
        return len(self._seen)

    def _is_new(self, key: tuple[str, str, str]) -> bool:
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                self.deduplicated += 1
                return False
            self._seen[key] = None
            if len(self._seen) > self._max_keys:
                self._seen.popitem(last=False)
            self.logged += 1
            return True

    def log(self, assignments: Iterable[Assignment], *, user_id: str, request_id: str,
            consent=None, event_time_ms: int | None = None) -> list:
        """Events for the assignments not logged before; each is also passed to the sink.

        ``consent`` is a ``proto.events_pb2.Consent`` (or ``None`` = measurement allowed);
        it is copied into the events.
        """
        from proto import events_pb2

        assignments = list(assignments)
        if not assignments:
            return []
        if consent is not None and not consent.measurement:
            with self._lock:
                self.skipped_no_consent += len(assignments)
            return []
        now_ms = int(self._clock() * 1000) if event_time_ms is None else event_time_ms
        events = []
        for a in assignments:
            if not self._is_new((a.experiment_id, a.unit_type, a.unit_id)):
                continue
            event = events_pb2.ExposureEvent(
                event_id=self._id_factory(), event_time_ms=now_ms, user_id=user_id or "",
                experiment_id=a.experiment_id, layer=a.layer, arm=a.arm,
                unit_type=a.unit_type, unit_id=a.unit_id, request_id=request_id or "",
            )
            if consent is not None:
                event.consent.CopyFrom(consent)
            events.append(event)
            if self._sink is not None:
                self._sink(event)
        return events
