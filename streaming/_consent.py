"""Consent rules for ingestion, as pure functions (ARCHITECTURE.md "Contracts").

- no ``context`` → the event is dropped (counted), nothing at all is stored;
- no ``personalization`` → nothing user-keyed is stored (aggregates by item, campaign
  and scene×category still count the event);
- no ``measurement`` → the event is not written to the offline event logs.

The purposes in force are the event's own AND the user's latest ConsentEvent, so a
withdrawal takes effect at once, even for events produced earlier but consumed later.
Exposure events carry no context and only need ``measurement``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Purposes:
    """The three consent purposes (``proto.events_pb2.Consent`` as plain data)."""

    context: bool = False
    personalization: bool = False
    measurement: bool = False

    @classmethod
    def of(cls, consent) -> "Purposes":
        return _of(bool(consent.context), bool(consent.personalization), bool(consent.measurement))

    def __and__(self, other: "Purposes") -> "Purposes":
        return Purposes(self.context and other.context, self.personalization and other.personalization,
                        self.measurement and other.measurement)

    @property
    def withdraws_profile(self) -> bool:
        """True if a user's stored personalized features must be deleted."""
        return not (self.context and self.personalization)


ALL = Purposes(True, True, True)


@lru_cache(maxsize=None)
def _of(context: bool, personalization: bool, measurement: bool) -> Purposes:
    """One shared instance per combination (8): ``Purposes.of`` runs once per event."""
    return Purposes(context, personalization, measurement)


@dataclass(frozen=True)
class Decision:
    """What ingestion may do with one event."""

    keep: bool            # False: drop the event entirely (counted)
    user_keyed: bool      # may update user_context / user_engagement
    log: bool             # may be appended to the offline event log


@lru_cache(maxsize=256)   # pure, and only 4 kinds x 8 x 9 purpose combinations exist
def decide(kind: str, event: Purposes, latest: Purposes | None) -> Decision:
    """The decision for an event of stream ``kind`` given its purposes and the user's latest ConsentEvent."""
    effective = event if latest is None else event & latest
    if kind == "exposures":
        return Decision(keep=effective.measurement, user_keyed=False, log=effective.measurement)
    if not effective.context:
        return Decision(keep=False, user_keyed=False, log=False)
    return Decision(keep=True, user_keyed=effective.personalization, log=kind == "feedback" and effective.measurement)
