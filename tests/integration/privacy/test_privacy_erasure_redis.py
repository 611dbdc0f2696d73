"""Erasure on the prod-profile online store: Feast on a real Redis (Debian's redis-server)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from privacy import erase_user, pseudonymize

pytestmark = pytest.mark.integration


def test_erase_user_deletes_the_users_redis_hash(make_settings, redis_url, privacy_kit):
    import redis

    from features import VIEWS, apply_repo

    s = make_settings(feast={"online_store": "redis", "redis_url": redis_url})
    store = apply_repo(s)
    victim = pseudonymize("app-user-victim", s.privacy.hmac_key)
    bystander = pseudonymize("app-user-bystander", s.privacy.hmac_key)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for view in VIEWS:
        ids = [victim, bystander] if view.user_keyed else ["item-1"]
        store.write_to_online_store(view.name, privacy_kit.view_frame(view, ids, now))
    host, port = redis_url.split(":")
    client = redis.Redis(host=host, port=int(port))
    keys_before = set(client.keys("*"))
    assert any(victim.encode() in k for k in keys_before)

    receipt = erase_user(s, "app-user-victim")
    assert receipt.deleted("feast_online_redis") == 1, receipt.stores
    keys_after = set(client.keys("*"))
    assert not any(victim.encode() in k for k in keys_after), "the victim's hash is gone"
    assert any(bystander.encode() in k for k in keys_after) and len(keys_after) == len(keys_before) - 1
    user_view = next(v for v in VIEWS if v.user_keyed)
    got = store.get_online_features(features=[f"{user_view.name}:{user_view.feature_names[0]}"],
                                    entity_rows=[{"user_id": victim}, {"user_id": bystander}]).to_dict()
    assert got[user_view.feature_names[0]][0] is None and got[user_view.feature_names[0]][1] is not None
    client.close()
