"""Exposure logging: once per unit and experiment, bounded, consent-aware, proto records."""

from __future__ import annotations

import threading

from experiments import Assignment, ExposureLogger
from proto import events_pb2


def _a(exp="e1", unit="u1", arm="t", unit_type="user"):
    return Assignment(exp, "l1", arm, unit_type, unit)


def test_once_per_unit_and_experiment():
    sent = []
    logger = ExposureLogger(sent.append, clock=lambda: 1700000000.5)
    first = logger.log([_a(), _a("e2")], user_id="u1", request_id="r1")
    again = logger.log([_a(), _a("e2")], user_id="u1", request_id="r2")
    assert len(first) == 2 and again == [] and sent == first
    ev = first[0]
    assert isinstance(ev, events_pb2.ExposureEvent)
    assert (ev.experiment_id, ev.layer, ev.arm, ev.unit_type, ev.unit_id, ev.request_id, ev.event_time_ms) == (
        "e1", "l1", "t", "user", "u1", "r1", 1700000000500)
    assert ev.event_id and logger.logged == 2 and logger.deduplicated == 2
    assert events_pb2.ExposureEvent.FromString(ev.SerializeToString()) == ev


def test_memory_is_bounded():
    logger = ExposureLogger(max_keys=100)
    for i in range(1000):
        logger.log([_a(unit=f"u{i}")], user_id=f"u{i}", request_id="r")
    assert len(logger) == 100


def test_no_measurement_consent_logs_nothing():
    logger = ExposureLogger()
    consent = events_pb2.Consent(context=True, personalization=False, measurement=False)
    assert logger.log([_a()], user_id="u1", request_id="r1", consent=consent) == []
    ok = events_pb2.Consent(context=True, personalization=True, measurement=True)
    events = logger.log([_a()], user_id="u1", request_id="r1", consent=ok)
    assert events[0].consent.measurement


def test_thread_safe_dedup():
    sent = []
    lock = threading.Lock()

    def sink(ev):
        with lock:
            sent.append(ev)

    logger = ExposureLogger(sink)
    threads = [threading.Thread(target=lambda: [logger.log([_a(unit=f"u{i}")], user_id="x", request_id="r")
                                                for i in range(500)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sent) == 500
