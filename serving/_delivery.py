"""Delivery state of one server process: pacing controllers per campaign and day, and the
expected cost of served CPC impressions still waiting for their click.

Alone, a process paces what it charged (``share`` of each budget: 1/N for N servers that
cannot see each other). With a shared store it paces the **whole** budget against every
server's totals: a ``SpendLedger`` (serving._spend) hands this book's charges and levels
to the campaign store every second and gives back what the other processes charged,
issued and still have outstanding (``sync``). Then a campaign spends its budget however
unevenly the requests spread over the processes, and a restarted process resumes the
day's spend, the other processes' pending CPC cost and the campaign's spend-rate estimate.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from typing import TYPE_CHECKING

from serving._pacing import DAY_S, PacerState, PacingConfig, PlanCurve, admit, update

if TYPE_CHECKING:       # the store's type; importing campaigns here would load SQLAlchemy with serving
    from campaigns import PacingTotals


@dataclass
class _Campaign:
    state: PacerState
    """Totals the controller and the guard read: this process's own figures + the others' (``sync``)."""
    pending: deque  # (t, expected cost, variance) of own CPC impressions within the click window
    unflushed: float = 0.0  # charged since the last take_charges
    own_spent: float = 0.0
    own_issued: float = 0.0
    own_outstanding: float = 0.0
    own_var: float = 0.0
    ext_spent: float = 0.0
    ext_issued: float = 0.0
    ext_outstanding: float = 0.0
    ext_var: float = 0.0
    dirty: bool = False  # own levels or the rate estimate changed since the last ``levels``

    def total(self) -> None:
        """The state's totals from the two parts: every change to a part ends here, so they cannot drift."""
        st = self.state
        st.spent = self.own_spent + self.ext_spent
        st.issued = self.own_issued + self.ext_issued
        st.outstanding = self.own_outstanding + self.ext_outstanding
        st.outstanding_var = self.own_var + self.ext_var


class PacingBook:
    """Thread-safe pacing for every campaign; ``t`` is epoch seconds (UTC days)."""

    def __init__(self, plan: PlanCurve | None = None, config: PacingConfig | None = None, *,
                 click_window_s: float = 600.0, share: float = 1.0) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}; use 1/N for N servers that pace apart")
        self.plan = plan or PlanCurve()
        self.config = config or PacingConfig()
        self.click_window_s = click_window_s
        self.share = share
        self._book: dict[tuple[str, int], _Campaign] = {}
        self._lock = threading.Lock()

    def _entry(self, campaign_id: str, day: int) -> _Campaign:
        key = (campaign_id, day)
        entry = self._book.get(key)
        if entry is None:
            entry = self._book[key] = _Campaign(PacerState(budget=0.0), deque())
            for old in [k for k in self._book if k[1] < day - 1]:
                del self._book[old]
        return entry

    def _get(self, campaign_id: str, budget: float, t: float) -> tuple[_Campaign, float]:
        day = int(t // DAY_S)
        entry = self._entry(campaign_id, day)
        entry.state.budget = budget * self.share   # a budget change applies at once
        return entry, t - day * DAY_S

    def _expire(self, entry: _Campaign, t: float) -> None:
        if not entry.pending or entry.pending[0][0] >= t - self.click_window_s:
            return
        while entry.pending and entry.pending[0][0] < t - self.click_window_s:
            _, cost, var = entry.pending.popleft()
            entry.own_outstanding = max(0.0, entry.own_outstanding - cost)
            entry.own_var = max(0.0, entry.own_var - var)
        if not entry.pending:
            entry.own_outstanding = entry.own_var = 0.0    # no float residue once nothing is pending
        entry.total()
        entry.dirty = True

    def _update(self, entry: _Campaign, sec: float) -> None:
        last = entry.state.last_t
        update(entry.state, sec, self.plan, self.config)
        if entry.state.last_t != last:
            entry.dirty = True          # a new rate estimate: other processes may adopt it

    def admit(self, campaign_id: str, budget: float | None, t: float, draw: float, expected_cost: float) -> bool:
        """Does the campaign take part in a request at ``t``? (No budget = no pacing.)"""
        if budget is None:
            return True
        with self._lock:
            entry, sec = self._get(campaign_id, budget, t)
            self._expire(entry, t)
            self._update(entry, sec)
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
                self._update(entry, sec)
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
            entry.own_spent += charge
            entry.own_issued += charge
            entry.unflushed += charge
            if click_price:
                cost, var = click_price * pctr, click_price * click_price * pctr * (1 - pctr)
                entry.pending.append((t, cost, var))
                entry.own_outstanding += cost
                entry.own_var += var
                entry.own_issued += cost
            entry.total()
            entry.dirty = True

    def clicked(self, campaign_id: str, budget: float | None, t: float, charge: float) -> None:
        """Record a click's charge. Its impression's expected cost stays pending until the click
        window ends (a slight over-estimate of committed spend: errs towards underspend)."""
        if budget is None:
            return
        with self._lock:
            entry, _ = self._get(campaign_id, budget, t)
            entry.own_spent += charge
            entry.unflushed += charge
            entry.total()

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

    def levels(self, day: int, now: float) -> dict[str, tuple[float, float, float, float | None, float]]:
        """Campaign → this process's own levels on ``day`` that changed since the last call, in
        ``PacingLevels`` order (issued, outstanding, variance, rate estimate, ``now``), for the other
        processes' ``sync``. Call ``touch`` with the campaigns if they could not be stored."""
        out = {}
        with self._lock:
            for (campaign_id, d), entry in self._book.items():
                if d == day and entry.dirty:
                    entry.dirty = False
                    out[campaign_id] = (entry.own_issued, entry.own_outstanding, entry.own_var, entry.state.rate, now)
        return out

    def touch(self, day: int, campaign_ids) -> None:
        """Mark levels as changed again (their write failed)."""
        with self._lock:
            for campaign_id in campaign_ids:
                entry = self._book.get((campaign_id, day))
                if entry is not None:
                    entry.dirty = True

    def sync(self, day: int, spent: dict[str, float], others: "dict[str, PacingTotals] | None" = None) -> None:
        """Take in every server's figures for ``day``: ``spent`` = campaign → total charged by all
        (the spend ledger, this process's stored charges included); ``others`` = campaign →
        ``PacingTotals`` of the *other* processes (``CampaignStore.pacing_totals``: their pending
        CPC cost only of writers within the click window, as a stopped process's clicks can
        still come), or None to keep the last ones. A campaign without a rate estimate adopts
        the newest other writer's, so a restarted process throttles at once instead of serving
        unthrottled for its first interval. O(campaigns) under the book's lock, which requests
        wait for: the store did the summing."""
        with self._lock:
            ids = set(spent) | set(others or ()) | {cid for cid, d in self._book if d == day}
            for campaign_id in ids:
                entry = self._entry(campaign_id, int(day))
                flushed = entry.own_spent - entry.unflushed
                entry.ext_spent = max(0.0, spent.get(campaign_id, 0.0) - flushed)
                theirs = None if others is None else others.get(campaign_id)
                if theirs is not None:
                    entry.ext_issued, entry.ext_outstanding, entry.ext_var = (
                        theirs.issued, theirs.outstanding, theirs.outstanding_var)
                    if entry.state.rate is None and theirs.rate is not None:
                        entry.state.rate = theirs.rate
                elif others is not None:             # none of the others has levels for it (any more)
                    entry.ext_issued = entry.ext_outstanding = entry.ext_var = 0.0
                entry.total()

    def status(self, campaign_id: str, t: float) -> PacerState | None:
        with self._lock:
            entry = self._book.get((campaign_id, int(t // DAY_S)))
            return None if entry is None else entry.state
