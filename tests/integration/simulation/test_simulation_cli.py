"""`sightline simulate world|traffic` end to end on a small world (real SQLite store, real broker)."""

import json

import pytest
from click.testing import CliRunner

from campaigns import CampaignStore
from sightline.cli import main

pytestmark = pytest.mark.integration

SMALL = ["--users", "300", "--products", "800", "--advertisers", "12", "--campaigns", "30", "--creatives", "60"]


def _json_tail(output: str) -> dict:
    return json.loads(output[output.index("{"):])


def test_world_loads_the_store_and_writes_a_logged_set(tmp_path):
    db = tmp_path / "c.db"
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), "simulate", "world", *SMALL,
                                       "--db", f"sqlite:///{db}", "--out", str(tmp_path / "out"), "--logged", "300"],
                                env={})
    assert result.exit_code == 0, result.output
    summary = _json_tail(result.output)
    assert summary["loaded"] == {"advertisers": 12, "campaigns": 30, "creatives": 60, "products": 800}
    assert (tmp_path / "out" / "products.parquet").exists()
    assert summary["logged"]["impressions"] > 0
    store = CampaignStore.open(f"sqlite:///{db}")
    try:
        assert len(store.list_campaigns()) == 30
    finally:
        store.close()


def test_traffic_command_produces_to_the_configured_topics(kafka_settings, tmp_path):
    env = {"SIGHTLINE_KAFKA_BOOTSTRAP": kafka_settings.kafka.bootstrap,
           "SIGHTLINE_KAFKA_TOPIC_PREFIX": kafka_settings.kafka.topic_prefix}
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), "simulate", "traffic", *SMALL,
                                       "--events", "200", "--withdrawal-share", "0.1"], env=env)
    assert result.exit_code == 0, result.output
    stats = _json_tail(result.output)
    assert stats["context_events"] == 200 and stats["consent_events"] > 0
    assert stats["topics"]["context"] == kafka_settings.topic("context")


def test_respond_without_a_server_names_the_fix(tmp_path):
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), "simulate", "respond", *SMALL,
                                       "--api-key", "k", "--target", "127.0.0.1:1", "--requests", "2"], env={})
    assert result.exit_code != 0
    assert "sightline serve" in result.output
