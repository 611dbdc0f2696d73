"""The ranker seam (registry resolve/load, fallback, promotion) and impression tokens."""

import pytest

from serving._ranker import FALLBACK_VERSION, ContextRelevanceRanker, RegistryRankers
from serving._tokens import Impression, TokenSigner
from serving.errors import InvalidRequest


class _Model:
    def __init__(self, version):
        self.version = version

    def score(self, rows):
        return [0.5] * len(rows)


class _Registry:
    def __init__(self):
        self.aliases = {}
        self.loads = 0

    def resolve(self, ref):
        if ref in self.aliases:
            return self.aliases[ref]
        raise KeyError(f"no model {ref!r}")

    def load(self, version):
        self.loads += 1
        return _Model(version)


def test_fallback_until_a_model_is_registered_then_promotion_within_ttl():
    now = [0.0]
    registry = _Registry()
    rankers = RegistryRankers(registry, ttl_s=30, clock=lambda: now[0])
    assert rankers.get("production").version == FALLBACK_VERSION and rankers.last_error is not None
    registry.aliases["production"] = "v1"
    assert rankers.get("production").version == FALLBACK_VERSION      # cached until the TTL passes
    now[0] = 31
    assert rankers.get("production").version == "v1" and rankers.last_error is None
    registry.aliases["production"] = "v2"
    registry.aliases["candidate"] = "v1"
    now[0] = 62
    assert rankers.get("production").version == "v2" and rankers.get("candidate").version == "v1"
    assert registry.loads == 2, "each version is loaded once"


def test_no_registry_means_fallback():
    assert RegistryRankers(None).get("production").version == FALLBACK_VERSION


def test_fallback_ranker_prefers_relevance_and_clicks():
    r = ContextRelevanceRanker()
    low, high, clicked, liked = r.score([
        {"relevance": 0.0}, {"relevance": 3.0},
        {"relevance": 0.0, "item_impressions_24h": 1000, "item_clicks_24h": 100},
        {"relevance": 0.0, "user_category_clicks_7d": 3}])
    assert 0 < low < high < 1 and clicked > low and liked > low


def test_tokens_round_trip_and_refuse_tampering_and_age():
    signer = TokenSigner("secret", ttl_s=60)
    imp = Impression(rid="r1", uid="u1", kind=1, item="cr1", pos=0, t=1_000_000, cid="c1", price=0.5,
                     arms={"exp": "b"})
    token = signer.sign(imp)
    assert signer.verify(token, 1_000_500) == imp
    body, sig = token.split(".")
    for bad in (body + "x." + sig, body + "." + sig[:-2] + "AA", "", "a.b.c", "!!!.???"):
        with pytest.raises(InvalidRequest) as info:
            signer.verify(bad, 1_000_500)
        assert info.value.field == "impression_token"
    with pytest.raises(InvalidRequest, match="expired"):
        signer.verify(token, 1_000_000 + 61_000)
    with pytest.raises(InvalidRequest):
        TokenSigner("other-key", 60).verify(token, 1_000_500)


def test_tokens_are_arrays_and_tokens_of_the_object_format_still_verify():
    import base64
    import json

    signer = TokenSigner("secret", ttl_s=60)
    imp = Impression(rid="r1", uid="u1", kind=2, item="sku1", pos=3, t=1_000_000, sku="sku1", cat="a/b", pctr=0.25,
                     cons=7, arms={"exp": "b"})
    body = signer.sign(imp).split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))[:5] == ["r1", "u1", 2, "sku1", 3]

    def issued(payload: bytes) -> str:        # a token as this key signs it, whatever the payload
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
        return f"{b64(payload)}.{b64(signer._sig(payload))}"

    old = json.dumps(imp._asdict(), separators=(",", ":"), sort_keys=True).encode()
    assert signer.verify(issued(old), 1_000_500) == imp, "tokens issued before the array format stay valid"
    for payload in (b'"a string"', b"[1, 2]", b'{"rid": "r1"}', b"not json"):
        with pytest.raises(InvalidRequest) as info:
            signer.verify(issued(payload), 1_000_500)
        assert info.value.field == "impression_token"
