"""The ads auction: a pure function over plain candidates.

Ranking value is the expected revenue of one impression, reported as eCPM (× 1000):
CPC bids earn ``bid × pCTR`` per impression, CPM bids ``bid / 1000``. Candidates below
the quality floor (pCTR) or the reserve (eCPM) never enter; each advertiser keeps only
its best ad (diversity); the winners pay the generalized second price — the least
that would have kept their position — which is never more than their bid.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple, Sequence


class Bidder(NamedTuple):
    """One ad that may take part in the auction (a tuple: ~50 are made per request)."""

    key: str
    """Unique id of the ad (creative id)."""
    advertiser_id: str
    strategy: str
    """``CPC`` (bid per click) or ``CPM`` (bid per thousand impressions)."""
    bid: float
    pctr: float
    """The ranker's click probability for this ad in this request."""

    @property
    def value(self) -> float:
        """Expected revenue of one impression."""
        return self.bid * self.pctr if self.strategy == "CPC" else self.bid / 1000.0


@dataclass(frozen=True)
class AuctionParams:
    """Per-request auction settings (experiment arms may change them)."""

    slots: int
    """How many ads the reply may carry."""
    reserve_ecpm: float = 0.0
    """Least eCPM (expected revenue per thousand impressions) an ad must bring."""
    quality_floor: float = 0.0
    """Least pCTR an ad must have, whatever its bid (keeps irrelevant ads out)."""
    exploration: float = 0.0
    """Chance that the last slot goes to a random eligible ad (charged the reserve), so the
    ranker keeps learning about ads it would rarely show."""


class Win(NamedTuple):
    """One won slot: the ad, its position, eCPM and the price it pays."""

    bidder: Bidder
    position: int
    ecpm: float
    price: float
    """Charge per click (CPC) or per impression (CPM, i.e. the per-mille price / 1000)."""
    explored: bool = False


def _price(bidder: Bidder, next_value: float) -> float:
    """Least price keeping ``bidder`` above ``next_value`` (per-impression value), capped at its bid."""
    if bidder.strategy == "CPC":
        return min(bidder.bid, next_value / bidder.pctr) if bidder.pctr > 0 else bidder.bid
    return min(bidder.bid / 1000.0, next_value)


def run_auction(bidders: Sequence[Bidder], params: AuctionParams, rng: random.Random | None = None) -> list[Win]:
    """Winners in slot order. Pure apart from ``rng`` (used only when exploring)."""
    if params.slots <= 0:
        return []
    reserve = params.reserve_ecpm / 1000.0
    eligible = [b for b in bidders if b.pctr >= params.quality_floor and b.value >= reserve and b.value > 0]
    best: dict[str, Bidder] = {}
    for b in eligible:
        cur = best.get(b.advertiser_id)
        if cur is None or (b.value, b.key) > (cur.value, cur.key):
            best[b.advertiser_id] = b
    ranked = sorted(best.values(), key=lambda b: (-b.value, b.key))
    wins: list[Win] = []
    for i, b in enumerate(ranked[: params.slots]):
        next_value = ranked[i + 1].value if i + 1 < len(ranked) else reserve
        wins.append(Win(b, i, b.value * 1000.0, _price(b, max(next_value, reserve))))
    losers = ranked[params.slots:]
    if params.exploration > 0 and rng is not None and losers and rng.random() < params.exploration:
        pick = rng.choice(losers)
        position = params.slots - 1
        wins = wins[:position] + [Win(pick, position, pick.value * 1000.0, _price(pick, reserve), explored=True)]
    return wins
