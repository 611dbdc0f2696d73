"""The demo story: every stage of Sightline on the embedded defaults, end to end.

stack → world (campaign store) → context traffic through Kafka → ingestion into Feast →
training (TorchRec, XGBoost challenger) → experiment → gRPC server → simulated apps
calling Recommend and reporting feedback → ingestion of feedback and exposures →
summary. Each stage is idempotent against the same data directory: a second run reuses
the loaded world, the registered models and the experiment.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from sightline.settings import Settings

log = logging.getLogger(__name__)

DEMO_APP = "demo-app"
DEMO_EXPERIMENT = "demo_ranker"
DEMO_KEY_RPS = 20_000.0
"""Rate and burst of the demo's API key (see ``_serve_and_respond``)."""


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; the defaults finish in a few minutes on 2 cores."""

    seed: int = 7
    users: int = 20_000
    products: int = 50_000
    advertisers: int = 300
    campaigns: int = 1_000
    creatives: int = 3_000
    context_events: int = 20_000
    """Context and consent events sent through Kafka and ingested into Feast."""
    logged_requests: int = 60_000
    """Historic logged requests (impressions with ground-truth clicks) the rankers train on."""
    requests: int = 2_000
    """Recommend calls made by the simulated apps against the live gRPC server."""
    world_size: int = 2
    """Processes for sharded TorchRec training (gloo on CPU, nccl on GPUs)."""
    retrain: bool = False
    """Train again even when the registry already has a production model."""


@dataclass
class DemoSummary:
    figures: dict = field(default_factory=dict)
    stages: list[tuple[str, float]] = field(default_factory=list)


Say = Callable[[str], None]


class _Stages:
    def __init__(self, say: Say, summary: DemoSummary) -> None:
        self.say, self.summary, self.n = say, summary, 0

    def __call__(self, title: str):
        stages = self

        class _Stage:
            def __enter__(self):
                stages.n += 1
                stages.say(f"\n== {stages.n}. {title}")
                self.t0 = time.monotonic()
                return self

            def __exit__(self, *exc):
                took = time.monotonic() - self.t0
                stages.summary.stages.append((title, took))
                if exc[0] is None:
                    stages.say(f"   ({took:.1f}s)")
                return False

        return _Stage()


def run_demo(settings: Settings, config: DemoConfig, say: Say = print, progress: bool = True) -> DemoSummary:
    """Run the whole story; return the figures the summary prints."""
    summary = DemoSummary()
    stage = _Stages(say, summary)
    now = datetime.now(timezone.utc)

    with stage("local stack: Apache Kafka (KRaft) + topics + Feast repo"):
        from features import apply_repo
        from sightline.stack import LocalKafka, ensure_topics, project_topics

        bootstrap = settings.kafka.bootstrap or LocalKafka(settings).start()
        created = ensure_topics(bootstrap, project_topics(settings), settings.kafka.replication_factor)
        feature_store = apply_repo(settings)
        say(f"   broker {bootstrap}; {len(created)} topics created; Feast repo {settings.feast_dir}")

    with stage("simulated world loaded into the campaign store"):
        from campaigns import CampaignStore
        from simulation import WorldConfig, build_world, load_world

        world = build_world(WorldConfig(
            seed=config.seed, n_users=config.users, n_products=config.products, n_advertisers=config.advertisers,
            n_campaigns=config.campaigns, n_creatives=config.creatives, start_date=now.date(),
        ))
        store = CampaignStore.from_settings(settings)
        if store.list_advertisers():
            say(f"   campaign store already holds the world ({settings.campaign_db_url}); reusing it")
        else:
            counts = load_world(world, store)
            say(f"   loaded {counts}")
        summary.figures["world"] = {"users": config.users, "products": config.products,
                                    "campaigns": config.campaigns, "creatives": config.creatives}

    with stage(f"{config.context_events:,} consented context + consent events through Kafka into Feast"):
        from simulation import plan_traffic, produce_traffic

        plan = plan_traffic(world, config.context_events, seed=config.seed + int(now.timestamp()) % 10_000,
                            start_time=now - timedelta(hours=1), days=1 / 24)
        stats = produce_traffic(world, plan, settings)
        say(f"   produced {stats.context_events:,} context and {stats.consent_events:,} consent events "
            f"({stats.withdrawals} withdrawals) at {stats.events_per_s:,.0f} events/s")
        ingested = _ingest(settings)
        say(f"   ingested: {_fmt_counts(ingested)}")
        summary.figures["ingest"] = ingested

    with stage("rankers: sharded TorchRec + XGBoost challenger, trained on logged impressions"):
        from models import Registry, train_and_register
        from simulation import simulate_logged_impressions

        registry = Registry(settings)
        aliases = registry.aliases()
        if "production" in aliases and "candidate" in aliases and not config.retrain:
            say(f"   registry already has production={aliases['production']} candidate={aliases['candidate']} "
                "(pass --retrain to train again)")
        else:
            logged = simulate_logged_impressions(world, config.logged_requests, seed=config.seed,
                                                 start_time=now - timedelta(days=7), days=7)
            say(f"   {logged.height:,} logged impressions over 7 days")
            rec_t, m_t = train_and_register("torchrec", logged, registry, world_size=config.world_size,
                                            alias=None, progress=progress, source="demo")
            registry.promote(rec_t.version, "production")
            rec_x, m_x = train_and_register("xgboost", logged, registry, alias=None, progress=progress, source="demo")
            registry.promote(rec_x.version, "candidate")
            for rec, metrics in ((rec_t, m_t), (rec_x, m_x)):
                say(f"   {rec.version}: test AUC {metrics.get('auc', float('nan')):.4f}, "
                    f"log-loss {metrics.get('logloss', float('nan')):.4f}, calibration {metrics.get('calibration', float('nan')):.3f}")
            bayes = m_t.get("bayes") or {}
            if bayes:
                say(f"   Bayes-optimal AUC on the same test set: {bayes.get('auc', float('nan')):.4f}")
        aliases = registry.aliases()
        say(f"   production -> {aliases.get('production')}, candidate -> {aliases.get('candidate')}")
        summary.figures["models"] = aliases

    with stage("experiment: TorchRec (production) vs XGBoost (candidate), 50/50 by user"):
        experiment = _ensure_experiment(settings)
        say(f"   {experiment.id} in layer {experiment.layer}: "
            + ", ".join(f"{a.name} {a.weight:g}% ranker={a.params.ranker}" for a in experiment.arms))

    with stage(f"gRPC server + simulated apps: {config.requests:,} Recommend calls with feedback"):
        result, latencies = _serve_and_respond(settings, world, config, progress)
        s = result.summary()
        say(f"   {s['requests']:,} requests ({s['failed_requests']} failed), {s['impressions']:,} impressions, "
            f"{s['clicks']:,} clicks, {s['conversions']:,} conversions")
        if s["errors"]:      # the simulated app's calls the server refused, by call and status
            say("   refused: " + ", ".join(f"{k} {n:,}" for k, n in sorted(s["errors"].items())))
        say("   items served by ranker: " + ", ".join(f"{v} {n:,}" for v, n in s["impressions_by_model"].items()))
        summary.figures["respond"] = s
        summary.figures["latency_ms"] = _percentiles(latencies)
        summary.figures["fill_rate"] = _fill_rate(result)

    with stage("feedback and exposures ingested (delivery stats, experiment logs)"):
        ingested = _ingest(settings)
        say(f"   ingested: {_fmt_counts(ingested)}")
        summary.figures["ingest_feedback"] = ingested

    with stage("summary"):
        _summarize(settings, summary, say)
    del feature_store
    return summary


def _fmt_counts(counts: dict) -> str:
    return ", ".join(f"{k}={v:,}" for k, v in sorted(counts.items()) if v) or "nothing new"


def _ingest(settings: Settings, idle_s: float = 4.0) -> dict:
    """Consume every stream until the topics are drained (idle for ``idle_s``)."""
    from streaming import IngestWorker

    worker = IngestWorker(settings, worker_id="demo")
    try:
        worker.run(max_idle_s=idle_s)
    finally:
        worker.close()
    return {k: int(v) for k, v in worker.totals.items()}


def _ensure_experiment(settings: Settings):
    from experiments import ExperimentNotFound, ExperimentStore, parse_experiment

    store = ExperimentStore.from_settings(settings)
    try:
        try:
            experiment = store.get(DEMO_EXPERIMENT)
        except ExperimentNotFound:
            experiment = store.create(parse_experiment({
                "id": DEMO_EXPERIMENT, "layer": "ranking", "primary_metric": "ctr",
                "description": "Sharded TorchRec ranker (production) vs the XGBoost challenger (candidate)",
                "arms": [{"name": "torchrec", "weight": 50, "params": {"ranker": "production"}},
                         {"name": "xgboost", "weight": 50, "params": {"ranker": "candidate"}}],
            }))
        if experiment.status == "draft":
            experiment = store.start(DEMO_EXPERIMENT)
        return experiment
    finally:
        store.close()


def _serve_and_respond(settings: Settings, world, config: DemoConfig, progress: bool):
    from tqdm import tqdm

    from serving import ApiKeyStore, app_services, build_server, key_id_of
    from simulation import GrpcServingClient, respond

    keys = ApiKeyStore.from_settings(settings)
    # revoked when the run ends. One key carries the calls of thousands of simulated users'
    # apps (Recommend and a report per impression, click and conversion: ~700 calls/s on 2
    # cores), far above the per-app default of serving.rate_limit_rps.
    plaintext = keys.create_key(DEMO_APP, ["recommend", "feedback"], rate_per_s=DEMO_KEY_RPS, burst=DEMO_KEY_RPS)
    serve_settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"port": 0})})
    server = build_server(serve_settings, app_services(serve_settings), api_keys=keys)
    server.start()
    latencies: list[float] = []
    try:
        client = _TimedClient(GrpcServingClient(f"127.0.0.1:{server.port}", plaintext), latencies)
        bar = tqdm(total=config.requests, desc="Recommend", unit="req", disable=not progress, leave=False)
        try:
            result = respond(world, client, config.requests, seed=config.seed + 1, progress=bar.update)
        finally:
            bar.close()
            client.close()
    finally:
        server.stop()
        keys.revoke(key_id_of(plaintext))
        keys.close()
    return result, latencies


class _TimedClient:
    """Wraps the serving client to record each Recommend call's wall time."""

    def __init__(self, inner, latencies: list[float]) -> None:
        self._inner, self._latencies = inner, latencies

    def recommend(self, request):
        t0 = time.perf_counter()
        try:
            return self._inner.recommend(request)
        finally:
            self._latencies.append((time.perf_counter() - t0) * 1000)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _percentiles(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {}
    arr = np.asarray(values)
    return {"p50": round(float(np.percentile(arr, 50)), 2), "p99": round(float(np.percentile(arr, 99)), 2)}


def _fill_rate(result) -> float | None:
    frame = result.frame
    if frame is None or result.requests == 0:
        return None
    import polars as pl

    with_ads = frame.filter(pl.col("item_kind") == "ad")["request_id"].n_unique()
    return round(with_ads / result.requests, 4)


def _summarize(settings: Settings, summary: DemoSummary, say: Say) -> None:
    import polars as pl

    from features import read_events

    f = summary.figures
    r = f["respond"]
    feedback = read_events(settings.data_dir, "feedback")
    exposures = read_events(settings.data_dir, "exposures")
    spend = float(feedback["spend"].sum()) if feedback.height else 0.0
    say(f"   requests {r['requests']:,}  fill rate {f['fill_rate']:.1%}  CTR {r['ctr'] or 0:.2%} "
        f"(true expected {r['expected_ctr'] or 0:.2%})  conversions {r['conversions']:,}")
    say(f"   latency p50 {f['latency_ms'].get('p50')} ms, p99 {f['latency_ms'].get('p99')} ms (client side, loopback)")
    say(f"   spend logged so far {spend:,.2f} across {feedback['campaign_id'].n_unique() if feedback.height else 0} campaigns")
    if exposures.height:
        arms = (exposures.filter(pl.col("experiment_id") == DEMO_EXPERIMENT)
                .group_by("arm").agg(pl.col("unit_id").n_unique().alias("units")).sort("arm"))
        ads = feedback.filter(pl.col("item_kind") == "ad")
        if ads.height:
            ads = ads.with_columns(pl.col("experiment_arms").str.json_path_match(f"$.{DEMO_EXPERIMENT}").alias("arm"))
            ctr = (ads.group_by("arm").agg((pl.col("type") == "impression").sum().alias("impressions"),
                                           (pl.col("type") == "click").sum().alias("clicks")))
            arms = arms.join(ctr, on="arm", how="left")
        from experiments import served_requests

        served = served_requests(feedback)      # each request's server time, from its impressions
        if served is not None:
            took = (served.with_columns(pl.col("experiment_arms").str.json_path_match(f"$.{DEMO_EXPERIMENT}").alias("arm"))
                    .group_by("arm").agg(pl.col("latency_ms").quantile(0.5).alias("serve_p50_ms"),
                                         pl.col("latency_ms").quantile(0.99).alias("serve_p99_ms")))
            arms = arms.join(took, on="arm", how="left")
        for row in arms.iter_rows(named=True):
            imps, clicks = row.get("impressions") or 0, row.get("clicks") or 0
            took = (f"  server time p50 {row['serve_p50_ms']:.1f} / p99 {row['serve_p99_ms']:.1f} ms"
                    if row.get("serve_p50_ms") is not None else "")
            say(f"   arm {row['arm']:<10} units {row['units']:,}  ad impressions {imps:,}  "
                f"clicks {clicks:,}  CTR {clicks / imps if imps else 0:.2%}{took}")
        f["arms"] = arms.to_dicts()
    say(f"   next: 'sightline experiments report {DEMO_EXPERIMENT}', 'sightline campaigns report', "
        "'sightline stack status'")
