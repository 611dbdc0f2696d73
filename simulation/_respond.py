"""The closed loop: simulated users ask for recommendations and react per the ground truth.

For each simulated request the responder calls ``RecommendationService.Recommend``,
looks up every served ad (by creative id) and suggestion (by product sku) in the
world, computes the true P(click) and P(conversion | click) for the user's actual
context, the item and its position (with fatigue from what this run already showed
the user), draws the outcome, and reports ``IMPRESSION``/``CLICK``/``CONVERSION`` via
``ReportFeedback`` with the served impression token. The server is reached through
a small client seam (``ServingClient``): ``GrpcServingClient`` in production, any
object with ``recommend``/``report`` in unit tests.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Protocol

import numpy as np
import polars as pl

from simulation._context import sample_contexts
from simulation._traffic import APP_ID, context_proto
from simulation._truth import ResponseModel, true_probabilities
from simulation._world import World
from simulation.errors import SimulationConfigError, SimulationUnavailable

log = logging.getLogger(__name__)


class ServingClient(Protocol):
    def recommend(self, request): ...  # serving_pb2.RecommendRequest -> RecommendResponse
    def report(self, request): ...     # serving_pb2.FeedbackRequest -> FeedbackResponse


class GrpcServingClient:
    """The real client: an insecure (or TLS) channel to the server, API key in ``x-api-key``."""

    def __init__(self, target: str, api_key: str, *, timeout_s: float = 2.0, root_certificates: bytes | None = None):
        import grpc

        from proto import serving_pb2_grpc

        self._channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates))
                         if root_certificates else grpc.insecure_channel(target))
        self._stub = serving_pb2_grpc.RecommendationServiceStub(self._channel)
        self._metadata = (("x-api-key", api_key),)
        self._timeout = timeout_s
        self.target = target

    def recommend(self, request):
        return self._stub.Recommend(request, metadata=self._metadata, timeout=self._timeout)

    def report(self, request):
        return self._stub.ReportFeedback(request, metadata=self._metadata, timeout=self._timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "GrpcServingClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class RespondResult:
    """What a closed-loop run did; ``impressions`` has one row per served item."""

    requests: int = 0
    skipped_no_consent: int = 0
    """Simulated requests of users without context consent: the app does not call Recommend."""
    failed_requests: int = 0
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    unknown_items: int = 0
    feedback_errors: int = 0
    expected_clicks: float = 0.0
    """Sum of the true P(click) of everything served: the policy's value, free of label noise."""
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)
    frame: pl.DataFrame | None = None

    def summary(self) -> dict:
        return {
            "requests": self.requests, "skipped_no_consent": self.skipped_no_consent,
            "failed_requests": self.failed_requests, "impressions": self.impressions,
            "clicks": self.clicks, "conversions": self.conversions, "unknown_items": self.unknown_items,
            "feedback_errors": self.feedback_errors, "expected_clicks": round(self.expected_clicks, 3),
            "ctr": round(self.clicks / self.impressions, 5) if self.impressions else None,
            "expected_ctr": round(self.expected_clicks / self.impressions, 5) if self.impressions else None,
            "seconds": round(self.seconds, 3), "errors": dict(self.errors),
            "impressions_by_model": self.impressions_by_model(),
        }

    def impressions_by_model(self) -> dict[str, int]:
        """Served items per reply ``model_version``: which rankers actually answered (a model
        that fails falls back to ``context-relevance-v1``, and shows up here)."""
        if self.frame is None or "model_version" not in self.frame.columns or not self.frame.height:
            return {}
        counts = self.frame.group_by("model_version").len()
        return dict(sorted(zip(counts["model_version"].to_list(), counts["len"].to_list())))


def _code_name(exc) -> str:
    code = getattr(exc, "code", None)
    try:
        return code().name if callable(code) else str(code)
    except Exception:  # noqa: BLE001 (non-gRPC exceptions from a custom client)
        return type(exc).__name__


def respond(
    world: World,
    client: ServingClient,
    n_requests: int,
    seed: int,
    *,
    start_time: datetime | None = None,
    days: float = 1.0,
    ad_slots: int = 2,
    suggestions: int = 3,
    rate: float | None = None,
    sim_time: bool = False,
    app_id: str = APP_ID,
    model: ResponseModel = ResponseModel(),
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RespondResult:
    """Run ``n_requests`` simulated requests through the server and report the outcomes.

    Requests of users without context consent are skipped (counted in
    ``skipped_no_consent``): an app must not call Recommend for them.
    Deterministic in ``seed`` given the server's answers. ``rate`` paces requests/s
    (default: as fast as the server answers). ``sim_time`` sends simulated event
    times with the feedback (impression at the request time, click 2 s and conversion
    10 min later); by default the server stamps its own time.
    """
    from proto import events_pb2 as pb
    from proto import serving_pb2 as spb

    if not (0 <= ad_slots <= 10 and 0 <= suggestions <= 50):
        raise SimulationConfigError(f"ad_slots {ad_slots} must be 0..10 and suggestions {suggestions} 0..50")
    if rate is not None and rate <= 0:
        raise SimulationConfigError("rate must be positive (requests per second)")
    rng = np.random.default_rng([seed, 404])
    ctx = sample_contexts(world, n_requests, seed, start_time, days)
    items = world.items
    n_campaigns = len(world.campaigns)
    exposures: Counter = Counter()
    result = RespondResult()
    rows: dict[str, list] = {k: [] for k in (
        "request_id", "user_id", "event_time_ms", "item_kind", "item_id", "campaign_id", "category", "position",
        "p_click", "p_conversion_given_click", "click", "conversion", "model_version", "personalized", "arms")}
    start = clock()
    for i in range(len(ctx)):
        if rate is not None:
            wait = start + i / rate - clock()
            if wait > 0:
                sleep(wait)
        u = int(ctx.user[i])
        if not ctx.consent_context[i]:
            # the app may not call Recommend without context consent (serving refuses it)
            result.skipped_no_consent += 1
            if progress is not None:
                progress(1)
            continue
        request = spb.RecommendRequest(
            app_id=app_id, user_id=world.user_ids[u],
            consent=pb.Consent(context=bool(ctx.consent_context[i]),
                               personalization=bool(ctx.consent_personalization[i]),
                               measurement=bool(ctx.consent_measurement[i])),
            context=context_proto(world, ctx, i),
            surfaces=spb.Surfaces(ad_slots=ad_slots, suggestions=suggestions),
            request_id=f"sim-{seed}-{i:08d}",
        )
        result.requests += 1
        if progress is not None:
            progress(1)
        try:
            reply = client.recommend(request)
        except Exception as exc:  # noqa: BLE001 (grpc.RpcError or a custom client's error)
            code = _code_name(exc)
            result.failed_requests += 1
            result.errors[f"recommend:{code}"] += 1
            details = str(getattr(exc, "details", lambda: "")() or "")
            if code == "UNAUTHENTICATED" or (code == "PERMISSION_DENIED" and "scope" in details.lower()):
                raise SimulationConfigError(f"the server refused the API key ({code}); create one with "
                                            "'sightline privacy keys create' and pass it with --api-key") from exc
            if code == "UNAVAILABLE" and result.failed_requests == result.requests:
                target = getattr(client, "target", "the server")
                raise SimulationUnavailable(f"no recommendation server answers at {target}; start it with "
                                            "'sightline serve' or pass --target host:port") from exc
            continue
        served: list[tuple[str, str, int, int]] = []  # (kind, token, item index, position)
        for ad in reply.ads:
            idx = world.find_item(ad.creative_id)
            if idx is None or items.kind[idx] != 0:
                result.unknown_items += 1
                continue
            served.append(("ad", ad.impression_token, idx, ad.position))
        for sug in reply.suggestions:
            idx = world.find_item(sug.product_sku)
            if idx is None or items.kind[idx] != 1:
                result.unknown_items += 1
                continue
            served.append(("product", sug.impression_token, idx, sug.position))
        if not served:
            continue
        item_idx = np.array([s[2] for s in served])
        keys = [(u, int(items.campaign[j]) if items.kind[j] == 0 else n_campaigns + int(items.product[j]))
                for j in item_idx]
        prior = np.array([exposures[k] for k in keys])
        for k in keys:
            exposures[k] += 1
        p_click, p_conv = true_probabilities(world, ctx, np.full(len(served), i), item_idx,
                                             np.array([max(0, s[3]) for s in served]), prior, model=model, rng=rng)
        click = rng.random(len(served)) < p_click
        conversion = click & (rng.random(len(served)) < p_conv)
        t_ms = int(ctx.event_time_ms[i]) if sim_time else 0
        arms = json.dumps({a.experiment_id: a.arm for a in reply.assignments}, sort_keys=True)
        for k, (kind, token, j, pos) in enumerate(served):
            feedback = [(pb.IMPRESSION, t_ms, 0.0)]
            if click[k]:
                feedback.append((pb.CLICK, t_ms + 2_000 if sim_time else 0, 0.0))
            if conversion[k]:
                feedback.append((pb.CONVERSION, t_ms + 600_000 if sim_time else 0, float(items.price[j])))
            for ftype, ft, value in feedback:
                try:
                    client.report(spb.FeedbackRequest(type=ftype, impression_token=token, event_time_ms=ft,
                                                      conversion_value=value))
                except Exception as exc:  # noqa: BLE001
                    result.feedback_errors += 1
                    result.errors[f"feedback:{_code_name(exc)}"] += 1
            rows["request_id"].append(request.request_id)
            rows["user_id"].append(request.user_id)
            rows["event_time_ms"].append(int(ctx.event_time_ms[i]))
            rows["item_kind"].append(kind)
            rows["item_id"].append(str(items.item_id[j]))
            rows["campaign_id"].append(str(world.campaigns["campaign_id"][int(items.campaign[j])]) if kind == "ad" else "")
            rows["category"].append(world.categories[int(items.category[j])])
            rows["position"].append(int(pos))
            rows["p_click"].append(float(p_click[k]))
            rows["p_conversion_given_click"].append(float(p_conv[k]))
            rows["click"].append(bool(click[k]))
            rows["conversion"].append(bool(conversion[k]))
            rows["model_version"].append(reply.model_version)
            rows["personalized"].append(bool(reply.personalized))
            rows["arms"].append(arms)
        result.impressions += len(served)
        result.clicks += int(click.sum())
        result.conversions += int(conversion.sum())
        result.expected_clicks += float(p_click.sum())
    result.seconds = clock() - start
    result.frame = pl.DataFrame(rows, schema_overrides={"position": pl.Int32, "event_time_ms": pl.Int64})
    return result
