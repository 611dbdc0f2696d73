"""Budget pacing over a simulated day where demand exceeds every budget.

Runs serving's own delivery code — ``PacingBook`` (the throttling controller and hard
guard Recommend uses) and ``run_auction`` — on a virtual clock: requests arrive with a
diurnal traffic curve (peaks morning and evening), each with ~8 matching campaigns whose
pCTR is drawn per request; the auction fills 3 slots; CPM winners pay at the impression,
CPC winners when the click arrives (with probability pCTR, after an exponential delay
of mean 90 s), through ``PacingBook.clicked`` as ReportFeedback does. Each campaign's budget
is its unthrottled demand (measured by a first run of the same day) / 4. The plan is the traffic curve (``PlanCurve.from_traffic``).

Figures per campaign whose budget buys at least 50 charges (smaller ones are counted,
not scored: one late click is already 2 % of them) at the end of the day: overspend and underspend in % of the daily
budget (goal: never over by more than 2 %, never under by more than 5 %), and the pacing
RMSE: root mean square of (spend − plan) / budget at hourly checkpoints. Baseline in the
same run: the hard guard alone (no throttling), which spends the budget early.

Then the same day on two server processes, one reached by 90 % of the requests, clicks
reported to either: pacing together through a shared ledger in a real SQLite campaign store
(``serving._spend.SpendLedger``), against each pacing 1/2 of every budget (the baseline: what
every process did before the ledger).

Usage: python -m bench.pacing [--quick]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import tempfile
import time
from pathlib import Path

from bench._common import emit, median, progress

DAY = 86_400.0
DEMAND_OVER_BUDGET = 4.0
MIN_CHARGES = 50
"""Campaigns whose budget buys fewer charges (clicks or impressions at the bid) are not scored."""
SPLIT = (0.9, 0.1)
"""Two server processes, one of them reached by 90 % of the requests (an app's few connections)."""
SYNC_S = 30.0
"""How often (virtual seconds) each process flushes to the shared ledger and reads it back (a
server flushes every second: this is coarser, ~100 requests apart at the day's peak)."""
TRAFFIC = [1, 0.6, 0.4, 0.4, 0.5, 1, 2.5, 5, 6, 5, 4.5, 5, 6, 5.5, 5, 5, 6, 7.5, 9, 8.5, 7, 5, 3, 1.8]


def _campaigns(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed * 1000 + 1)
    out = []
    for i in range(n):
        cpc = rng.random() < 0.6
        out.append({"id": f"c{i}", "adv": f"a{i}", "cpc": cpc,
                    "bid": rng.uniform(0.6, 1.2) if cpc else rng.uniform(15.0, 35.0),
                    "ctr": rng.uniform(0.01, 0.06), "reach": rng.uniform(0.2, 0.6)})
    return out


def _books(plan, config, n: int, shared: Path | None, now: list[float]):
    """``n`` pacing books; with ``shared``, each with a ledger in one real SQLite campaign store."""
    from serving import PacingBook
    from serving._spend import SpendLedger

    if n == 1 or shared is None:
        return [PacingBook(plan, config, share=1.0 / n) for _ in range(n)], [], None
    from campaigns import CampaignStore

    store = CampaignStore.open(f"sqlite:///{shared / 'campaigns.db'}")
    books = [PacingBook(plan, config) for _ in range(n)]
    ledgers = [SpendLedger(b, store, clock=lambda: now[0], writer=f"server-{i}", levels_every=1)
               for i, b in enumerate(books)]
    for ledger in ledgers:
        ledger.restore()
    return books, ledgers, store


def _simulate(camps: list[dict], budgets: dict | None, n_requests: int, seed: int, pacing: bool,
              servers: tuple[float, ...] = (1.0,), shared: Path | None = None) -> dict:
    """One day. ``budgets=None`` measures unthrottled demand (no budget binds).

    ``servers``: the share of requests each server process gets (clicks reach any of them
    alike). With ``shared`` (a directory) the processes pace together through a real SQLite
    campaign store there (``SpendLedger`` flushes every ``SYNC_S`` of the virtual day);
    without it each paces ``1/N`` of every budget, as before the ledger."""
    from serving import AuctionParams, Bidder, PacingBook, PacingConfig, PlanCurve, run_auction

    rng = random.Random(seed)
    route = random.Random(seed * 7 + 5)          # its own stream: one server draws as before
    plan = PlanCurve.from_traffic(TRAFFIC)
    config = PacingConfig(interval_s=300.0) if pacing else PacingConfig(interval_s=1e12, p_min=1.0)
    now = [0.0]
    books, ledgers, store = _books(plan, config, len(servers), shared, now)
    cum_share = [sum(servers[:i + 1]) / sum(servers) for i in range(len(servers))]
    next_sync = SYNC_S
    measuring = budgets is None
    if measuring:
        budgets = {c["id"]: 1e12 for c in camps}
    spend = {c["id"]: 0.0 for c in camps}
    checkpoints = {c["id"]: [] for c in camps}
    clicks: list[tuple[float, str, float]] = []
    cum = [0.0]
    for share in plan.hourly:
        cum.append(cum[-1] + share)
    next_hour = 3600.0
    for k in range(n_requests):
        # arrival time by inverse transform of the traffic curve (sorted: k-th of n uniform quantiles)
        u = (k + rng.random()) / n_requests
        h = min(max(i for i in range(24) if cum[i] <= u), 23)
        t = 3600.0 * (h + (u - cum[h]) / plan.hourly[h])
        while ledgers and t >= next_sync:
            now[0] = next_sync
            for ledger in ledgers:
                ledger.flush()
            next_sync += SYNC_S
        now[0] = t
        while clicks and clicks[0][0] <= t:
            ct, cid, price = heapq.heappop(clicks)
            spend[cid] += price
            books[route.randrange(len(books))].clicked(cid, budgets[cid], ct, price)
        r = route.random()
        book = books[next(i for i, c in enumerate(cum_share) if r < c or i == len(cum_share) - 1)]
        while t >= next_hour:
            for cid in spend:
                checkpoints[cid].append((next_hour, spend[cid]))
            next_hour += 3600.0
        bidders = []
        for c in camps:
            if rng.random() >= c["reach"]:
                continue
            pctr = min(0.5, c["ctr"] * math.exp(rng.gauss(0, 0.5)))
            est_cost = c["bid"] * c["ctr"] if c["cpc"] else c["bid"] / 1000.0
            if book.admit(c["id"], budgets[c["id"]], t, rng.random(), est_cost):
                bidders.append((c, Bidder(c["id"], c["adv"], "CPC" if c["cpc"] else "CPM", c["bid"], pctr)))
        by_id = {b.key: c for c, b in bidders}
        for w in run_auction([b for _, b in bidders], AuctionParams(slots=3, reserve_ecpm=0.5)):
            c = by_id[w.bidder.key]
            expected = w.price * w.bidder.pctr if c["cpc"] else w.price
            if not book.can_afford(c["id"], budgets[c["id"]], t, expected):
                continue
            if c["cpc"]:
                book.served(c["id"], budgets[c["id"]], t, click_price=w.price, pctr=w.bidder.pctr)
                if rng.random() < w.bidder.pctr:
                    heapq.heappush(clicks, (t + rng.expovariate(1 / 90.0), c["id"], w.price))
            else:
                book.served(c["id"], budgets[c["id"]], t, charge=w.price)
                spend[c["id"]] += w.price
    for ct, cid, price in clicks:          # clicks after midnight still belong to the day's impressions
        spend[cid] += price
    if store is not None:
        store.close()
    if measuring:
        return {"demand": spend}
    while next_hour <= DAY:
        for cid in spend:
            checkpoints[cid].append((next_hour, spend[cid]))
        next_hour += 3600.0
    over, under, rmse = [], [], []
    small = 0
    by_id = {c["id"]: c for c in camps}
    for cid, b in budgets.items():
        unit = by_id[cid]["bid"] if by_id[cid]["cpc"] else by_id[cid]["bid"] / 1000.0
        if b < MIN_CHARGES * unit:
            small += 1          # a budget of a few clicks cannot be paced to 2 %: reported, not scored
            continue
        ratio = spend[cid] / b
        over.append(max(0.0, ratio - 1) * 100)
        under.append(max(0.0, 1 - ratio) * 100)
        errs = [((s - b * plan.fraction(t)) / b) ** 2 for t, s in checkpoints[cid]]
        rmse.append(math.sqrt(sum(errs) / len(errs)))
    return {"max_overspend_pct": max(over), "max_underspend_pct": max(under), "pacing_rmse": median(rmse),
            "pacing_rmse_max": max(rmse), "total_budget": sum(budgets.values()), "total_spend": sum(spend.values()),
            "budgets": budgets, "spend": spend, "campaigns_scored": len(over), "campaigns_too_small": small}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pacing", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer campaigns and requests, one seed (< 1 min)")
    args = parser.parse_args(argv)
    started = time.time()
    n_campaigns, n_requests, seeds = (10, 40_000, [1]) if args.quick else (20, 150_000, [1, 2, 3])
    runs, base, shared, apart = [], [], [], []
    for seed in seeds:
        camps = _campaigns(n_campaigns, seed)
        progress(f"seed {seed}: measuring unthrottled demand ({n_requests} requests, {n_campaigns} campaigns) ...")
        demand = _simulate(camps, None, n_requests, seed, pacing=False)["demand"]
        budgets = {cid: round(d / DEMAND_OVER_BUDGET, 2) for cid, d in demand.items()}
        progress(f"seed {seed}: the same day with budgets = demand / {DEMAND_OVER_BUDGET:g}, paced ...")
        runs.append(_simulate(camps, budgets, n_requests, seed, pacing=True))
        runs[-1]["unthrottled_demand_over_budget"] = sum(demand.values()) / sum(budgets.values())
        progress(f"seed {seed}: same day, hard guard only (baseline) ...")
        base.append(_simulate(camps, budgets, n_requests, seed, pacing=False))
        progress(f"seed {seed}: same day on two server processes ({SPLIT[0]:.0%} / {SPLIT[1]:.0%} of the requests), "
                 "pacing together through a shared SQLite ledger ...")
        with tempfile.TemporaryDirectory(prefix="bench-pacing-") as tmp:
            shared.append(_simulate(camps, budgets, n_requests, seed, pacing=True, servers=SPLIT, shared=Path(tmp)))
        progress(f"seed {seed}: same two processes, each pacing 1/2 of every budget (baseline) ...")
        apart.append(_simulate(camps, budgets, n_requests, seed, pacing=True, servers=SPLIT))
        progress(f"  paced: over {runs[-1]['max_overspend_pct']:.2f} %, under {runs[-1]['max_underspend_pct']:.2f} %, "
                 f"RMSE {runs[-1]['pacing_rmse']:.4f}; baseline RMSE {base[-1]['pacing_rmse']:.4f}")
        progress(f"  two processes, shared ledger: over {shared[-1]['max_overspend_pct']:.2f} %, under "
                 f"{shared[-1]['max_underspend_pct']:.2f} %; 1/2 each: under {apart[-1]['max_underspend_pct']:.2f} %")
    figures = {
        "max_overspend_pct": round(max(r["max_overspend_pct"] for r in runs), 3),
        "max_underspend_pct": round(max(r["max_underspend_pct"] for r in runs), 3),
        "pacing_rmse": round(median([r["pacing_rmse"] for r in runs]), 4),
        "pacing_rmse_worst_campaign": round(max(r["pacing_rmse_max"] for r in runs), 4),
        "baseline_guard_only_rmse": round(median([r["pacing_rmse"] for r in base]), 4),
        "baseline_guard_only_max_overspend_pct": round(max(r["max_overspend_pct"] for r in base), 3),
        "ratio_rmse_to_baseline": round(median([r["pacing_rmse"] for r in runs]) / median([r["pacing_rmse"] for r in base]), 3),
        "goal_over_le_2pct": max(r["max_overspend_pct"] for r in runs) <= 2.0,
        "goal_under_le_5pct": max(r["max_underspend_pct"] for r in runs) <= 5.0,
        "unthrottled_demand_over_budget": round(median([r["unthrottled_demand_over_budget"] for r in runs]), 2),
        "two_servers_split": list(SPLIT),
        "two_servers_shared_max_overspend_pct": round(max(r["max_overspend_pct"] for r in shared), 3),
        "two_servers_shared_max_underspend_pct": round(max(r["max_underspend_pct"] for r in shared), 3),
        "two_servers_shared_pacing_rmse": round(median([r["pacing_rmse"] for r in shared]), 4),
        "two_servers_apart_max_overspend_pct": round(max(r["max_overspend_pct"] for r in apart), 3),
        "two_servers_apart_max_underspend_pct": round(max(r["max_underspend_pct"] for r in apart), 3),
        "two_servers_apart_spend_over_budget": round(median([r["total_spend"] / r["total_budget"] for r in apart]), 4),
        "two_servers_shared_spend_over_budget": round(median([r["total_spend"] / r["total_budget"] for r in shared]), 4),
        "two_servers_goals_met": (max(r["max_overspend_pct"] for r in shared) <= 2.0
                                  and max(r["max_underspend_pct"] for r in shared) <= 5.0),
        "two_servers_sync_s": SYNC_S,
        "campaigns": n_campaigns, "requests_per_day": n_requests, "seeds": seeds,
        "campaigns_scored": sum(r["campaigns_scored"] for r in runs),
        "campaigns_not_scored_budget_under_50_charges": sum(r["campaigns_too_small"] for r in runs),
        "seconds": round(time.time() - started, 1),
    }
    emit("pacing", figures, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
