"""The admin API's protobuf form of a campaign loses nothing (Campaign → CampaignSpec → Campaign)."""

from __future__ import annotations

from campaigns import Campaign
from campaigns._admin import campaign_doc as spec_to_doc, campaign_to_pb


def test_campaign_proto_round_trip(campaign_doc):
    from proto import admin_pb2 as pb

    full = campaign_doc(
        objective="conversions",
        schedule={"start": "2026-11-01T08:00:00Z", "end": "2026-12-01T00:00:00Z",
                  "dayparting": [{"weekdays": [5, 6], "start_hour": 9, "end_hour": 21}]},
        budget={"daily": 50.0, "currency": "EUR"},
        bid={"strategy": "CPM", "amount": 4.5},
        targeting={"scenes": ["gym"], "objects": ["running_shoe"], "keywords": ["marathon"],
                   "categories": ["sports"], "location_categories": ["retail"], "regions": ["DE-BE"],
                   "devices": ["phone"]},
        frequency_cap={"per_week": 7, "skip_uncounted": True},
        excluded_categories=["health"],
        creatives=[{"id": "a", "headline": "H", "body": "B", "image_url": "https://img.example/a.png",
                    "landing_url": "https://shop.example/a", "call_to_action": "Learn more",
                    "product_sku": "sku-1", "status": "paused"},
                   {"id": "b", "headline": "H2", "landing_url": "https://shop.example/b"}],
    )
    c = Campaign.from_doc(full)
    back = Campaign.from_doc(spec_to_doc(pb.CampaignSpec.FromString(campaign_to_pb(c, pb).SerializeToString())))
    assert back.to_doc() == c.to_doc()
