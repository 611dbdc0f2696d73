"""Crash and group behaviour with real worker processes: SIGKILL mid-batch then restart →
every event reflected exactly once; two workers share partitions and a stopping one hands
its partitions over without loss."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import _streaming_oracle as oracle
from _streaming_oracle import check, offline_latest, online

pytestmark = [pytest.mark.integration, pytest.mark.multiprocess]

_PROC = Path(__file__).with_name("_worker_proc.py")
_ROOT = Path(__file__).resolve().parents[3]


def spawn(settings, worker_id: str, slow_s: float = 0.0, log_dir: Path | None = None) -> subprocess.Popen:
    cfg = Path(settings.data_dir) / f"settings-{worker_id}.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(settings.model_dump_json())
    out = open(Path(settings.data_dir) / f"worker-{worker_id}.log", "a")
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    return subprocess.Popen([sys.executable, str(_PROC), str(cfg), worker_id, str(slow_s)], stdout=out,
                            stderr=subprocess.STDOUT, env=env, cwd=_ROOT)


def seen_count(settings) -> int:
    from streaming import state_path

    path = state_path(settings.data_dir)
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM seen").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def last_assignment(settings, worker_id: str) -> str | None:
    path = Path(settings.data_dir) / f"worker-{worker_id}.log"
    lines = [ln for ln in path.read_text().splitlines() if " assigned " in ln] if path.exists() else []
    return lines[-1].split(" assigned ", 1)[1] if lines else None


def wait_for(predicate, timeout_s: float, what: str, settings=None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}" + _worker_log_tails(settings))


def _worker_log_tails(settings, lines: int = 15) -> str:
    """The end of every worker's log, so a timeout says what the workers were doing."""
    if settings is None:
        return ""
    tails = []
    for log in sorted(Path(settings.data_dir).glob("worker-*.log")):
        tails.append(f"\n--- {log.name} (last {lines} lines) ---\n" + "\n".join(log.read_text().splitlines()[-lines:]))
    return "".join(tails)


def expected_and_check(settings, sim, ctx, fb) -> None:
    from features import read_events
    from streaming import LexiconMatcher, Purposes

    consent_of = lambda m: Purposes.of(m.consent)  # noqa: E731
    c = oracle.context_frame(ctx, LexiconMatcher(), consent_of)
    f = oracle.feedback_frame(fb, consent_of)
    exp_uc = oracle.user_context(c)
    check(exp_uc, online(settings, "user_context", sorted(sim.users)))
    check(oracle.user_engagement(f), online(settings, "user_engagement", sorted(sim.users)))
    exp_items = oracle.counters(f, "item_id")
    check(exp_items, online(settings, "item_stats", sorted(exp_items)))
    exp_pop = oracle.popularity(c, f)
    check(exp_pop, online(settings, "context_popularity", sorted(exp_pop)))
    check(exp_items, {r["item_id"]: r for r in offline_latest(settings, "item_stats").to_dicts()})
    check(exp_uc, {r["user_id"]: r for r in offline_latest(settings, "user_context", sim.users).to_dicts()})
    log = read_events(settings.data_dir, "feedback")
    want = [m.event_id for m in fb if m.consent.context and m.consent.measurement]
    assert sorted(log["event_id"].to_list()) == sorted(want)      # each exactly once


def test_sigkill_mid_batch_then_restart_reflects_every_event_exactly_once(ingest_settings, produce, run_worker):
    from streaming._synthetic import SyntheticEvents

    settings = ingest_settings.model_copy(update={"streaming": ingest_settings.streaming.model_copy(
        update={"max_poll_records": 40, "flush_interval_s": 1.0})})
    now = int(time.time() * 1000)
    sim = SyntheticEvents(seed=21, users=30, items=10, campaigns=3)
    ctx = [sim.context(time_ms=now - sim.rng.randint(0, 7_200_000)) for _ in range(300)]
    fb = [sim.feedback(time_ms=now - sim.rng.randint(0, 7_200_000)) for _ in range(200)]
    produce("context", ctx)
    produce("feedback", fb)
    kept = sum(m.consent.context for m in ctx + fb)

    proc = spawn(settings, "0", slow_s=0.15)
    try:
        wait_for(lambda: seen_count(settings) >= 150, 120, "150 events in the state store", settings)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert seen_count(settings) < kept, "the worker finished before it was killed; make it slower"
    totals = run_worker(max_idle_s=2.0, timeout_s=90)
    assert totals["replayed"] > 0, "nothing was replayed: the kill did not land between state and commit"
    assert seen_count(settings) == kept
    expected_and_check(settings, sim, ctx, fb)


def test_two_workers_share_partitions_and_hand_over_on_stop(ingest_settings, produce):
    from streaming import read_stats
    from streaming._synthetic import SyntheticEvents

    now = int(time.time() * 1000)
    sim = SyntheticEvents(seed=33, users=40, items=10, campaigns=3)
    procs = [spawn(ingest_settings, "0"), spawn(ingest_settings, "1")]
    try:
        # the group has settled when both members hold partitions (each one of every topic's two)
        # Two cold worker processes import polars, Feast and kafka-python and then rebalance: a few
        # seconds alone, far more on a loaded 2-core machine, hence the generous bound.
        wait_for(lambda: all((last_assignment(ingest_settings, w) or "[]").count("(") == 4 for w in ("0", "1")),
                 180, "both workers to be assigned half of the partitions", ingest_settings)
        ctx = [sim.context(time_ms=now - sim.rng.randint(0, 3_600_000)) for _ in range(200)]
        fb = [sim.feedback(time_ms=now - sim.rng.randint(0, 3_600_000)) for _ in range(100)]
        produce("context", ctx)
        produce("feedback", fb)
        kept = sum(m.consent.context for m in ctx + fb)
        wait_for(lambda: seen_count(ingest_settings) >= kept, 90, "both workers to consume phase 1", ingest_settings)
        wait_for(lambda: all(read_stats(ingest_settings, with_kafka=False).workers.get(w, {}).get("stored", 0) > 0
                             for w in ("0", "1")), 20, "both workers to report stored events")

        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0
        log1 = (Path(ingest_settings.data_dir) / "worker-1.log").read_text()
        assert "stopped cleanly" in log1

        ctx2 = [sim.context(time_ms=now + sim.rng.randint(0, 60_000)) for _ in range(200)]
        fb2 = [sim.feedback(time_ms=now + sim.rng.randint(0, 60_000)) for _ in range(100)]
        produce("context", ctx2)
        produce("feedback", fb2)
        kept += sum(m.consent.context for m in ctx2 + fb2)
        wait_for(lambda: seen_count(ingest_settings) >= kept, 90, "worker 0 to take over every partition", ingest_settings)
        log0 = (Path(ingest_settings.data_dir) / "worker-0.log").read_text()
        assert log0.count("assigned") >= 2          # initial share, then everything after the hand-over
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    stats = read_stats(ingest_settings)
    assert all(lag == 0 for lag in stats.lag.values()), stats.lag
    expected_and_check(ingest_settings, sim, ctx + ctx2, fb + fb2)
