"""Impression tokens: self-contained, signed records of one served item.

A token is ``base64url(json) + "." + base64url(hmac_sha256(key, json)[:16])``, the JSON
being the ``Impression`` fields as an array in declaration order (tokens issued before
that were an object with the short keys; ``verify`` still reads both). It carries
what ReportFeedback needs to build a ``FeedbackEvent`` without any server-side state
(so any server behind the load balancer can take the click), and nothing the app may
not see: no secret, only ids, prices and the arms of this very reply. Forged or altered
tokens fail the signature; expired ones are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import NamedTuple

from serving.errors import InvalidRequest


class Impression(NamedTuple):
    """What a token says about one served item (short JSON keys keep tokens small; a tuple
    because a request issues ~13 of them)."""

    rid: str                    # request id
    uid: str                    # user id as sent by the app (pseudonymous)
    kind: int                   # events_pb2.ItemKind
    item: str                   # creative id (ads) or sku (suggestions)
    pos: int
    t: int                      # issue time, epoch ms
    cid: str = ""               # campaign id
    adv: str = ""               # advertiser id
    sku: str = ""
    cat: str = ""
    strat: str = ""             # CPC | CPM | "" (suggestions)
    price: float = 0.0          # charge per click (CPC) or per impression (CPM)
    pctr: float = 0.0
    mv: str = ""                # model version
    app: str = ""
    cons: int = 0               # consent bits: 1 context, 2 personalization, 4 measurement
    arms: dict[str, str] = {}   # never mutated; a fresh dict per request in practice


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: str, ttl_s: int) -> None:
        self._key = hashlib.sha256(b"sightline-impression-token:" + key.encode()).digest()
        self._ttl_ms = ttl_s * 1000
        self._hmac = hmac.new(self._key, digestmod=hashlib.sha256)   # keyed once; copied per token
        # json.dumps minus its per-call set-up; the tuple encodes as an array: no keys to build,
        # sort or send (a request signs ~13 tokens; an object with sorted keys cost twice as much)
        self._encode = json.JSONEncoder(separators=(",", ":")).encode

    def _sig(self, payload: bytes) -> bytes:
        h = self._hmac.copy()
        h.update(payload)
        return h.digest()[:16]

    def sign(self, imp: Impression) -> str:
        payload = self._encode(imp).encode()
        return f"{_b64(payload)}.{_b64(self._sig(payload))}"

    def verify(self, token: str, now_ms: int) -> Impression:
        """The impression inside ``token``; ``InvalidRequest`` (field impression_token) when it is bad."""
        bad = InvalidRequest("impression_token is not a token this service issued (or it was altered); "
                             "send the token from the RecommendResponse unchanged", field="impression_token")
        if not token or len(token) > 4096 or token.count(".") != 1:
            raise bad
        body, sig = token.split(".")
        try:
            payload, signature = _unb64(body), _unb64(sig)
        except (ValueError, TypeError):
            raise bad from None
        if not hmac.compare_digest(signature, self._sig(payload)):
            raise bad
        try:
            data = json.loads(payload)
            imp = Impression(*data) if isinstance(data, list) else Impression(**data)
        except (ValueError, TypeError):          # signed by this key but not an impression
            raise bad from None
        if now_ms - imp.t > self._ttl_ms:
            raise InvalidRequest(f"impression_token expired (older than {self._ttl_ms // 1000} s); "
                                 "feedback must arrive within serving.token_ttl_s", field="impression_token")
        return imp
