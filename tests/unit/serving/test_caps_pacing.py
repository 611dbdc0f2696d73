"""Frequency caps and the pacing controller (a simulated day without services)."""

import random

import pytest

from serving._caps import FrequencyCounter
from serving._pacing import DAY_S, PacerState, PacingConfig, PlanCurve, admit, plan_rmse, update


def test_daily_and_weekly_caps():
    caps = FrequencyCounter()
    for _ in range(2):
        assert caps.allowed("u", "c", day=10, per_day=2, per_week=3)
        caps.record("u", "c", day=10)
    assert not caps.allowed("u", "c", day=10, per_day=2, per_week=3)
    assert caps.allowed("u", "c", day=11, per_day=2, per_week=3)
    caps.record("u", "c", day=11)
    assert not caps.allowed("u", "c", day=12, per_day=2, per_week=3)     # 3 in the rolling week
    assert caps.allowed("u", "c", day=17, per_day=2, per_week=3)         # day 10 fell out of the week
    assert caps.allowed("u", "other", day=10, per_day=1, per_week=None)
    assert caps.allowed("v", "c", day=10, per_day=2, per_week=3)
    assert caps.allowed("u", "c", day=10, per_day=None, per_week=None)


def test_erase_user_forgets_counters():
    caps = FrequencyCounter()
    caps.record("u", "c", 1)
    assert caps.erase_user("u") == 1 and caps.counts("u", "c", 1) == (0, 0) and len(caps) == 0


def test_plan_curve_fraction_is_cumulative():
    flat = PlanCurve()
    assert flat.fraction(0) == 0 and flat.fraction(DAY_S / 2) == pytest.approx(0.5) and flat.fraction(DAY_S) == pytest.approx(1)
    peaky = PlanCurve.from_traffic([0] * 12 + [1] * 12)
    assert peaky.fraction(DAY_S / 2) == pytest.approx(0) and peaky.fraction(18 * 3600) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        PlanCurve((1.0,) * 3)


def _simulate_day(budget, demand_per_s, cost, plan, seed=0, click_cpc=False):
    """Requests arrive at ``demand_per_s`` (per hour profile); each admitted one costs ``cost``."""
    rng = random.Random(seed)
    state = PacerState(budget=budget)
    config = PacingConfig(interval_s=300)
    t = 0.0
    while t < DAY_S:
        rate = demand_per_s * 24 * plan.hourly[min(int(t // 3600), 23)]
        t += rng.expovariate(rate)
        if t >= DAY_S:
            break
        update(state, t, plan, config)
        if admit(state, rng.random(), cost):
            state.spent += cost
            state.issued += cost
    return state


def test_pacing_spends_the_budget_along_the_plan_when_demand_exceeds_it():
    plan = PlanCurve.from_traffic([1, 1, 1, 1, 1, 2, 4, 6, 6, 5, 5, 6, 7, 6, 5, 5, 6, 8, 9, 8, 6, 4, 2, 1])
    state = _simulate_day(budget=100.0, demand_per_s=0.5, cost=0.02, plan=plan)   # demand ≈ 864 money/day
    assert 0.95 * 100 <= state.spent <= 1.02 * 100
    assert plan_rmse(state.history, 100.0, plan) < 0.05


def test_pacing_spends_everything_it_can_when_demand_is_below_budget():
    plan = PlanCurve()
    state = _simulate_day(budget=1000.0, demand_per_s=0.05, cost=0.02, plan=plan)  # demand ≈ 86/day
    assert state.spent == pytest.approx(0.02 * 4320, rel=0.1) and state.p > 0.9


def test_hard_guard_stops_at_the_budget():
    state = PacerState(budget=1.0, spent=0.99)
    assert not admit(state, 0.0, 0.02) and admit(state, 0.0, 0.01)
