"""The typed settings object: profiles, env overrides, TOML, and errors that name the fix."""

from pathlib import Path

import pytest

from sightline.settings import Settings, SettingsError, load_settings


def test_local_profile_defaults_are_embedded():
    s = load_settings(env={})
    assert s.profile == "local"
    assert s.kafka.bootstrap is None  # the embedded broker
    assert s.feast.online_store == "sqlite"
    assert s.campaign_db_url.startswith("sqlite:///")
    assert s.topic("context") == "sightline.context.v1"


def test_env_overrides_nested_keys_with_one_underscore():
    s = load_settings(env={"SIGHTLINE_KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "SIGHTLINE_SERVING_PORT": "6000",
                           "SIGHTLINE_DATA_DIR": "/srv/sightline"})
    assert s.kafka.bootstrap == "k1:9092,k2:9092"
    assert s.serving.port == 6000
    assert s.data_dir == Path("/srv/sightline")


def test_toml_file_is_read_and_env_wins(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('[kafka]\npartitions = 8\nport = 1234\n[serving]\nport = 7000\n')
    s = load_settings(cfg, env={"SIGHTLINE_SERVING_PORT": "7001"})
    assert s.kafka.partitions == 8 and s.kafka.port == 1234
    assert s.serving.port == 7001


def test_explicit_overrides_win_over_env(tmp_path):
    s = load_settings(env={"SIGHTLINE_DATA_DIR": "/from/env"}, data_dir=tmp_path)
    assert s.data_dir == tmp_path


def test_prod_profile_names_every_missing_setting():
    with pytest.raises(SettingsError) as err:
        load_settings(env={"SIGHTLINE_PROFILE": "prod"})
    text = str(err.value)
    for needed in ("SIGHTLINE_KAFKA_BOOTSTRAP", "SIGHTLINE_FEAST_REDIS_URL", "campaigns.url", "SIGHTLINE_PRIVACY_HMAC_KEY"):
        assert needed in text


def test_prod_profile_complete_is_accepted():
    s = load_settings(env={
        "SIGHTLINE_PROFILE": "prod", "SIGHTLINE_KAFKA_BOOTSTRAP": "kafka:9092",
        "SIGHTLINE_FEAST_REDIS_URL": "redis:6379", "SIGHTLINE_CAMPAIGNS_URL": "postgresql+psycopg://u@db/s",
        "SIGHTLINE_PRIVACY_HMAC_KEY": "s3cret",
    })
    assert s.feast.online_store == "redis"  # the prod profile's default
    assert s.campaign_db_url.startswith("postgresql")
    assert s.frequency_store_kind == "redis", "prod servers share caps through the Redis they already use"
    assert s.serving.event_log_compression == "gzip", "a real network: compress the event log"
    assert load_settings(env={}).serving.event_log_compression == "none", "loopback: spend no CPU on gzip"


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"SIGHTLINE_SERVING_PORT": "abc"}, "serving.port"),
        ({"SIGHTLINE_KAFKA_PARTITIONS": "0"}, "kafka.partitions"),
        ({"SIGHTLINE_FEAST_ONLINE_STORE": "mysql"}, "'sqlite' or 'redis'"),
        ({"SIGHTLINE_PROFILE": "staging"}, "use one of: local, prod"),
        ({"SIGHTLINE_KAFKA_BOOTSRAP": "x:1"}, "unknown setting(s) SIGHTLINE_KAFKA_BOOTSRAP"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(env, fragment):
    with pytest.raises(SettingsError) as err:
        load_settings(env=env)
    assert fragment in str(err.value)


def test_unknown_toml_key_is_refused(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text("[kafka]\nbootstrapp = 'x'\n")
    with pytest.raises(SettingsError, match="kafka.bootstrapp: unknown key"):
        load_settings(cfg, env={})


def test_missing_config_file_names_the_fix(tmp_path):
    with pytest.raises(SettingsError, match="does not exist; fix SIGHTLINE_CONFIG"):
        load_settings(tmp_path / "nope.toml", env={})


def test_redis_store_without_url_is_refused():
    with pytest.raises(SettingsError, match="SIGHTLINE_FEAST_REDIS_URL"):
        load_settings(env={"SIGHTLINE_FEAST_ONLINE_STORE": "redis"})


def test_frequency_store_defaults_and_the_multi_process_rule(tmp_path):
    s = load_settings(env={}, data_dir=tmp_path)
    assert s.serving.processes == 1 and s.frequency_store_kind == "sqlite"
    assert s.frequency_store_path == tmp_path / "serving" / "frequency.db"
    assert load_settings(env={"SIGHTLINE_SERVING_PROCESSES": "2"}).serving.processes == 2
    with pytest.raises(SettingsError, match="count caps per process.*set serving.frequency_store to sqlite or redis"):
        load_settings(env={"SIGHTLINE_SERVING_PROCESSES": "2", "SIGHTLINE_SERVING_FREQUENCY_STORE": "memory"})
    with pytest.raises(SettingsError, match="frequency_store is 'redis'.*SIGHTLINE_FEAST_REDIS_URL"):
        load_settings(env={"SIGHTLINE_SERVING_FREQUENCY_STORE": "redis"})
    with pytest.raises(SettingsError, match="serving.processes"):
        load_settings(env={"SIGHTLINE_SERVING_PROCESSES": "0"})


def test_settings_type_is_the_public_one():
    assert isinstance(load_settings(env={}), Settings)
