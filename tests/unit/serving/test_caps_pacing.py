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


def test_the_book_hands_out_each_charge_once_and_resumes_the_day_from_the_totals():
    from serving._delivery import PacingBook

    t = 20_000 * DAY_S + 3600.0
    book = PacingBook()
    book.served("cpm", 10.0, t, charge=0.02)
    book.served("cpc", 10.0, t, click_price=1.0, pctr=0.1)     # expected, not charged
    book.clicked("cpc", 10.0, t + 5, 1.0)
    book.served("free", None, t, charge=5.0)                   # no budget: not paced, not recorded
    first = book.take_charges()
    assert first == {20_000: {"cpm": pytest.approx(0.02), "cpc": pytest.approx(1.0)}}
    assert book.take_charges() == {}, "each charge once"
    book.give_back(first)                                      # the store was down
    assert book.take_charges() == first
    # a server starting mid-day: what every server charged, budget from the first ask
    fresh = PacingBook()
    fresh.sync(20_000, {"cpm": 9.0})
    assert fresh.status("cpm", t).spent == pytest.approx(9.0)
    assert fresh.can_afford("cpm", 10.0, t, 0.9) and not fresh.can_afford("cpm", 10.0, t, 1.1)
    assert fresh.take_charges() == {}, "restored spend is not charged again"
    # its own stored charges are not counted twice when the totals come back
    fresh.served("cpm", 10.0, t, charge=0.5)
    fresh.take_charges()                                       # stored: the ledger now says 9.5
    fresh.served("cpm", 10.0, t, charge=0.1)                   # not stored yet
    fresh.sync(20_000, {"cpm": 9.5})
    assert fresh.status("cpm", t).spent == pytest.approx(9.6)


def test_a_lone_book_paces_its_share_of_the_budget():
    from serving._delivery import PacingBook

    t = 20_000 * DAY_S + 3600.0
    half = PacingBook(share=0.5)
    half.served("cpm", 10.0, t, charge=4.0)
    assert half.can_afford("cpm", 10.0, t, 0.9) and not half.can_afford("cpm", 10.0, t, 1.1)
    with pytest.raises(ValueError, match="share"):
        PacingBook(share=0.0)


class _Store:
    """The campaign store's pacing calls, in memory (the SQL is tested in tests/integration/campaigns)."""

    def __init__(self):
        self.totals, self.rows, self.down = {}, {}, False

    def add_spend(self, day, charges):
        if self.down:
            raise ConnectionError("store down")
        for cid, amount in charges.items():
            self.totals[(day, cid)] = self.totals.get((day, cid), 0.0) + amount

    def spend_on(self, day):
        if self.down:
            raise ConnectionError("store down")
        return {cid: v for (d, cid), v in self.totals.items() if d == day}

    def put_pacing(self, day, writer, levels):
        if self.down:
            raise ConnectionError("store down")
        for cid, lv in levels.items():
            self.rows[(day, cid, writer)] = lv

    def pacing_writers(self, day):
        if self.down:
            raise ConnectionError("store down")
        return sorted({w for (d, _, w) in self.rows if d == day and w != "~retired"})

    def retire_pacing(self, day, writer):
        from campaigns import PacingLevels

        gone = {cid: self.rows.pop((d, cid, w)) for (d, cid, w) in list(self.rows) if d == day and w == writer}
        for cid, lv in gone.items():
            old = self.rows.get((day, cid, "~retired"), PacingLevels(0.0, 0.0, 0.0, None, 0.0))
            self.rows[(day, cid, "~retired")] = PacingLevels(old.issued + lv.issued, old.outstanding + lv.outstanding,
                                                             old.outstanding_var + lv.outstanding_var,
                                                             lv.rate if lv.rate is not None else old.rate,
                                                             max(old.seen_s, lv.seen_s))
        return len(gone)

    def pacing_totals(self, day, *, exclude_writer=None, fresh_after=None):
        from campaigns import PacingTotals

        out = {}
        for (d, cid, w), lv in self.rows.items():
            if d == day and w != exclude_writer:
                out.setdefault(cid, []).append(lv)
        totals = {}
        for cid, rows in out.items():
            live = [lv for lv in rows if fresh_after is None or lv.seen_s >= fresh_after]
            rated = sorted((lv for lv in rows if lv.rate is not None), key=lambda lv: lv.seen_s)
            totals[cid] = PacingTotals(sum(lv.issued for lv in rows), sum(lv.outstanding for lv in live),
                                       sum(lv.outstanding_var for lv in live), rated[-1].rate if rated else None)
        return totals


def test_spend_ledger_flushes_restores_and_keeps_charges_through_an_outage():
    from serving._delivery import PacingBook
    from serving._spend import SpendLedger

    t = 20_000 * DAY_S + 60.0
    store, book = _Store(), PacingBook()
    ledger = SpendLedger(book, store, flush_s=60, clock=lambda: t)
    book.served("c", 1.0, t, charge=0.25)
    store.down = True
    assert not ledger.flush() and ledger.failures == 1
    store.down = False
    book.served("c", 1.0, t, charge=0.25)
    assert ledger.flush(levels=True) and store.totals == {(20_000, "c"): 0.5}
    assert store.rows[(20_000, "c", ledger.writer)].issued == pytest.approx(0.5), "levels kept through the outage"
    assert book.status("c", t).spent == pytest.approx(0.5), "its own stored charges are not counted twice"
    restarted = PacingBook()
    assert SpendLedger(restarted, store, clock=lambda: t).restore() == {"c": 0.5}
    assert restarted.status("c", t).spent == pytest.approx(0.5)
    with pytest.raises(ValueError, match="flush_s"):
        SpendLedger(book, store, flush_s=0)
    with pytest.raises(ValueError, match="levels_every"):
        SpendLedger(book, store, levels_every=0)


def test_two_processes_pace_one_budget_however_the_requests_spread():
    """All requests on one process (an app on one connection): it may spend the whole budget,
    and the other process sees that spend after a flush."""
    from serving._delivery import PacingBook
    from serving._spend import SpendLedger

    t = 20_000 * DAY_S + 3600.0
    store = _Store()
    a, b = PacingBook(), PacingBook()
    la, lb = SpendLedger(a, store, clock=lambda: t), SpendLedger(b, store, clock=lambda: t)
    la.restore(), lb.restore()
    served = 0
    while a.can_afford("cpm", 10.0, t, 1.0):
        a.served("cpm", 10.0, t, charge=1.0)
        served += 1
    assert served == 10, f"process A alone served {served} of a budget of 10 charges (1/2 share would be 5)"
    assert b.can_afford("cpm", 10.0, t, 1.0), "B has not heard of A's spend yet"
    assert la.flush() and lb.flush()
    assert not b.can_afford("cpm", 10.0, t, 1.0), "after a flush B knows the budget is spent"
    assert b.status("cpm", t).spent == pytest.approx(10.0) and a.status("cpm", t).spent == pytest.approx(10.0)


def test_the_other_processes_pending_clicks_are_reserved_for_the_click_window():
    from serving._delivery import PacingBook
    from serving._spend import SpendLedger

    now = [20_000 * DAY_S + 3600.0]
    store = _Store()
    a, b = PacingBook(), PacingBook()
    la, lb = SpendLedger(a, store, clock=lambda: now[0]), SpendLedger(b, store, clock=lambda: now[0])
    for _ in range(20):
        a.served("cpc", 10.0, now[0], click_price=2.0, pctr=0.2)     # 8.0 of expected cost pending
    assert la.flush() and lb.flush()            # the first flush of each carries the levels too
    pending = b.status("cpc", now[0])
    assert pending.outstanding == pytest.approx(8.0) and pending.spent == 0.0
    assert not b.can_afford("cpc", 10.0, now[0], 1.5), "A's pending clicks leave B less than 1.5"
    la.stop()                                    # A stops (a deploy): its last levels stay behind
    now[0] += 601.0
    assert lb.flush()
    assert b.status("cpc", now[0]).outstanding == pytest.approx(8.0), "levels are read every levels_every flushes"
    assert lb.flush(levels=True)
    assert b.status("cpc", now[0]).outstanding == 0.0, "after the click window no click of A's is due"
    assert b.can_afford("cpc", 10.0, now[0], 1.5)


def test_a_restarted_process_throttles_at_once_with_the_rate_it_left():
    from serving._delivery import PacingBook
    from serving._spend import SpendLedger

    now = [20_000 * DAY_S + 8 * 3600.0]
    store = _Store()
    first = PacingBook(config=PacingConfig(interval_s=60))
    lf = SpendLedger(first, store, clock=lambda: now[0])
    rng = random.Random(3)
    for _ in range(3000):                         # 10 requests a second, each 0.05 if admitted: 10x the plan
        now[0] += 0.1
        if first.admit("c", 100.0, now[0], rng.random(), 0.05):
            first.served("c", 100.0, now[0], charge=0.05)
    rate = first.status("c", now[0]).rate
    throttled = first.status("c", now[0]).p
    assert rate == pytest.approx(0.5, rel=0.25) and throttled < 0.5
    lf.stop()
    restarted = PacingBook(config=PacingConfig(interval_s=60))
    SpendLedger(restarted, store, clock=lambda: now[0]).restore()
    assert restarted.status("c", now[0]).rate == pytest.approx(rate)
    restarted.admit("c", 100.0, now[0], 0.0, 0.05)
    assert restarted.status("c", now[0]).p == pytest.approx(throttled, rel=0.2), \
        "the restarted process starts at p = 1 and serves unthrottled for its first interval"


def test_a_carried_over_rate_sets_p_at_the_first_observation():
    state = PacerState(budget=100.0, rate=1.0)          # 1 money/s unthrottled; 100 left for half a day
    p = update(state, 12 * 3600.0, PlanCurve())
    assert p == pytest.approx(100.0 / 43_200.0, rel=0.01)
    fresh = PacerState(budget=100.0)
    assert update(fresh, 12 * 3600.0, PlanCurve()) == 1.0


def test_a_stopping_ledger_folds_its_rows_and_the_others_still_count_them():
    from campaigns import RETIRED_WRITER
    from serving._delivery import PacingBook
    from serving._spend import SpendLedger

    now = [20_000 * DAY_S + 3600.0]
    store = _Store()
    for generation in range(3):                   # three restarts of one process in a day
        book = PacingBook()
        ledger = SpendLedger(book, store, clock=lambda: now[0])
        ledger.restore()
        book.served("cpm", 100.0, now[0], charge=1.0)
        ledger.stop()
        assert not any(w == ledger.writer for (_, _, w) in store.rows), "its rows are folded at stop"
        now[0] += 60.0
    assert set(store.rows) == {(20_000, "cpm", RETIRED_WRITER)}
    reader = PacingBook()
    reader_ledger = SpendLedger(reader, store, clock=lambda: now[0])
    reader_ledger.restore()
    assert reader.status("cpm", now[0]).spent == pytest.approx(3.0)
    assert store.rows[(20_000, "cpm", RETIRED_WRITER)].issued == pytest.approx(3.0)
    store.down = True
    reader.served("cpm", 100.0, now[0], charge=1.0)
    reader_ledger.stop()                          # the store is down: nothing folded, nothing lost
    store.down = False
    assert reader.take_charges() == {20_000: {"cpm": pytest.approx(1.0)}}


def test_rows_of_a_crashed_process_are_folded_and_only_those():
    """A process killed before ``stop`` leaves its rows; the next ledger on its node folds
    them (same totals, fewer rows). A live process's rows, another node's and an id of an
    older shape stay: folding a live writer would count its cost twice."""
    import os
    import subprocess
    import sys

    from campaigns import RETIRED_WRITER, PacingLevels
    from serving._delivery import PacingBook
    from serving._spend import SpendLedger, _node, writer_is_gone

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()                                             # its pid is free now
    node = _node()
    crashed = f"host-{node}-{gone.pid}-0123abcd"
    alive = f"host-{node}-{os.getppid()}-4567cdef"           # the pytest runner's parent: running
    elsewhere = f"host-{'0' * 8 if node != '0' * 8 else '1' * 8}-{gone.pid}-89abcdef"
    old_shape = f"host-{gone.pid}-89abcdef"
    assert writer_is_gone(crashed) and not writer_is_gone(alive)
    assert not writer_is_gone(elsewhere) and not writer_is_gone(old_shape) and not writer_is_gone("x")

    now = 20_000 * DAY_S + 3600.0
    store = _Store()
    for i, w in enumerate((crashed, alive, elsewhere, old_shape)):
        store.put_pacing(20_000, w, {"cpm": PacingLevels(1.0 + i, 0.0, 0.0, None, now - 60.0)})
    before = store.pacing_totals(20_000)["cpm"].issued
    book = PacingBook()
    ledger = SpendLedger(book, store, clock=lambda: now)
    ledger.restore()
    writers = {w for (_, _, w) in store.rows}
    assert writers == {RETIRED_WRITER, alive, elsewhere, old_shape}, "only the crashed writer is folded"
    assert store.pacing_totals(20_000)["cpm"].issued == pytest.approx(before) == pytest.approx(10.0)
    assert ledger.fold_gone() == 0, "a second pass finds nothing to fold"

    # the flush thread looks again every fold_every_s: a writer that crashes later is folded then
    later = f"host-{node}-{gone.pid}-fedc9876"
    store.put_pacing(20_000, later, {"cpm": PacingLevels(5.0, 0.0, 0.0, None, now)})
    clock = [now]
    ledger = SpendLedger(PacingBook(), store, clock=lambda: clock[0], fold_every_s=300.0)
    assert ledger.flush() and (20_000, "cpm", later) in store.rows, "not due yet"
    clock[0] += 300.0
    assert ledger.flush() and (20_000, "cpm", later) not in store.rows
    assert store.rows[(20_000, "cpm", RETIRED_WRITER)].issued == pytest.approx(6.0)

    def no_listing(day):
        raise ConnectionError("store down")

    crashed_too = f"host-{node}-{gone.pid}-11112222"
    store.put_pacing(20_000, crashed_too, {"cpm": PacingLevels(1.0, 0.0, 0.0, None, now)})
    store.pacing_writers = no_listing                      # a fold that fails does not stop a restore
    assert SpendLedger(PacingBook(), store, clock=lambda: now).restore() == {}
    assert (20_000, "cpm", crashed_too) in store.rows, "nothing folded, nothing lost"
