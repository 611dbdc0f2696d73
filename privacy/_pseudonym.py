"""Keyed pseudonymization of user ids (HMAC-SHA256, truncated hex).

Apps send their own (already opaque) user id; Sightline hashes it again with a secret
key before anything is stored, so that stored data cannot be joined back to an app's
user table without the key, and a leaked data directory does not reveal app ids.
The function is deterministic: the same id and key always give the same pseudonym,
which is what lets features, logs, caps and erasure meet on one key.
SECURITY.md describes key rotation (dual-key window).
"""

from __future__ import annotations

import hashlib
import hmac

PSEUDONYM_HEX_CHARS = 32
"""128 bits: collisions are negligible for billions of users and ids stay short."""


def pseudonymize(user_id: str, key: str | bytes, *, length: int = PSEUDONYM_HEX_CHARS) -> str:
    """``hex(HMAC-SHA256(key, user_id))[:length]`` — the stored form of an app's user id.

    Raises ``ValueError`` for an empty id or key (an empty key would be a plain hash
    anyone can recompute).
    """
    if not user_id:
        raise ValueError("user_id is empty; pass the id the app sent")
    if not key:
        raise ValueError("the pseudonymization key is empty; set privacy.hmac_key (SIGHTLINE_PRIVACY_HMAC_KEY)")
    if not 16 <= length <= 64:
        raise ValueError(f"length {length} is out of range; use 16..64 hex characters")
    raw_key = key.encode() if isinstance(key, str) else key
    return hmac.new(raw_key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:length]


def pseudonym_candidates(user_id: str, keys: list[str | bytes] | tuple[str | bytes, ...]) -> tuple[str, ...]:
    """The pseudonyms of ``user_id`` under every key of a rotation window (current key first)."""
    out: list[str] = []
    for key in keys:
        if key:
            p = pseudonymize(user_id, key)
            if p not in out:
                out.append(p)
    return tuple(out)
