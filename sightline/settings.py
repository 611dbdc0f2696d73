"""The one typed settings object, read once at the edge and passed down.

Resolution order (later wins): profile defaults → TOML file (``SIGHTLINE_CONFIG`` or
``--config``) → ``SIGHTLINE_*`` environment variables. Nested keys use one underscore
after the section name: ``SIGHTLINE_KAFKA_BOOTSTRAP`` sets ``kafka.bootstrap``.
Library code receives a ``Settings``; it never reads ``os.environ``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict


class SettingsError(Exception):
    """The configuration is invalid; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KafkaSettings(_Section):
    bootstrap: str | None = None
    """External cluster ``host:port[,host:port]``; ``None`` runs the embedded local broker."""
    port: int = 9092
    """Preferred port of the local broker; a free one is picked when it is taken."""
    heap_mb: int = Field(512, ge=128)
    """JVM heap of the local broker (Kafka's script default of 1 GB is too much for 2 cores)."""
    jit: Literal["c1", "tiered"] = "c1"
    """JIT compilers of the local broker's JVM. ``c1`` (the default) compiles quickly and stops
    there: with the JVM's full tiered JIT, a young broker's C2 compiler took 0.3–0.5 of a core
    for half a second at a time during its first minutes, and on 2 cores those bursts stalled
    the servers beside it (p99 50 → 200 ms at 300 requests/s); with C1 only the broker used
    less CPU in all (0.36–0.49 vs 0.57–0.66 ms per served request). ``tiered`` is the JVM's
    default, for a long-running broker on a machine with cores to spare."""
    partitions: int = Field(4, ge=1)
    """Partitions of each main topic; consumer workers in one group share them."""
    retention_hours: int = Field(24 * 30, ge=1)
    """Topic retention; matches the offline-store retention by default (privacy)."""
    dlq_retention_hours: int = Field(24 * 7, ge=1)
    jars_dir: Path | None = None
    """Apache Kafka jars; ``None`` means ``.kafka/lib`` in the checkout (filled by ``make install``)."""
    topic_prefix: str = "sightline"
    replication_factor: int = Field(1, ge=1)


class FeastSettings(_Section):
    project: str = "sightline"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str | None = None
    """``host:port`` of the Redis online store (profile ``prod``)."""


class CampaignStoreSettings(_Section):
    url: str | None = None
    """SQLAlchemy URL; ``None`` means a SQLite file in the data directory."""
    max_bid: float = Field(50.0, gt=0)
    """Largest CPC bid (or CPM bid) a campaign may set, in its currency."""


class ServingSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 50051
    workers: int = Field(8, ge=1)
    """Threads of grpc's thread-pool server (``runtime = threads``), or, under ``asyncio``, the
    threads that run the methods not served on the event loop (admin calls, streams)."""
    runtime: Literal["asyncio", "threads"] = "asyncio"
    """``asyncio``: one event-loop thread per process runs Recommend and ReportFeedback to
    completion, one request at a time, so threads never trade the GIL mid-request (use
    ``processes`` for more cores). ``threads``: grpc's thread-pool server, ``workers``
    requests side by side in one process. See docs/serving.md, "Runtime"."""
    max_message_bytes: int = Field(256 * 1024, ge=1024)
    feature_refresh_s: float = Field(5.0, gt=0)
    """How often item and campaign statistics are re-read (stretched to 10× the read time)."""
    item_stats_socket: Path | None = None
    """Unix socket of a shared item-statistics refresher (``ServerGroup`` sets it for its
    processes); ``None``: the server starts its own."""
    rate_limit_store: Literal["memory", "file", "redis"] | None = None
    """Where API-key token buckets live. ``None``: ``redis`` (``feast.redis_url``, shared by every
    server) when the online store is Redis (profile prod), else ``file`` (``rate_limit_file``,
    shared by the processes of one machine; a ``ServerGroup`` makes one) when there is one, else
    ``memory`` (in the process, 1/``processes`` of every key's limit each)."""
    rate_limit_file: Path | None = None
    """File of API-key token buckets shared by the processes of one machine: ``ServerGroup``
    sets a private one for its processes; set it to share one file between servers started
    apart on this machine (created if missing). ``None`` and one process: buckets in the
    process."""
    snapshot_refresh_s: float = Field(2.0, gt=0)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_api_key: bool = True
    api_key_cache_s: float = Field(5.0, ge=0)
    """How long a verified API key is trusted without a DB read (revocation delay across processes)."""
    rate_limit_rps: float = Field(500.0, gt=0)
    """Default per-key request rate (token bucket refill per second); a key may set its own."""
    rate_limit_burst: int = Field(1000, ge=1)
    """Default per-key bucket size (burst); a key may set its own."""
    token_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    """How long an impression token stays valid for ReportFeedback."""
    log_buffer: int = Field(100_000, ge=100)
    """Events the background Kafka logger holds in memory; beyond it Recommend waits (back-pressure, never drops)."""
    event_log_client: Literal["librdkafka", "kafka-python"] = "librdkafka"
    """Kafka client of the event log: librdkafka (confluent-kafka; C, off the GIL) or kafka-python."""
    event_log_compression: Literal["none", "gzip"] = "none"
    """Compression of the event log's Kafka batches. ``none`` (profile local): on loopback the bytes
    cost nothing and gzip cost the server ~0.15 ms of CPU per Recommend (its 13 events) plus the
    broker's decompression, on the same cores. ``gzip`` (profile prod): fewer bytes over a real
    network. (lz4/zstd would need extra libraries in the kafka-python consumers.)"""
    event_log_process: bool = True
    """With ``event_log_client = kafka-python``: run its producer in a child process (its pure-Python
    encoding off the server's GIL); false: a thread of the server."""
    reserve_ecpm: float = Field(0.0, ge=0)
    """Default auction reserve (eCPM); an experiment arm may override it."""
    quality_floor: float = Field(0.0, ge=0, le=1)
    """Default least pCTR an ad needs to enter the auction; an arm may override it."""
    exploration: float = Field(0.0, ge=0, le=1)
    """Default chance the last ad slot explores a random eligible ad; an arm may override it."""
    model_threads: int = Field(1, ge=1, le=64)
    """CPU threads one model call may use (torch's intra-op threads; XGBoost predicts on one).
    1: the server's workers already run requests side by side, and torch's default (a thread
    per core, spinning between operations) doubled the CPU of every TorchRec Recommend
    (in-process 11.0 → 5.6 ms a call on 2 cores)."""
    pacing_flush_s: float = Field(1.0, gt=0, le=60)
    """How often each server process adds what it charged to the campaign store's spend ledger
    and reads back what the others charged (``serving._spend``): the processes and servers pace
    every budget together, a restarted process resumes the day's spend, and a crash loses at
    most this much of its charges. At a budget's end the others may overspend by what they
    charge in this time."""
    processes: int = Field(1, ge=1, le=64)
    """Server processes of ``sightline serve`` sharing the port (SO_REUSEPORT; the kernel spreads
    connections over them). They pace every budget together (``pacing_flush_s``) and share one
    bucket per API key (``rate_limit_store``); frequency caps need a shared store
    (``frequency_store`` sqlite or redis)."""
    frequency_store: Literal["memory", "sqlite", "redis"] | None = None
    """Where frequency-cap counts live. ``None``: ``redis`` (``feast.redis_url``) when the online store
    is Redis (profile prod), else ``sqlite`` (``<data_dir>/serving/frequency.db``, shared by the
    processes of one machine). ``memory``: in the process (lost on restart; one process only)."""


class StreamingSettings(_Section):
    """Ingestion workers (``sightline ingest``); see docs/streaming.md."""

    group_id: str = "sightline-ingest"
    """Kafka consumer group shared by every ingest worker."""
    max_message_bytes: int = Field(64 * 1024, ge=256)
    """Larger messages go to the DLQ with reason ``oversize``."""
    max_poll_records: int = Field(5000, ge=1)
    poll_timeout_ms: int = Field(100, ge=1)
    session_timeout_ms: int = Field(10_000, ge=6_000)
    """How soon the group notices a dead worker and moves its partitions (broker minimum 6 s)."""
    flush_interval_s: float = Field(5.0, gt=0)
    """Offline parquet parts, event logs and offset commits happen at most this often (online pushes every batch)."""
    recent_n: int = Field(10, ge=1)
    """Length of the per-user recent scenes/objects/intent-category lists."""
    top_categories: int = Field(20, ge=1)
    """Length of the per-user engaged-category arrays."""
    ctr_prior: float = Field(0.02, ge=0, le=1)
    ctr_prior_weight: float = Field(50.0, ge=0)
    """Smoothed CTR = (clicks + ctr_prior * ctr_prior_weight) / (impressions + ctr_prior_weight)."""
    dedupe_hours: int = Field(24 * 8, ge=1)
    """How long processed event ids are remembered for de-duplication (longer than the 7 d window)."""
    intent_matcher: Literal["lexicon", "encoder"] = "lexicon"
    """How intent text becomes categories; docs/streaming.md has the measurements behind the default."""
    metrics_port: int | None = None
    """Prometheus port of worker 0 (worker i uses port + i); ``None`` disables the exporter."""


class ModelSettings(_Section):
    registry_dir: Path | None = None
    """``None`` means ``<data_dir>/models``."""
    serving_alias: str = "production"


class PrivacySettings(_Section):
    hmac_key: str = "local-development-key-change-me"
    """Key for pseudonymizing user ids; set a secret one in prod (see SECURITY.md)."""
    previous_hmac_key: str | None = None
    """The key before the last rotation, during the dual-key window only (SECURITY.md 'Key rotation')."""
    retention_days: int = Field(30, ge=1)
    """Offline rows (feature parts, event logs) older than this are removed by `sightline privacy purge`."""


class Settings(BaseSettings):
    """Everything Sightline can be configured with; see README 'Configuration'."""

    model_config = SettingsConfigDict(
        env_prefix="SIGHTLINE_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        validate_assignment=True,
    )

    profile: Literal["local", "prod"] = "local"
    data_dir: Path = Path("var")
    """Where the local broker, Feast stores, campaign DB and models keep their files."""
    kafka: KafkaSettings = KafkaSettings()
    feast: FeastSettings = FeastSettings()
    campaigns: CampaignStoreSettings = CampaignStoreSettings()
    serving: ServingSettings = ServingSettings()
    streaming: StreamingSettings = StreamingSettings()
    models: ModelSettings = ModelSettings()
    privacy: PrivacySettings = PrivacySettings()

    @model_validator(mode="after")
    def _check_profile(self) -> "Settings":
        if self.profile == "prod":
            missing = []
            if not self.kafka.bootstrap:
                missing.append("kafka.bootstrap (SIGHTLINE_KAFKA_BOOTSTRAP=host:9092)")
            if self.feast.online_store != "redis" or not self.feast.redis_url:
                missing.append("feast.redis_url (SIGHTLINE_FEAST_REDIS_URL=host:6379)")
            if not (self.campaigns.url or "").startswith("postgresql"):
                missing.append("campaigns.url (a postgresql+psycopg:// URL)")
            if self.privacy.hmac_key == PrivacySettings().hmac_key:
                missing.append("privacy.hmac_key (a secret, SIGHTLINE_PRIVACY_HMAC_KEY)")
            if missing:
                raise ValueError("profile 'prod' needs: " + "; ".join(missing))
        store = self.serving.frequency_store
        if self.serving.processes > 1 and store == "memory":
            raise ValueError(f"serving.processes={self.serving.processes} with serving.frequency_store='memory' would "
                             "count caps per process (a cap of 3 could serve 3 x N); set serving.frequency_store to "
                             "sqlite or redis, or serving.processes=1")
        if store == "redis" and not self.feast.redis_url:
            raise ValueError("serving.frequency_store is 'redis' but feast.redis_url is empty; "
                             "set SIGHTLINE_FEAST_REDIS_URL=host:6379")
        if self.feast.online_store == "redis" and not self.feast.redis_url:
            raise ValueError("feast.online_store is 'redis' but feast.redis_url is empty; set SIGHTLINE_FEAST_REDIS_URL=host:6379")
        return self

    # Derived locations, in one place so no caller builds paths by hand.
    @property
    def campaign_db_url(self) -> str:
        return self.campaigns.url or f"sqlite:///{(self.data_dir / 'campaigns.db').resolve()}"

    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def kafka_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def frequency_store_kind(self) -> str:
        """``serving.frequency_store`` with its profile default resolved."""
        return self.serving.frequency_store or ("redis" if self.feast.online_store == "redis" else "sqlite")

    @property
    def rate_limit_store_kind(self) -> str:
        """``serving.rate_limit_store`` with its default resolved."""
        if self.serving.rate_limit_store:
            return self.serving.rate_limit_store
        if self.feast.online_store == "redis":
            return "redis"
        return "file" if self.serving.rate_limit_file else "memory"

    @property
    def frequency_store_path(self) -> Path:
        """The SQLite file of the frequency caps (``frequency_store = sqlite``)."""
        return self.data_dir / "serving" / "frequency.db"

    @property
    def registry_dir(self) -> Path:
        return self.models.registry_dir or self.data_dir / "models"

    def topic(self, name: str) -> str:
        """Full topic name for a logical stream: ``topic('context')`` → ``sightline.context.v1``."""
        return f"{self.kafka.topic_prefix}.{name}.v1"


def _format_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        env = "SIGHTLINE_" + "_".join(str(p) for p in err["loc"][:2]).upper()
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key; see README 'Configuration' for the allowed keys"
        lines.append(f"  {key}: {msg} (input {err.get('input')!r}; env {env})")
    return "invalid Sightline settings:\n" + "\n".join(lines)


_PROFILE_DEFAULTS: Mapping[str, dict] = {
    "local": {},
    "prod": {"feast": {"online_store": "redis"}, "serving": {"event_log_compression": "gzip"}},
}


def load_settings(
    config_file: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: object,
) -> Settings:
    """Build the settings from profile defaults, an optional TOML file and the environment.

    ``env`` defaults to ``os.environ``; this is the one place that reads it.
    Raises ``SettingsError`` naming every bad key.
    """
    env = dict(os.environ if env is None else env)
    config_file = config_file or env.get("SIGHTLINE_CONFIG")
    data: dict = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist; fix SIGHTLINE_CONFIG or --config")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    profile = env.get("SIGHTLINE_PROFILE") or overrides.get("profile") or data.get("profile") or "local"
    if profile not in _PROFILE_DEFAULTS:
        raise SettingsError(f"profile {profile!r} is unknown; use one of: local, prod (SIGHTLINE_PROFILE)")
    merged = _deep_merge(_PROFILE_DEFAULTS[profile], data)
    sightline_env = {k.lower(): v for k, v in env.items() if k.startswith("SIGHTLINE_") and k != "SIGHTLINE_CONFIG"}
    _check_env_keys(sightline_env)
    try:
        from_env = _FixedEnv(Settings, sightline_env)()
        values = _deep_merge(_deep_merge(merged, from_env), dict(overrides))
        return _InitOnly(**values)
    except ValidationError as exc:
        raise SettingsError(_format_error(exc)) from None


def _check_env_keys(env: Mapping[str, str]) -> None:
    """Refuse a misspelt SIGHTLINE_* variable instead of silently ignoring it."""
    allowed = set()
    for name, field in Settings.model_fields.items():
        allowed.add(name)
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            allowed.update(f"{name}_{child}" for child in sub.model_fields)
    unknown = sorted(k.upper() for k in env if k.removeprefix("sightline_") not in allowed)
    if unknown:
        raise SettingsError(
            f"unknown setting(s) {', '.join(unknown)}; allowed: "
            + ", ".join("SIGHTLINE_" + a.upper() for a in sorted(allowed))
        )


def _deep_merge(base: Mapping, top: Mapping) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _FixedEnv(EnvSettingsSource):
    """Reads SIGHTLINE_* values from a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._given_env = dict(env)
        super().__init__(settings_cls, case_sensitive=False)

    def _load_env_vars(self):  # pydantic-settings hook
        return self._given_env


class _InitOnly(Settings):
    """Settings built from explicit values only (the sources were merged by load_settings)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings,)
