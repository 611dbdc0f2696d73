"""Delivery state of one server: pacing controllers per campaign and day, and the
expected cost of served CPC impressions still waiting for their click.

Single-server view: spend is what this server charged (CPM impressions it served, CPC
clicks reported to it). Behind a load balancer each server paces an equal share of
the budget (``share``), see docs/serving.md.

What it charges is also handed out (``take_charges``) for a durable ledger shared by every
server (``CampaignStore.add_spend``); a server starting mid-day ``restore``s its share of
today's ledger, so a restart does not pace the day's budget again from zero.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from serving._pacing import DAY_S, PacerState, PacingConfig, PlanCurve, admit, update


@dataclass
class _Campaign:
    state: PacerState
    pending: deque  # (t, expected cost) of CPC impressions within the click window
    unflushed: float = 0.0  # charged since the last take_charges


class PacingBook:
    """Thread-safe pacing for every campaign; ``t`` is epoch seconds (UTC days)."""

    def __init__(self, plan: PlanCurve | None = None, config: PacingConfig | None = None, *,
                 click_window_s: float = 600.0, share: float = 1.0) -> None:
        self.plan = plan or PlanCurve()
        self.config = config or PacingConfig()
        self.click_window_s = click_window_s
        self.share = share
        self._book: dict[tuple[str, int], _Campaign] = {}
        self._lock = threading.Lock()

    def _get(self, campaign_id: str, budget: float, t: float) -> tuple[_Campaign, float]:
        day = int(t // DAY_S)
        key = (campaign_id, day)
        entry = self._book.get(key)
        if entry is None:
            entry = _Campaign(PacerState(budget=budget * self.share), deque())
            self._book[key] = entry
            for old in [k for k in self._book if k[1] < day - 1]:
                del self._book[old]
        entry.state.budget = budget * self.share   # a budget change applies at once
        return entry, t - day * DAY_S

    def _expire(self, entry: _Campaign, t: float) -> None:
        while entry.pending and entry.pending[0][0] < t - self.click_window_s:
            _, cost, var = entry.pending.popleft()
            entry.state.outstanding = max(0.0, entry.state.outstanding - cost)
            entry.state.outstanding_var = max(0.0, entry.state.outstanding_var - var)

    def admit(self, campaign_id: str, budget: float | None, t: float, draw: float, expected_cost: float) -> bool:
        """Does the campaign take part in a request at ``t``? (No budget = no pacing.)"""
        if budget is None:
            return True
        with self._lock:
            entry, sec = self._get(campaign_id, budget, t)
            self._expire(entry, t)
            update(entry.state, sec, self.plan, self.config)
            return admit(entry.state, draw, expected_cost)

    def admit_many(self, asks, t: float, draws) -> list[bool]:
        """``admit`` for each ``(campaign_id, budget, expected_cost)`` of one request, with its draw,
        under one lock acquisition (a request asks for ~50 ads; same answers as 50 ``admit`` calls)."""
        out = []
        with self._lock:
            for (campaign_id, budget, expected_cost), draw in zip(asks, draws):
                if budget is None:
                    out.append(True)
                    continue
                entry, sec = self._get(campaign_id, budget, t)
                self._expire(entry, t)
                update(entry.state, sec, self.plan, self.config)
                out.append(admit(entry.state, draw, expected_cost))
        return out

    def can_afford(self, campaign_id: str, budget: float | None, t: float, expected_cost: float) -> bool:
        if budget is None:
            return True
        with self._lock:
            entry, _ = self._get(campaign_id, budget, t)
            self._expire(entry, t)
            state = entry.state
            return state.committed + state.reserve + expected_cost <= state.budget

    def served(self, campaign_id: str, budget: float | None, t: float, *, charge: float = 0.0,
               click_price: float = 0.0, pctr: float = 0.0) -> None:
        """Record an impression: a CPM ``charge`` now, or a CPC ``click_price`` due with probability ``pctr``."""
        if budget is None:
            return
        with self._lock:
            entry, _ = self._get(campaign_id, budget, t)
            state = entry.state
            state.spent += charge
            state.issued += charge
            entry.unflushed += charge
            if click_price:
                cost, var = click_price * pctr, click_price * click_price * pctr * (1 - pctr)
                entry.pending.append((t, cost, var))
                state.outstanding += cost
                state.outstanding_var += var
                state.issued += cost

    def clicked(self, campaign_id: str, budget: float | None, t: float, charge: float) -> None:
        """Record a click's charge. Its impression's expected cost stays pending until the click
        window ends (a slight over-estimate of committed spend: errs towards underspend)."""
        if budget is None:
            return
        with self._lock:
            entry, _ = self._get(campaign_id, budget, t)
            entry.state.spent += charge
            entry.unflushed += charge

    def take_charges(self) -> dict[int, dict[str, float]]:
        """Day → campaign → what was charged since the last call (whole charges, not this
        server's share); the book forgets them, so hand them back with ``give_back`` if
        they could not be stored."""
        out: dict[int, dict[str, float]] = {}
        with self._lock:
            for (campaign_id, day), entry in self._book.items():
                if entry.unflushed:
                    out.setdefault(day, {})[campaign_id] = entry.unflushed
                    entry.unflushed = 0.0
        return out

    def give_back(self, charges: dict[int, dict[str, float]]) -> None:
        """Charges ``take_charges`` gave that were not stored: the next call hands them out again."""
        with self._lock:
            for day, by_campaign in charges.items():
                for campaign_id, amount in by_campaign.items():
                    entry = self._book.get((campaign_id, day))
                    if entry is not None:
                        entry.unflushed += amount

    def restore(self, day: int, spent: dict[str, float]) -> None:
        """Start ``day`` from what every server charged so far (``CampaignStore.spend_on``):
        this server takes its ``share``. Called before serving, so nothing is counted twice;
        the budget is set by the first request that asks for the campaign."""
        with self._lock:
            for campaign_id, amount in spent.items():
                key = (campaign_id, int(day))
                entry = self._book.get(key)
                if entry is None:
                    entry = self._book[key] = _Campaign(PacerState(budget=0.0), deque())
                entry.state.spent += amount * self.share
                entry.state.issued += amount * self.share

    def status(self, campaign_id: str, t: float) -> PacerState | None:
        with self._lock:
            entry = self._book.get((campaign_id, int(t // DAY_S)))
            return None if entry is None else entry.state
