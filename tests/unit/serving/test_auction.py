"""The auction: eCPM ranking, reserve, quality floor, GSP prices, one ad per advertiser."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from serving._auction import AuctionParams, Bidder, run_auction


def b(key, adv, bid, pctr, strategy="CPC"):
    return Bidder(key, adv, strategy, bid, pctr)


def test_ranks_by_expected_revenue_and_charges_second_price():
    wins = run_auction([b("a", "A", 1.0, 0.05), b("b", "B", 2.0, 0.02), b("c", "C", 0.5, 0.04)], AuctionParams(slots=2))
    assert [w.bidder.key for w in wins] == ["a", "b"]
    assert wins[0].ecpm == pytest.approx(50.0)                   # 1.0 × 0.05 × 1000
    assert wins[0].price == pytest.approx(0.04 / 0.05)            # b's value / a's pCTR
    assert wins[1].price == pytest.approx(0.02 / 0.02)            # c's value 0.02 / b's pCTR → 1.0
    assert [w.position for w in wins] == [0, 1]


def test_cpm_bids_compete_on_bid_per_impression():
    wins = run_auction([b("cpm", "A", 30.0, 0.001, "CPM"), b("cpc", "B", 1.0, 0.02)], AuctionParams(slots=2))
    assert [w.bidder.key for w in wins] == ["cpm", "cpc"]         # 0.030 vs 0.020 per impression
    assert wins[0].price == pytest.approx(0.02)                   # per impression, = 20 CPM
    assert wins[0].ecpm == pytest.approx(30.0)


def test_reserve_and_quality_floor_keep_ads_out_and_price_the_last_winner():
    bidders = [b("a", "A", 1.0, 0.05), b("low", "B", 0.1, 0.05), b("irrelevant", "C", 40.0, 0.001)]
    wins = run_auction(bidders, AuctionParams(slots=3, reserve_ecpm=10.0, quality_floor=0.01))
    assert [w.bidder.key for w in wins] == ["a"]
    assert wins[0].price == pytest.approx(0.010 / 0.05)           # pays the reserve (10 eCPM)


def test_at_most_one_ad_per_advertiser():
    wins = run_auction([b("a1", "A", 1.0, 0.05), b("a2", "A", 1.0, 0.04), b("b1", "B", 1.0, 0.01)],
                       AuctionParams(slots=3))
    assert [w.bidder.key for w in wins] == ["a1", "b1"]


def test_zero_slots_or_no_bidders():
    assert run_auction([b("a", "A", 1, 0.1)], AuctionParams(slots=0)) == []
    assert run_auction([], AuctionParams(slots=3)) == []


def test_exploration_gives_the_last_slot_to_a_loser_at_the_reserve():
    bidders = [b(f"k{i}", f"A{i}", 1.0, 0.05 - i * 0.001) for i in range(6)]
    wins = run_auction(bidders, AuctionParams(slots=2, exploration=1.0, reserve_ecpm=1.0), random.Random(1))
    assert wins[0].bidder.key == "k0" and wins[1].explored and wins[1].bidder.key not in ("k0", "k1")
    assert wins[1].price == pytest.approx(0.001 / wins[1].bidder.pctr)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ABCDE"), st.floats(0.01, 50), st.floats(0.0001, 0.5),
                          st.sampled_from(["CPC", "CPM"])), max_size=20),
       st.integers(0, 5), st.floats(0, 50), st.floats(0, 0.1))
def test_prices_never_exceed_bids_and_order_is_by_value(rows, slots, reserve, floor):
    bidders = [b(f"k{i}", adv, bid, p, s) for i, (adv, bid, p, s) in enumerate(rows)]
    wins = run_auction(bidders, AuctionParams(slots=slots, reserve_ecpm=reserve, quality_floor=floor))
    assert len(wins) <= slots and len({w.bidder.advertiser_id for w in wins}) == len(wins)
    for w in wins:
        cap = w.bidder.bid if w.bidder.strategy == "CPC" else w.bidder.bid / 1000
        assert 0 <= w.price <= cap + 1e-12
        assert w.bidder.pctr >= floor and w.ecpm >= reserve - 1e-9
    assert [w.ecpm for w in wins] == sorted((w.ecpm for w in wins), reverse=True)
