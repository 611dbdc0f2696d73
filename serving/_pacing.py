"""Budget pacing: probabilistic throttling so each campaign's spend follows the day's plan.

Pure core. The plan is a curve over the day (share of the day's traffic expected by each
moment; uniform unless a traffic profile is given). Every ``interval`` the controller
sets a campaign's participation probability ``p`` so that, at the observed unthrottled
spend rate, it spends its share of the *remaining* budget over the next interval:

    p = (remaining budget × plan share of the next interval / plan share left today)
        / (estimated unthrottled spend rate × interval)

The unthrottled spend rate is estimated from what the last intervals spent divided by the
``p`` they ran at (an EMA). A hard guard stops a campaign once the money already spent
plus the expected cost of what is still outstanding (CPC impressions not yet clicked)
reaches the daily budget, so the overspend is bounded by the clicks that arrive after the
stop — small against the 2 % allowance when the budget buys many clicks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

DAY_S = 86_400.0


@dataclass(frozen=True)
class PlanCurve:
    """Cumulative share of the day's spend planned by each hour (24 hourly shares summing to 1)."""

    hourly: tuple[float, ...] = tuple([1 / 24] * 24)

    def __post_init__(self) -> None:
        if len(self.hourly) != 24 or any(h < 0 for h in self.hourly) or sum(self.hourly) <= 0:
            raise ValueError("PlanCurve needs 24 non-negative hourly shares with a positive sum")
        total = sum(self.hourly)
        object.__setattr__(self, "hourly", tuple(h / total for h in self.hourly))

    @classmethod
    def from_traffic(cls, counts_by_hour: Sequence[float]) -> "PlanCurve":
        """Plan spend in proportion to expected traffic (e.g. yesterday's requests per hour)."""
        return cls(tuple(float(c) for c in counts_by_hour))

    def fraction(self, seconds_into_day: float) -> float:
        """Share of the day's plan that should be spent by ``seconds_into_day``."""
        t = min(max(seconds_into_day, 0.0), DAY_S) / 3600.0
        hour = min(int(t), 23)
        return sum(self.hourly[:hour]) + self.hourly[hour] * (t - hour)


@dataclass
class PacerState:
    """Per-campaign, per-day controller state (plain data; one per campaign)."""

    budget: float
    """Daily budget (or the day's share of a lifetime budget)."""
    spent: float = 0.0
    """Money charged today from delivered events (impressions for CPM, clicks for CPC)."""
    outstanding: float = 0.0
    """Expected cost of served impressions whose charge has not arrived yet (CPC: pCTR × price)."""
    outstanding_var: float = 0.0
    """Variance of that cost (CPC: price² × pCTR × (1 − pCTR)); the guard keeps 1 σ of it in reserve."""
    issued: float = 0.0
    """Cost committed by serving so far today (CPM charges + CPC expected costs); the demand signal."""
    p: float = 1.0
    """Current participation probability."""
    rate: float | None = None
    """EMA of the unthrottled spend rate (money per second at p = 1)."""
    last_t: float | None = None
    last_issued: float = 0.0
    history: list[tuple[float, float]] = field(default_factory=list, repr=False)

    @property
    def committed(self) -> float:
        return self.spent + self.outstanding

    @property
    def reserve(self) -> float:
        """One standard deviation of the outstanding cost: what late clicks may still add beyond
        their expectation (more would underspend small budgets; see docs/serving.md)."""
        return self.outstanding_var ** 0.5

    @property
    def exhausted(self) -> bool:
        return self.committed + self.reserve >= self.budget


@dataclass(frozen=True)
class PacingConfig:
    interval_s: float = 300.0
    """How often ``p`` is recomputed."""
    p_min: float = 0.0005
    """Floor while budget remains, so a throttled campaign still measures its demand."""
    ema: float = 0.3
    """Weight of the newest interval in the spend-rate estimate."""
    safety: float = 0.0
    """Share of the budget held back by the hard guard (0 = stop at the budget)."""


def update(state: PacerState, t: float, plan: PlanCurve, config: PacingConfig = PacingConfig()) -> float:
    """Recompute ``state.p`` at ``t`` seconds into the day if an interval has passed; return it."""
    if state.last_t is None:
        state.last_t, state.last_issued = t, state.issued
        # a rate carried over (another process's estimate, a restart) throttles at once
        state.p = 0.0 if state.exhausted else (_target_p(state, t, plan, config) if state.rate else 1.0)
        return state.p
    dt = t - state.last_t
    if dt < config.interval_s:
        return state.p
    issued_dt = state.issued - state.last_issued
    if state.p > 0 and not state.exhausted:
        observed = issued_dt / dt / max(state.p, config.p_min)
        state.rate = observed if state.rate is None else (1 - config.ema) * state.rate + config.ema * observed
    state.last_t, state.last_issued = t, state.issued
    state.history.append((t, state.committed))
    state.p = _target_p(state, t, plan, config)
    return state.p


def _target_p(state: PacerState, t: float, plan: PlanCurve, config: PacingConfig) -> float:
    remaining = state.budget * (1 - config.safety) - state.committed - state.reserve
    if remaining <= 0:
        return 0.0
    left = 1.0 - plan.fraction(t)
    if left <= 1e-9:
        return 1.0  # the plan is over (end of day): spend what demand brings, the guard caps it
    nxt = plan.fraction(t + config.interval_s) - plan.fraction(t)
    want = remaining * nxt / left
    if not state.rate or state.rate <= 0:
        return 1.0
    return min(1.0, max(config.p_min, want / (state.rate * config.interval_s)))


def admit(state: PacerState, draw: float, expected_cost: float) -> bool:
    """Does the campaign take part in this request? ``draw`` is uniform in [0, 1).

    The hard guard refuses when this impression's expected cost, on top of the committed
    spend and the reserve for late clicks, would pass the budget.
    """
    if state.committed + state.reserve + expected_cost > state.budget:
        return False
    return draw < state.p


def plan_rmse(history: Sequence[tuple[float, float]], budget: float, plan: PlanCurve) -> float:
    """Root mean square of (spent − planned) / budget over the recorded checkpoints."""
    if not history or budget <= 0:
        return 0.0
    errs = [((spent - budget * plan.fraction(t)) / budget) ** 2 for t, spent in history]
    return math.sqrt(sum(errs) / len(errs))
