"""Frequency caps and the pacing controller (a simulated day without services)."""

import random

import pytest

from serving._caps import FrequencyCounter
from serving._pacing import DAY_S, PacerState, PacingConfig, PlanCurve, admit, plan_rmse, update


@pytest.fixture(params=["memory", "sqlite"])
def caps(request, tmp_path):
    """Every local FrequencyStore must count alike (Redis: tests/integration/serving/test_caps_redis.py)."""
    from serving import SqliteFrequencyStore

    store = FrequencyCounter() if request.param == "memory" else SqliteFrequencyStore(tmp_path / "freq.db")
    yield store
    store.close()


def _allowed(caps, user, campaign, day, per_day, per_week):
    return caps.allowed_many(user, [(campaign, per_day, per_week)], day)[0]


def test_daily_and_weekly_caps(caps):
    for _ in range(2):
        assert _allowed(caps, "u", "c", 10, 2, 3)
        caps.record_many("u", ["c"], day=10)
    assert not _allowed(caps, "u", "c", 10, 2, 3)
    assert _allowed(caps, "u", "c", 11, 2, 3)
    caps.record_many("u", ["c"], day=11)
    assert caps.counts("u", "c", 11) == (1, 3)
    assert not _allowed(caps, "u", "c", 12, 2, 3)     # 3 in the rolling week
    assert _allowed(caps, "u", "c", 17, 2, 3)         # day 10 fell out of the week
    assert _allowed(caps, "u", "other", 10, 1, None)
    assert _allowed(caps, "v", "c", 10, 2, 3)
    assert _allowed(caps, "u", "c", 10, None, None)
    assert caps.allowed_many("u", [("c", 2, None), ("c2", 1, None), ("c", None, None)], 10) == [False, True, True]


def test_a_reply_of_two_ads_of_one_campaign_counts_two(caps):
    caps.record_many("u", ["c", "c", "d"], day=5)
    assert caps.counts("u", "c", 5) == (2, 2) and caps.counts("u", "d", 5) == (1, 1)


def test_erase_user_forgets_counters(caps):
    caps.record_many("u", ["c", "d"], 1)
    caps.record_many("bystander", ["c"], 1)
    assert caps.erase_user("u") == 2 and caps.counts("u", "c", 1) == (0, 0) and caps.users() == 1
    assert caps.counts("bystander", "c", 1) == (1, 1)


def test_two_processes_share_one_sqlite_file(tmp_path):
    """Two stores on one file stand for two server processes: each sees the other's counts."""
    from serving import SqliteFrequencyStore

    a, b = SqliteFrequencyStore(tmp_path / "f.db"), SqliteFrequencyStore(tmp_path / "f.db")
    a.record_many("u", ["c"], 3)
    assert not b.allowed_many("u", [("c", 1, None)], 3)[0]
    b.record_many("u", ["c"], 3)
    assert a.counts("u", "c", 3) == (2, 2)
    assert b.erase_user("u") == 1 and a.counts("u", "c", 3) == (0, 0)
    a.close(), b.close()


def test_sqlite_erasure_leaves_no_bytes_of_the_pseudonym(tmp_path):
    from serving import SqliteFrequencyStore

    store = SqliteFrequencyStore(tmp_path / "f.db")
    victim = "5f1c0ffee5f1c0ffee5f1c0ffee5f1c0"
    store.record_many(victim, [f"campaign-{i}" for i in range(200)], 9)
    store.record_many("bystander", ["campaign-1"], 9)
    store.erase_user(victim)
    store.close()
    for path in tmp_path.glob("f.db*"):
        assert victim.encode() not in path.read_bytes(), path.name


def test_sqlite_prunes_days_outside_the_week(tmp_path):
    from serving import SqliteFrequencyStore

    store = SqliteFrequencyStore(tmp_path / "f.db", prune_every_s=0)
    store.record_many("u", ["c"], 1)
    store.record_many("u", ["c"], 8)        # day 1 is 7 days back: outside the window, pruned
    rows = store._db.execute("SELECT day FROM frequency").fetchall()
    assert rows == [(8,)]
    store.close()


def test_unwritable_sqlite_store_names_the_fix(tmp_path):
    from serving import SqliteFrequencyStore
    from serving.errors import Unavailable

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Unavailable, match="writable"):
        SqliteFrequencyStore(blocker / "sub" / "f.db")


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


def test_the_book_hands_out_each_charge_once_and_resumes_a_share_of_the_day():
    from serving._delivery import PacingBook

    t = 20_000 * DAY_S + 3600.0
    book = PacingBook(share=0.5)
    book.served("cpm", 10.0, t, charge=0.02)
    book.served("cpc", 10.0, t, click_price=1.0, pctr=0.1)     # expected, not charged
    book.clicked("cpc", 10.0, t + 5, 1.0)
    book.served("free", None, t, charge=5.0)                   # no budget: not paced, not recorded
    first = book.take_charges()
    assert first == {20_000: {"cpm": pytest.approx(0.02), "cpc": pytest.approx(1.0)}}
    assert book.take_charges() == {}, "each charge once"
    book.give_back(first)                                      # the store was down
    assert book.take_charges() == first
    # a server starting mid-day: its share of what every server charged, budget from the first ask
    fresh = PacingBook(share=0.5)
    fresh.restore(20_000, {"cpm": 9.0})
    assert fresh.status("cpm", t).spent == pytest.approx(4.5)
    assert fresh.can_afford("cpm", 10.0, t, 0.4) and not fresh.can_afford("cpm", 10.0, t, 0.6)
    assert fresh.take_charges() == {}, "restored spend is not charged again"


def test_spend_ledger_flushes_restores_and_keeps_charges_through_an_outage():
    from serving._delivery import PacingBook
    from serving._spend import SpendLedger

    class Store:
        def __init__(self):
            self.totals, self.down = {}, False

        def add_spend(self, day, charges):
            if self.down:
                raise ConnectionError("store down")
            for cid, amount in charges.items():
                self.totals[(day, cid)] = self.totals.get((day, cid), 0.0) + amount

        def spend_on(self, day):
            return {cid: v for (d, cid), v in self.totals.items() if d == day}

    t = 20_000 * DAY_S + 60.0
    store, book = Store(), PacingBook()
    ledger = SpendLedger(book, store, flush_s=60, clock=lambda: t)
    book.served("c", 1.0, t, charge=0.25)
    store.down = True
    assert not ledger.flush() and ledger.failures == 1
    store.down = False
    book.served("c", 1.0, t, charge=0.25)
    assert ledger.flush() and store.totals == {(20_000, "c"): 0.5}
    restarted = PacingBook()
    assert SpendLedger(restarted, store, clock=lambda: t).restore() == {"c": 0.5}
    assert restarted.status("c", t).spent == pytest.approx(0.5)
    with pytest.raises(ValueError, match="flush_s"):
        SpendLedger(book, store, flush_s=0)
