from sightline.settings import load_settings
from sightline.stack import project_topics


def test_each_stream_has_a_dlq_and_retention_from_settings():
    s = load_settings(env={}, kafka={"partitions": 6, "retention_hours": 48})
    specs = {t.name: t for t in project_topics(s)}
    for stream in ("context", "consent", "feedback", "exposures"):
        main = specs[f"sightline.{stream}.v1"]
        assert main.partitions == 6
        assert main.retention_ms == 48 * 3_600_000
        assert f"sightline.{stream}.v1.dlq" in specs
