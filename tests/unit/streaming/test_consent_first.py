"""The worker drains consent partitions before a batch, so a ConsentEvent produced before an
event on another topic (a re-grant, a withdrawal) is applied first (fake consumer)."""

from collections import namedtuple

from streaming import IngestWorker

TP = namedtuple("TP", "topic partition")


class FakeConsumer:
    def __init__(self, consent_tp, other_tp, consent_records):
        self.tps = {consent_tp, other_tp}
        self.consent_tp, self.other_tp = consent_tp, other_tp
        self.queue = list(consent_records)
        self.pos = {consent_tp: 0, other_tp: 5}
        self.paused: set = set()
        self.calls: list = []

    def assignment(self):
        return set(self.tps)

    def highwater(self, tp):
        return len(self.queue) + self.pos[tp] if tp == self.consent_tp else 5

    def position(self, tp):
        return self.pos[tp]

    def pause(self, *tps):
        self.paused.update(tps)
        self.calls.append(("pause", tps))

    def resume(self, *tps):
        self.paused.difference_update(tps)
        self.calls.append(("resume", tps))

    def poll(self, timeout_ms, max_records):
        assert self.other_tp in self.paused, "other partitions must be paused while consent drains"
        batch, self.queue = self.queue[:1], self.queue[1:]   # one record per poll: the loop must go on
        self.pos[self.consent_tp] += len(batch)
        return {self.consent_tp: batch} if batch else {}


def test_consent_records_behind_the_high_water_mark_join_the_batch(make_settings):
    settings = make_settings()
    worker = IngestWorker(settings, "0")
    consent_tp, context_tp = TP(settings.topic("consent"), 0), TP(settings.topic("context"), 0)
    worker.consumer = FakeConsumer(consent_tp, context_tp, ["grant", "withdraw"])
    polled = {context_tp: ["ctx-event"]}
    worker._consent_first(polled)
    assert polled == {context_tp: ["ctx-event"], consent_tp: ["grant", "withdraw"]}
    assert not worker.consumer.paused, "every paused partition is resumed"


def test_nothing_to_drain_means_no_extra_poll(make_settings):
    settings = make_settings()
    worker = IngestWorker(settings, "0")
    consent_tp, context_tp = TP(settings.topic("consent"), 0), TP(settings.topic("context"), 0)
    worker.consumer = FakeConsumer(consent_tp, context_tp, [])
    polled = {context_tp: ["ctx-event"]}
    worker._consent_first(polled)
    assert polled == {context_tp: ["ctx-event"]} and worker.consumer.calls == []
