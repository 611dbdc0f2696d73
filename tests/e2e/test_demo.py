"""The demo path end to end, as `make demo` runs it, on a small world: a real broker,
real Feast stores, sharded training, the real gRPC server and the closed-loop apps."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sightline(data_dir: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    env["SIGHTLINE_KAFKA_PORT"] = str(_free_port())
    return subprocess.run([sys.executable, "-m", "sightline", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def demo_dir(tmp_path):
    data_dir = tmp_path / "var"
    yield data_dir
    _sightline(data_dir, "stack", "down", timeout=60)


def test_small_demo_tells_the_whole_story(demo_dir, tmp_path):
    out = tmp_path / "summary.json"
    proc = _sightline(demo_dir, "demo", "--small", "--no-progress", "--json-out", str(out), timeout=900)
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for stage in ("local stack", "world", "through Kafka into Feast", "rankers", "experiment", "gRPC server",
                  "feedback and exposures ingested", "summary"):
        assert stage in proc.stdout, f"stage {stage!r} missing from the demo output"

    figures = json.loads(out.read_text())["figures"]
    respond = figures["respond"]
    assert respond["requests"] > 100 and respond["failed_requests"] == 0 and respond["feedback_errors"] == 0, respond
    assert respond["impressions"] > respond["requests"]
    assert 0 < respond["ctr"] < 0.5
    assert figures["fill_rate"] > 0.3
    assert {"production", "candidate"} <= set(figures["models"])
    served_by = respond["impressions_by_model"]
    assert set(served_by) == {figures["models"]["production"], figures["models"]["candidate"]}, (
        f"replies should come from the two registered models (none from the fallback ranker): {served_by}")
    arms = {row["arm"] for row in figures.get("arms", [])}
    assert arms == {"torchrec", "xgboost"}, f"both experiment arms should have exposed units, got {arms}"
    for row in figures["arms"]:     # Recommend's server time, logged on impressions, per arm
        assert 0 < row["serve_p50_ms"] <= row["serve_p99_ms"] < 2000, row
    ingest = figures["ingest"]
    assert ingest.get("in.context", 0) > 0 and ingest.get("stored", 0) > 0
    assert not any(k.startswith("dlq.") for k in ingest), f"good demo traffic reached a DLQ: {ingest}"
    fed = figures["ingest_feedback"]
    assert fed.get("in.feedback", 0) >= respond["impressions"] * 0.5
    assert not any(k.startswith("dlq.") for k in fed), f"serving's feedback reached a DLQ: {fed}"

    # The analyst's report trusts the data: every exposed unit's arm re-derives from the
    # golden hash over the ids the logs keep (pseudonyms), and no feedback is orphaned.
    report = _sightline(demo_dir, "experiments", "report", "demo_ranker", "--format", "json", timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    quality = json.loads(report.stdout)["data_quality"]
    assert quality["assignment"]["units_checked"] > 0
    assert quality["assignment"]["arm_mismatches"] == 0, quality
    assert quality["orphan_feedback_rows"] == 0 and quality["units_in_several_arms"] == 0, quality

    # Idempotent: a second run reuses the world, the models and the experiment.
    again = _sightline(demo_dir, "demo", "--small", "--no-progress", "--requests", "50", timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "reusing it" in again.stdout and "pass --retrain" in again.stdout

    status = _sightline(demo_dir, "stack", "status", timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "running at" in status.stdout and "user_context" in status.stdout
