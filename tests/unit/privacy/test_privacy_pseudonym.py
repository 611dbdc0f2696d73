"""Pseudonymization: keyed, deterministic, short, and different under another key."""

import hashlib
import hmac

import pytest

from privacy import PSEUDONYM_HEX_CHARS, erasure_ids, pseudonym_candidates, pseudonymize
from privacy.errors import InvalidUserId


def test_is_truncated_hmac_sha256_of_the_id():
    want = hmac.new(b"k3y", "user-42".encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]
    assert pseudonymize("user-42", "k3y") == want
    assert pseudonymize("user-42", b"k3y") == want
    assert len(want) == 32 and int(want, 16) >= 0


def test_deterministic_keyed_and_not_a_plain_hash():
    a = pseudonymize("user-42", "key-a")
    assert a == pseudonymize("user-42", "key-a")
    assert a != pseudonymize("user-42", "key-b")
    assert a != pseudonymize("user-43", "key-a")
    assert a != hashlib.sha256(b"user-42").hexdigest()[:32]
    assert "user-42" not in a


def test_unicode_and_long_ids():
    assert len(pseudonymize("ユーザー🙂" * 100, "k")) == 32


@pytest.mark.parametrize("uid,key", [("", "k"), ("u", ""), ("u", b"")])
def test_empty_id_or_key_is_refused(uid, key):
    with pytest.raises(ValueError, match="empty"):
        pseudonymize(uid, key)


def test_length_bounds():
    assert len(pseudonymize("u", "k", length=16)) == 16
    with pytest.raises(ValueError, match="16..64"):
        pseudonymize("u", "k", length=8)


def test_rotation_window_gives_both_pseudonyms_current_first():
    cands = pseudonym_candidates("u1", ["new", "old", ""])
    assert cands == (pseudonymize("u1", "new"), pseudonymize("u1", "old"))


def test_erasure_ids_cover_current_previous_key_and_raw_id(make_settings):
    s = make_settings(privacy={"hmac_key": "new", "previous_hmac_key": "old"})
    assert erasure_ids(s, "u1") == (pseudonymize("u1", "new"), pseudonymize("u1", "old"), "u1")
    assert erasure_ids(s, "abc", pseudonymous=True) == ("abc",)
    for bad in ("", "   ", "a\tb", "x" * 300):
        with pytest.raises(InvalidUserId):
            erasure_ids(s, bad)
