"""Consent as a decision table: purposes × stages, one source of truth.

Each stage lists the actions it may take on a user's data and the consent purposes
each action needs. ``allowed(purposes, stage, action)`` answers one question; the
table is data, so docs/privacy.md is rendered from it (``sightline privacy
consent-table``) and every cell has a unit test. The rules follow ARCHITECTURE.md:

- no ``context`` → the event is dropped (counted) and the request is refused;
- no ``personalization`` → nothing user-keyed is stored or read; serving ranks on the
  request's context alone;
- no ``measurement`` → nothing about the user is logged beyond aggregate counters.

The stages implement their part (streaming: ``streaming._consent.decide``; serving: its
consent gate); integration tests in tests/integration/privacy check that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from privacy.errors import PrivacyError, UnknownStage

PURPOSES: tuple[str, ...] = ("context", "personalization", "measurement")
STAGES: tuple[str, ...] = ("ingestion", "feature_store", "training_data", "serving", "logging", "experiments")


@dataclass(frozen=True)
class ConsentFlags:
    """The three purposes in force for one event or request (``proto Consent`` as plain data)."""

    context: bool = False
    personalization: bool = False
    measurement: bool = False

    @classmethod
    def of(cls, consent) -> "ConsentFlags":
        """From a protobuf ``Consent`` (or anything with the three attributes)."""
        return cls(bool(consent.context), bool(consent.personalization), bool(consent.measurement))

    @classmethod
    def all(cls) -> "ConsentFlags":
        return cls(True, True, True)

    def without(self, purpose: str) -> "ConsentFlags":
        if purpose not in PURPOSES:
            raise UnknownStage(f"unknown purpose {purpose!r}; use one of {', '.join(PURPOSES)}")
        return ConsentFlags(**{p: getattr(self, p) and p != purpose for p in PURPOSES})

    def granted(self) -> frozenset[str]:
        return frozenset(p for p in PURPOSES if getattr(self, p))


@dataclass(frozen=True)
class Action:
    """One thing a stage may do with a user's data, and the purposes it needs (all of them)."""

    stage: str
    name: str
    requires: frozenset[str]
    does: str
    """What the action is, in operator language (rendered into docs/privacy.md)."""
    otherwise: str
    """What happens instead when a required purpose is missing."""
    enforced_by: str
    """Where the rule is implemented (file and function) — what the integration tests check."""


def _a(stage: str, name: str, requires: Iterable[str], does: str, otherwise: str, enforced_by: str) -> Action:
    return Action(stage, name, frozenset(requires), does, otherwise, enforced_by)


ACTIONS: tuple[Action, ...] = (
    # ingestion ---------------------------------------------------------------------
    _a("ingestion", "accept_context_event", {"context"},
       "a context event is decoded, validated and used", "dropped and counted; nothing stored",
       "streaming._consent.decide"),
    _a("ingestion", "accept_feedback_event", {"context"},
       "an impression/click/conversion event is used", "dropped and counted; nothing stored",
       "streaming._consent.decide"),
    _a("ingestion", "accept_exposure_event", {"measurement"},
       "an experiment exposure event is used", "dropped and counted", "streaming._consent.decide"),
    _a("ingestion", "apply_consent_event", set(),
       "a ConsentEvent updates the user's purposes (a withdrawal deletes the stored profile)",
       "always applied: withdrawing needs no consent", "streaming consent stream"),
    # feature store -----------------------------------------------------------------
    _a("feature_store", "write_user_features", {"context", "personalization"},
       "user_context / user_engagement rows (keyed by the pseudonymous id) are written online and offline",
       "nothing user-keyed is written; an existing profile is deleted on withdrawal",
       "streaming._consent.decide (user_keyed)"),
    _a("feature_store", "count_in_aggregates", {"context"},
       "the event counts in item, campaign and scene×category aggregates (no user id)",
       "the event is not counted", "streaming._consent.decide (keep)"),
    # training data -----------------------------------------------------------------
    _a("training_data", "use_logged_event", {"context", "measurement"},
       "the logged impression/click becomes a training example", "no example (the event was never logged)",
       "event log content (streaming writes it only with measurement)"),
    _a("training_data", "join_user_features", {"context", "personalization", "measurement"},
       "the example is joined point-in-time with the user's features",
       "the example carries context features only (no user features exist)",
       "feedback log column consent_personalization; models dataset builder"),
    # serving -----------------------------------------------------------------------
    _a("serving", "answer_request", {"context"},
       "Recommend uses the request's context", "PERMISSION_DENIED (ConsentDenied); nothing logged",
       "serving consent gate"),
    _a("serving", "read_user_features", {"context", "personalization"},
       "the user's online features are read and used to rank", "context-only ranking; personalized=false",
       "serving consent gate"),
    _a("serving", "keep_frequency_counters", {"context", "personalization"},
       "per-user frequency-cap counters are kept", "no per-user counters (caps cannot apply)",
       "serving.FrequencyStore callers (counts of capped campaigns only)"),
    _a("serving", "count_delivery", {"context"},
       "spend and pacing counters per campaign (no user id) count the impression",
       "nothing is served, so nothing is counted", "serving pacing"),
    # logging -----------------------------------------------------------------------
    _a("logging", "log_feedback_event", {"context", "measurement"},
       "the impression/click/conversion is appended to the feedback event log",
       "not logged; only aggregate counters change", "streaming._consent.decide (log)"),
    _a("logging", "log_request_context", {"context", "measurement"},
       "the request context travels with the impression into the feedback log", "not logged",
       "streaming._consent.decide (log)"),
    # experiments -------------------------------------------------------------------
    _a("experiments", "assign_arm", {"context"},
       "the unit is assigned an arm (a pure hash, nothing stored)", "no request is served, no assignment",
       "experiments.assign via serving"),
    _a("experiments", "assign_by_user", {"context", "personalization"},
       "the assignment unit is the (pseudonymous) user, stable across requests",
       "the unit is the request id (no user-level continuity)", "serving experiment hook"),
    _a("experiments", "log_exposure", {"measurement"},
       "the exposure is logged once per unit and experiment", "not logged; the unit is not in the analysis",
       "streaming._consent.decide (exposures)"),
)

_BY_KEY: Mapping[tuple[str, str], Action] = {(a.stage, a.name): a for a in ACTIONS}


def action(stage: str, name: str) -> Action:
    """The table entry for ``stage`` / ``name``; ``UnknownStage`` lists the valid ones."""
    try:
        return _BY_KEY[(stage, name)]
    except KeyError:
        if stage not in STAGES:
            raise UnknownStage(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}") from None
        names = ", ".join(a.name for a in ACTIONS if a.stage == stage)
        raise UnknownStage(f"stage {stage!r} has no action {name!r}; its actions are {names}") from None


def allowed(purposes: ConsentFlags, stage: str, name: str) -> bool:
    """May ``stage`` perform action ``name`` for a user whose purposes in force are ``purposes``?"""
    return action(stage, name).requires <= purposes.granted()


def actions_of(stage: str) -> tuple[Action, ...]:
    if stage not in STAGES:
        raise UnknownStage(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    return tuple(a for a in ACTIONS if a.stage == stage)


def cell(purpose: str, stage: str) -> tuple[Action, ...]:
    """The actions of ``stage`` that need ``purpose``: what stops when that purpose is withdrawn."""
    if purpose not in PURPOSES:
        raise UnknownStage(f"unknown purpose {purpose!r}; use one of {', '.join(PURPOSES)}")
    return tuple(a for a in actions_of(stage) if purpose in a.requires)


def render_markdown() -> str:
    """The table as Markdown: the purposes × stages matrix, then every action with its rule."""
    lines = ["| stage | without **" + "** | without **".join(PURPOSES) + "** |",
             "|---" * (len(PURPOSES) + 1) + "|"]
    for stage in STAGES:
        cells = []
        for purpose in PURPOSES:
            acts = cell(purpose, stage)
            cells.append("<br>".join(f"`{a.name}`: {a.otherwise}" for a in acts) or "unaffected")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", "| stage | action | needs | what it does | enforced by |", "|---|---|---|---|---|"]
    for a in ACTIONS:
        needs = ", ".join(p for p in PURPOSES if p in a.requires) or "nothing"
        lines.append(f"| {a.stage} | `{a.name}` | {needs} | {a.does} | `{a.enforced_by}` |")
    return "\n".join(lines) + "\n"


TABLE_BEGIN = "<!-- consent-table:begin (generated by `sightline privacy consent-table --write`) -->"
TABLE_END = "<!-- consent-table:end -->"


def splice_into(document: str) -> str:
    """``document`` with the text between the table markers replaced by the current table."""
    if TABLE_BEGIN not in document or TABLE_END not in document:
        raise PrivacyError(f"the document has no consent-table markers; add {TABLE_BEGIN} and {TABLE_END}")
    head, rest = document.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{render_markdown()}{TABLE_END}{tail}"
