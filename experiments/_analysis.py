"""Experiment analysis: exposures + feedback (polars) → per-arm metrics, lifts, checks.

Pure over DataFrames: ``analyze(experiment, exposures, feedback)`` never reads files;
the CLI reads the event logs (``features.read_events``) and the store at the rim.

Units are the exposed units (user ids, or request ids for requests without
personalization consent). Feedback tagged with the experiment (``experiment_arms``)
is attributed to its unit by user id (user units) or request id (request units); the
unit keeps the arm of its first exposure (intention to treat).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from experiments import _stats
from experiments._assign import choose_arm
from experiments._definitions import Experiment
from experiments.errors import AnalysisError

# metric -> (numerator column, denominator column or None for per-unit, scale, label)
METRICS: dict[str, tuple[str, str | None, float, str]] = {
    "ctr": ("clicks", "impressions", 1.0, "CTR (clicks / impressions)"),
    "cvr": ("conversions", "clicks", 1.0, "CVR (conversions / clicks)"),
    "revenue_per_1k_requests": ("revenue", "requests", 1000.0, "Revenue per 1,000 requests"),
    "clicks_per_unit": ("clicks", None, 1.0, "Clicks per unit"),
    "revenue_per_unit": ("revenue", None, 1.0, "Revenue per unit"),
}
# guardrail -> (numerator, denominator, harmful direction, tolerance (relative), label)
GUARDRAILS: dict[str, tuple[str, str, str, float, str]] = {
    "fill_rate": ("filled_requests", "requests", "decrease", 0.01, "Fill rate (requests with an ad)"),
    "ad_load": ("ad_impressions", "requests", "increase", 0.05, "Ad load (ad impressions per request)"),
}
LATENCY_TOLERANCE = 0.10
LATENCY_MIN_REQUESTS = 200
"""An arm's latency p99 is reported from this many requests up: the p99 of fewer is one or two
of the slowest calls, and the guardrail compares two p99s without a test."""
SRM_ALPHA = 0.001
_COUNTERS = ("requests", "impressions", "clicks", "conversions", "revenue", "ad_impressions", "filled_requests")


@dataclass(frozen=True)
class AnalysisOptions:
    """How to analyse; defaults suit a standard A/B readout."""

    alpha: float = 0.05
    correction: str = "holm"              # "holm" (family-wise) or "bh" (false discovery rate)
    cuped: bool = True
    pre_period_days: float = 14.0
    item_kind: str | None = None          # "ad" | "product" | None (all items)
    timeline_points: int = 12             # looks in the cumulative timeline (0 = none)
    min_relevant_lift: float = 0.02       # relative lift worth detecting; drives "keep running"
    target_power: float = 0.8
    as_of: datetime | None = None         # analyse data up to this time only


@dataclass(frozen=True)
class ArmSummary:
    arm: str
    expected_share: float
    units: int
    requests: int
    impressions: int
    clicks: int
    conversions: int
    revenue: float
    ctr: float
    cvr: float
    revenue_per_1k_requests: float
    fill_rate: float
    ad_load: float
    latency_p99_ms: float | None


@dataclass(frozen=True)
class MetricResult:
    metric: str
    label: str
    arm: str
    control_arm: str
    primary: bool
    lift: _stats.Lift
    cuped: bool
    p_adjusted: float
    seq_p_adjusted: float
    significant: bool                     # fixed-horizon, after correction
    seq_significant: bool                 # always-valid, after correction


@dataclass(frozen=True)
class GuardrailResult:
    guardrail: str
    label: str
    arm: str
    control: float
    treatment: float
    rel_change: float
    rel_ci: tuple[float, float]
    p_value: float
    breached: bool
    reason: str


@dataclass(frozen=True)
class SrmResult:
    observed: dict[str, int]
    expected_share: dict[str, float]
    chi2: float
    p_value: float
    flagged: bool


@dataclass(frozen=True)
class PowerResult:
    arm: str
    metric: str
    se: float
    mde_abs: float
    mde_rel: float
    power_at_min_relevant_lift: float


@dataclass(frozen=True)
class Decision:
    verdict: str                          # "ship" | "don't ship" | "keep running"
    arm: str | None
    headline: str
    reasons: tuple[str, ...]


@dataclass
class ExperimentResult:
    experiment: Experiment
    options: AnalysisOptions
    arms: list[ArmSummary]
    metrics: list[MetricResult]
    guardrails: list[GuardrailResult]
    srm: SrmResult
    power: list[PowerResult]
    data_quality: dict
    window: tuple[datetime | None, datetime | None]
    timeline: list[dict] = field(default_factory=list)
    decision: Decision | None = None

    def metric(self, name: str, arm: str | None = None) -> MetricResult:
        for m in self.metrics:
            if m.metric == name and (arm is None or m.arm == arm):
                return m
        raise AnalysisError(f"no result for metric {name!r} arm {arm!r}")

    def to_dict(self) -> dict:
        def clean(obj):
            if isinstance(obj, float):
                return None if not math.isfinite(obj) else obj
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [clean(v) for v in obj]
            if isinstance(obj, datetime):
                return obj.isoformat()
            return obj

        return clean({
            "experiment": self.experiment.model_dump(mode="json"),
            "options": asdict(self.options),
            "window": list(self.window),
            "decision": asdict(self.decision) if self.decision else None,
            "srm": asdict(self.srm),
            "arms": [asdict(a) for a in self.arms],
            "metrics": [asdict(m) for m in self.metrics],
            "guardrails": [asdict(g) for g in self.guardrails],
            "power": [asdict(p) for p in self.power],
            "data_quality": self.data_quality,
            "timeline": self.timeline,
        })


# -- unit table --------------------------------------------------------------------------
def _tagged_feedback(experiment: Experiment, feedback, item_kind: str | None):
    import polars as pl

    fb = feedback.filter(pl.col("experiment_arms").str.contains(f'"{experiment.id}"', literal=True))
    fb = fb.with_columns(tag_arm=pl.col("experiment_arms").str.json_path_match(f"$['{experiment.id}']"))
    fb = fb.filter(pl.col("tag_arm").is_not_null())
    if item_kind:
        fb = fb.filter(pl.col("item_kind") == item_kind)
    return fb


def _counters(events):
    """Per-unit counters from feedback rows that have ``unit_type``, ``unit_id``."""
    import polars as pl

    imp = pl.col("type") == "impression"
    ad_imp = imp & (pl.col("item_kind") == "ad")
    return events.group_by("unit_type", "unit_id").agg(
        impressions=imp.sum(),
        clicks=(pl.col("type") == "click").sum(),
        conversions=(pl.col("type") == "conversion").sum(),
        revenue=pl.col("spend").fill_null(0.0).sum(),
        ad_impressions=ad_imp.sum(),
        filled_requests=pl.col("request_id").filter(ad_imp).n_unique(),
    )


def unit_table(experiment: Experiment, exposures, feedback, *, item_kind: str | None = None,
               as_of: datetime | None = None):
    """One row per exposed unit: arm, first exposure, counters. Also returns data-quality counts."""
    import polars as pl

    exp = exposures.filter(pl.col("experiment_id") == experiment.id)
    fb = _tagged_feedback(experiment, feedback, item_kind)
    if as_of is not None:
        exp = exp.filter(pl.col("event_time") <= as_of)
        fb = fb.filter(pl.col("event_time") <= as_of)
    units = (exp.sort("event_time")
             .group_by("unit_type", "unit_id", maintain_order=True)
             .agg(arm=pl.col("arm").first(), arms_seen=pl.col("arm").n_unique(),
                  first_exposure=pl.col("event_time").min(), user_id=pl.col("user_id").first()))
    # attribute feedback to units: user units by user id, request units by request id
    user_units = units.filter(pl.col("unit_type") == "user").select(u_id=pl.col("unit_id"), u_arm=pl.col("arm"))
    req_units = units.filter(pl.col("unit_type") == "request").select(r_id=pl.col("unit_id"), r_arm=pl.col("arm"))
    fb = (fb.join(user_units, left_on="user_id", right_on="u_id", how="left")
            .join(req_units, left_on="request_id", right_on="r_id", how="left"))
    fb = fb.with_columns(
        unit_type=pl.when(pl.col("u_arm").is_not_null()).then(pl.lit("user"))
                    .when(pl.col("r_arm").is_not_null()).then(pl.lit("request")),
        unit_id=pl.when(pl.col("u_arm").is_not_null()).then(pl.col("user_id"))
                  .when(pl.col("r_arm").is_not_null()).then(pl.col("request_id")),
        unit_arm=pl.coalesce("u_arm", "r_arm"),
    )
    orphans = fb.filter(pl.col("unit_id").is_null()).height
    matched = fb.filter(pl.col("unit_id").is_not_null())
    mismatched = matched.filter(pl.col("tag_arm") != pl.col("unit_arm")).height
    counters = _counters(matched)
    requests = (pl.concat([matched.select("unit_type", "unit_id", "request_id"),
                           exp.select("unit_type", "unit_id", "request_id")])
                .filter(pl.col("request_id").is_not_null() & (pl.col("request_id") != ""))
                .group_by("unit_type", "unit_id").agg(requests=pl.col("request_id").n_unique()))
    table = (units.join(counters, on=["unit_type", "unit_id"], how="left")
                  .join(requests, on=["unit_type", "unit_id"], how="left"))
    table = table.with_columns([pl.col(c).fill_null(0) for c in _COUNTERS])
    table = table.with_columns(requests=pl.max_horizontal(pl.col("requests"), pl.lit(1)))
    quality = {
        "exposure_rows": exp.height,
        "tagged_feedback_rows": fb.height,
        "orphan_feedback_rows": orphans,
        "feedback_arm_mismatches": mismatched,
        "units_in_several_arms": int(units.filter(pl.col("arms_seen") > 1).height),
    }
    return table, quality


def _pre_period(experiment: Experiment, units, feedback, start: datetime, days: float, item_kind: str | None):
    """Pre-period counters per user unit (CUPED covariates): all feedback of the user before the start."""
    import polars as pl

    lo = start - timedelta(days=days)
    pre = feedback.filter((pl.col("event_time") < start) & (pl.col("event_time") >= lo))
    if item_kind:
        pre = pre.filter(pl.col("item_kind") == item_kind)
    users = units.filter(pl.col("unit_type") == "user").select("unit_id")
    pre = pre.join(users, left_on="user_id", right_on="unit_id", how="semi").with_columns(
        unit_type=pl.lit("user"), unit_id=pl.col("user_id"))
    counters = _counters(pre)
    req = pre.group_by("unit_type", "unit_id").agg(requests=pl.col("request_id").n_unique())
    counters = counters.join(req, on=["unit_type", "unit_id"], how="left")
    return counters.rename({c: f"pre_{c}" for c in _COUNTERS})


def assignment_consistency(experiment: Experiment, units) -> dict:
    """Re-compute each unit's arm with the golden-pinned hash; mismatches mean broken assignment or logging."""
    ids = units["unit_id"].to_list()
    arms = units["arm"].to_list()
    bad = sum(1 for u, a in zip(ids, arms) if choose_arm(experiment, u) != a)
    return {"units_checked": len(ids), "arm_mismatches": bad,
            "mismatch_rate": bad / len(ids) if ids else 0.0}


# -- analysis ----------------------------------------------------------------------------
def _ratio(num: float, den: float, scale: float = 1.0) -> float:
    return scale * num / den if den else math.nan


def _arrays(table, arm: str, num: str, den: str | None):
    import polars as pl

    sub = table.filter(pl.col("arm") == arm)
    y = sub[num].cast(float).to_numpy()
    x = sub[den].cast(float).to_numpy() if den else np.ones(len(y))
    return y, x, sub


def _covariate(sub, num: str, den: str | None) -> np.ndarray | None:
    """Linearised pre-period value of the same metric, 0 for units without history."""
    pn, pd_ = f"pre_{num}", f"pre_{den}" if den else None
    if pn not in sub.columns:
        return None
    y = sub[pn].fill_null(0).cast(float).to_numpy()
    if pd_ is None:
        return y
    x = sub[pd_].fill_null(0).cast(float).to_numpy()
    return y, x


def served_requests(feedback):
    """The ``requests`` frame of ``analyze`` from the feedback log: one row per request whose
    impressions Recommend logged (``serve_ms``, its server time: handler start to reply) with
    measurement consent (else the request id and arms are not logged). Requests that showed
    nothing are not in it, as they are not in the fill rate's denominator either."""
    import polars as pl

    if "serve_ms" not in feedback.columns or not feedback.height:
        return None
    out = (feedback.filter((pl.col("type") == "impression") & pl.col("serve_ms").is_not_null()
                           & (pl.col("request_id") != ""))
           .group_by("request_id")
           .agg(pl.col("experiment_arms").first(), pl.col("serve_ms").first().alias("latency_ms"),
                pl.col("event_time").min()))
    return out if out.height else None


def _latency_p99(requests, experiment: Experiment, as_of) -> dict[str, float]:
    import polars as pl

    if requests is None or "latency_ms" not in requests.columns or "experiment_arms" not in requests.columns:
        return {}
    r = requests.with_columns(arm=pl.col("experiment_arms").str.json_path_match(f"$['{experiment.id}']"))
    r = r.filter(pl.col("arm").is_not_null() & pl.col("latency_ms").is_not_null())
    if as_of is not None and "event_time" in r.columns:
        r = r.filter(pl.col("event_time") <= as_of)
    out = (r.group_by("arm").agg(p99=pl.col("latency_ms").quantile(0.99, interpolation="linear"), n=pl.len())
           .filter(pl.col("n") >= LATENCY_MIN_REQUESTS))
    return dict(zip(out["arm"].to_list(), out["p99"].to_list()))


def analyze(experiment: Experiment, exposures, feedback, *, options: AnalysisOptions | None = None,
            requests=None) -> ExperimentResult:
    """Analyse one experiment. ``exposures``/``feedback`` are polars frames with the event-log
    schemas (``features.read_events``); ``requests`` (``experiment_arms``, ``latency_ms``
    [, ``event_time``]) feeds the latency guardrail, by default ``served_requests(feedback)``."""
    import polars as pl

    options = options or AnalysisOptions()
    table, quality = unit_table(experiment, exposures, feedback, item_kind=options.item_kind, as_of=options.as_of)
    if table.height == 0:
        raise AnalysisError(f"experiment {experiment.id!r} has no exposures yet; is it running and does "
                            "serving log exposures (sightline.exposures.v1 → the exposures event log)?")
    unknown = sorted(set(table["arm"].unique().to_list()) - set(experiment.arm_names))
    if unknown:
        raise AnalysisError(f"exposures name arms {unknown} that experiment {experiment.id!r} does not define "
                            f"({experiment.arm_names}); was the experiment re-created with the same id?")
    first = table["first_exposure"].min()
    start = experiment.started_at or first
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if options.cuped and start is not None:
        pre = _pre_period(experiment, table, feedback, start, options.pre_period_days, options.item_kind)
        table = table.join(pre, on=["unit_type", "unit_id"], how="left")
        quality["units_with_pre_period"] = int(table.filter(pl.col("pre_impressions").is_not_null()).height)
    quality["assignment"] = assignment_consistency(experiment, table)
    last_fb = feedback["event_time"].max() if feedback.height else None
    window = (first, max([t for t in (table["first_exposure"].max(), last_fb) if t is not None], default=None))

    latency = _latency_p99(served_requests(feedback) if requests is None else requests, experiment, options.as_of)
    weights = experiment.weights
    arms: list[ArmSummary] = []
    for arm in experiment.arm_names:
        sub = table.filter(pl.col("arm") == arm)
        s = {c: (float(sub[c].sum()) if sub.height else 0.0) for c in _COUNTERS}
        arms.append(ArmSummary(
            arm=arm, expected_share=weights[arm], units=sub.height, requests=int(s["requests"]),
            impressions=int(s["impressions"]), clicks=int(s["clicks"]), conversions=int(s["conversions"]),
            revenue=s["revenue"], ctr=_ratio(s["clicks"], s["impressions"]), cvr=_ratio(s["conversions"], s["clicks"]),
            revenue_per_1k_requests=_ratio(s["revenue"], s["requests"], 1000.0),
            fill_rate=_ratio(s["filled_requests"], s["requests"]), ad_load=_ratio(s["ad_impressions"], s["requests"]),
            latency_p99_ms=latency.get(arm)))

    observed = {a.arm: a.units for a in arms}
    chi2, p_srm = _stats.srm_test(list(observed.values()), list(weights.values()))
    srm = SrmResult(observed, dict(weights), chi2, p_srm, p_srm < SRM_ALPHA)

    control = experiment.control
    treatments = [a for a in experiment.arm_names if a != control]
    raw: list[tuple[str, str, _stats.Lift, bool]] = []
    power_rows: list[PowerResult] = []
    guardrails: list[GuardrailResult] = []
    n_planned = experiment.planned_units
    for arm in treatments:
        for metric, (num, den, scale, _label) in METRICS.items():
            y_t, x_t, sub_t = _arrays(table, arm, num, den)
            y_c, x_c, sub_c = _arrays(table, control, num, den)
            cov_t = cov_c = None
            used_cuped = False
            if options.cuped:
                ct, cc = _covariate(sub_t, num, den), _covariate(sub_c, num, den)
                if ct is not None and cc is not None:
                    if isinstance(ct, tuple):  # ratio: linearise with the pooled pre-period ratio
                        py = np.concatenate([ct[0], cc[0]])
                        px = np.concatenate([ct[1], cc[1]])
                        r_pre = py.sum() / px.sum() if px.sum() > 0 else 0.0
                        mx = px.mean() if px.mean() > 0 else 1.0
                        ct = (ct[0] - r_pre * ct[1]) / mx
                        cc = (cc[0] - r_pre * cc[1]) / mx
                    cov_t, cov_c = ct, cc
                    used_cuped = bool(np.var(np.concatenate([ct, cc])) > 0)
            tau2 = None
            if n_planned:
                probe = _stats.compare(y_t * scale, x_t, y_c * scale, x_c, cov_t=cov_t, cov_c=cov_c, alpha=options.alpha)
                n_now = probe.n_control + probe.n_treatment
                if math.isfinite(probe.se) and probe.se > 0:
                    tau2 = _stats.mixture_r(options.alpha) * probe.se**2 * n_now / max(n_planned, 2)
            lift = _stats.compare(y_t * scale, x_t, y_c * scale, x_c, cov_t=cov_t, cov_c=cov_c,
                                  alpha=options.alpha, tau2=tau2)
            raw.append((metric, arm, lift, used_cuped and lift.variance_reduction > 0))
            if metric == experiment.primary_metric:
                m_abs = _stats.mde(lift.se, options.alpha, options.target_power)
                target = options.min_relevant_lift * lift.control if math.isfinite(lift.control) else math.nan
                power_rows.append(PowerResult(
                    arm, metric, lift.se, m_abs, m_abs / lift.control if lift.control else math.nan,
                    _stats.power(target, lift.se, options.alpha)))
        for g, (num, den, direction, tol, label) in GUARDRAILS.items():
            y_t, x_t, _ = _arrays(table, arm, num, den)
            y_c, x_c, _ = _arrays(table, control, num, den)
            lift = _stats.compare(y_t, x_t, y_c, x_c, alpha=options.alpha)
            worse = lift.rel_lift < -tol if direction == "decrease" else lift.rel_lift > tol
            sig = lift.p_value < options.alpha and (lift.abs_lift < 0 if direction == "decrease" else lift.abs_lift > 0)
            breached = bool(worse and sig)
            reason = (f"{label} {'fell' if direction == 'decrease' else 'rose'} {abs(lift.rel_lift):.1%} "
                      f"(tolerance {tol:.0%}, p={lift.p_value:.3g})") if breached else "within tolerance"
            guardrails.append(GuardrailResult(g, label, arm, lift.control, lift.treatment, lift.rel_lift,
                                              lift.rel_ci, lift.p_value, breached, reason))
        if control in latency and arm in latency:
            c, t = latency[control], latency[arm]
            rel = t / c - 1 if c else math.nan
            breached = bool(rel > LATENCY_TOLERANCE)
            guardrails.append(GuardrailResult(
                "latency_p99", "Latency p99 (ms)", arm, c, t, rel, (math.nan, math.nan), math.nan, breached,
                f"p99 latency rose {rel:.1%} (tolerance {LATENCY_TOLERANCE:.0%})" if breached else "within tolerance"))

    p_adj = _stats.adjust_p_values([l.p_value for _, _, l, _ in raw], options.correction)
    seq_adj = _stats.adjust_p_values([l.seq_p_value for _, _, l, _ in raw], options.correction)
    metrics = [
        MetricResult(m, METRICS[m][3], arm, control, m == experiment.primary_metric, lift, cuped, pa, sa,
                     bool(pa < options.alpha), bool(sa < options.alpha))
        for (m, arm, lift, cuped), pa, sa in zip(raw, p_adj, seq_adj)
    ]
    result = ExperimentResult(experiment, options, arms, metrics, guardrails, srm, power_rows, quality, window)
    if options.timeline_points > 0 and window[0] is not None and window[1] is not None:
        result.timeline = timeline(experiment, exposures, feedback, options, window)
    from experiments._decision import decide

    result.decision = decide(result)
    return result


def timeline(experiment: Experiment, exposures, feedback, options: AnalysisOptions, window) -> list[dict]:
    """Cumulative primary-metric lift at evenly spaced looks, with fixed and always-valid intervals.

    The mixture variance is fixed across looks (from the final look, or ``planned_units``)
    so the sequence is one confidence sequence, not a series of separately tuned ones.
    """
    start, end = window
    metric = experiment.primary_metric
    num, den, scale, _ = METRICS[metric]
    control = experiment.control
    cuts = [start + (end - start) * (i + 1) / options.timeline_points for i in range(options.timeline_points)]
    rows: list[dict] = []
    final: dict[str, float] = {}
    per_cut = []
    for cut in cuts:
        table, _ = unit_table(experiment, exposures, feedback, item_kind=options.item_kind, as_of=cut)
        per_cut.append((cut, table))
    last_table = per_cut[-1][1]
    for arm in experiment.arm_names:
        if arm == control:
            continue
        y_t, x_t, _ = _arrays(last_table, arm, num, den)
        y_c, x_c, _ = _arrays(last_table, control, num, den)
        lift = _stats.compare(y_t * scale, x_t, y_c * scale, x_c, alpha=options.alpha)
        n_now = lift.n_control + lift.n_treatment
        v = lift.se**2 * n_now / experiment.planned_units if experiment.planned_units else lift.se**2
        final[arm] = _stats.mixture_r(options.alpha) * v if math.isfinite(v) and v > 0 else math.nan
    running_p: dict[str, float] = {}
    for cut, table in per_cut:
        for arm in experiment.arm_names:
            if arm == control:
                continue
            y_t, x_t, _ = _arrays(table, arm, num, den)
            y_c, x_c, _ = _arrays(table, control, num, den)
            tau2 = final.get(arm, math.nan)
            lift = _stats.compare(y_t * scale, x_t, y_c * scale, x_c, alpha=options.alpha,
                                  tau2=tau2 if math.isfinite(tau2) else None)
            seq_p = lift.seq_p_value
            if math.isfinite(seq_p):
                running_p[arm] = min(running_p.get(arm, 1.0), seq_p)
            rows.append({"time": cut.isoformat(), "arm": arm, "metric": metric,
                         "units": lift.n_control + lift.n_treatment, "control": lift.control,
                         "treatment": lift.treatment, "abs_lift": lift.abs_lift,
                         "ci_low": lift.abs_ci[0], "ci_high": lift.abs_ci[1],
                         "seq_low": lift.seq_ci[0], "seq_high": lift.seq_ci[1],
                         "p_value": lift.p_value, "seq_p_value": running_p.get(arm, math.nan)})
    return rows
