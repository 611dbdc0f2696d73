"""The consent decision table, cell by cell (purposes × stages), against the contract in
ARCHITECTURE.md written out here independently of privacy/_consent.py."""

import itertools

import pytest

from privacy import (
    ACTIONS, PURPOSES, STAGES, ConsentFlags, PrivacyError, UnknownStage, allowed, cell, render_markdown, splice_into,
)
from privacy._consent import TABLE_BEGIN, TABLE_END

# (purpose, stage) -> the actions that stop when that purpose is missing (everything else in force).
EXPECTED_CELLS = {
    ("context", "ingestion"): {"accept_context_event", "accept_feedback_event"},
    ("personalization", "ingestion"): set(),
    ("measurement", "ingestion"): {"accept_exposure_event"},
    ("context", "feature_store"): {"write_user_features", "count_in_aggregates"},
    ("personalization", "feature_store"): {"write_user_features"},
    ("measurement", "feature_store"): set(),
    ("context", "training_data"): {"use_logged_event", "join_user_features"},
    ("personalization", "training_data"): {"join_user_features"},
    ("measurement", "training_data"): {"use_logged_event", "join_user_features"},
    ("context", "serving"): {"answer_request", "read_user_features", "keep_frequency_counters", "count_delivery"},
    ("personalization", "serving"): {"read_user_features", "keep_frequency_counters"},
    ("measurement", "serving"): set(),
    ("context", "logging"): {"log_feedback_event", "log_request_context"},
    ("personalization", "logging"): set(),
    ("measurement", "logging"): {"log_feedback_event", "log_request_context"},
    ("context", "experiments"): {"assign_arm", "assign_by_user"},
    ("personalization", "experiments"): {"assign_by_user"},
    ("measurement", "experiments"): {"log_exposure"},
}


def test_every_cell_is_specified():
    assert set(EXPECTED_CELLS) == set(itertools.product(PURPOSES, STAGES))


@pytest.mark.parametrize("purpose,stage", sorted(EXPECTED_CELLS))
def test_cell(purpose, stage):
    """Withdrawing exactly one purpose stops exactly the listed actions of the stage."""
    flags = ConsentFlags.all().without(purpose)
    stage_actions = {a.name for a in ACTIONS if a.stage == stage}
    stopped = {name for name in stage_actions if not allowed(flags, stage, name)}
    assert stopped == EXPECTED_CELLS[(purpose, stage)]
    assert {a.name for a in cell(purpose, stage)} == EXPECTED_CELLS[(purpose, stage)]
    assert all(allowed(ConsentFlags.all(), stage, name) for name in stage_actions)


def test_no_consent_allows_only_the_consent_event_itself():
    none = ConsentFlags()
    assert [(a.stage, a.name) for a in ACTIONS if allowed(none, a.stage, a.name)] == [("ingestion", "apply_consent_event")]


def test_flags_from_a_protobuf_consent():
    from proto import events_pb2

    flags = ConsentFlags.of(events_pb2.Consent(context=True, measurement=True))
    assert flags == ConsentFlags(True, False, True)
    assert not allowed(flags, "feature_store", "write_user_features")
    assert allowed(flags, "logging", "log_feedback_event")


def test_unknown_stage_action_and_purpose_name_the_valid_ones():
    with pytest.raises(UnknownStage, match="use one of ingestion"):
        allowed(ConsentFlags.all(), "warehouse", "x")
    with pytest.raises(UnknownStage, match="its actions are answer_request"):
        allowed(ConsentFlags.all(), "serving", "sell_data")
    with pytest.raises(UnknownStage, match="unknown purpose"):
        ConsentFlags.all().without("marketing")


def test_markdown_has_one_row_per_stage_and_per_action_and_splices():
    md = render_markdown()
    for stage in STAGES:
        assert f"| {stage} |" in md
    for a in ACTIONS:
        assert f"`{a.name}`" in md
    doc = f"intro\n{TABLE_BEGIN}\nold\n{TABLE_END}\noutro\n"
    out = splice_into(doc)
    assert out.startswith("intro\n") and out.endswith("outro\n") and "old" not in out and md in out
    assert splice_into(out) == out
    with pytest.raises(PrivacyError, match="markers"):
        splice_into("no markers")


def test_docs_privacy_md_holds_the_current_table():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[3] / "docs" / "privacy.md"
    assert splice_into(doc.read_text()) == doc.read_text(), "run: sightline privacy consent-table --write"


def test_streaming_consent_rules_agree_with_the_table():
    """streaming.decide is the ingestion implementation; it must agree with every flag combination."""
    from streaming import Purposes, decide

    for c, p, m in itertools.product([False, True], repeat=3):
        flags = ConsentFlags(c, p, m)
        ev = Purposes(c, p, m)
        for kind, accept in (("context", "accept_context_event"), ("feedback", "accept_feedback_event"),
                             ("exposures", "accept_exposure_event")):
            d = decide(kind, ev, None)
            assert d.keep == allowed(flags, "ingestion", accept), (kind, flags)
            if kind != "exposures":
                assert d.user_keyed == (d.keep and allowed(flags, "feature_store", "write_user_features")), (kind, flags)
        assert decide("feedback", ev, None).log == allowed(flags, "logging", "log_feedback_event"), flags
        assert decide("exposures", ev, None).log == allowed(flags, "experiments", "log_exposure"), flags


def test_training_data_cells_against_the_models_training_set_builder():
    """training_data/join_user_features: rows without personalization get no user features
    (models.point_in_time_features, the point-in-time builder of training sets)."""
    from datetime import datetime, timedelta, timezone

    import polars as pl

    from models import point_in_time_features

    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    rows = []
    for i in range(6):  # the same user clicks a lot, half the time without personalization consent
        rows.append({"event_time": t0 + timedelta(minutes=10 * i), "item_id": "cr-1", "click": 1, "user_id": "p1",
                     "consent_personalization": i % 2 == 0, "campaign_id": "c1", "category": "sports/running_shoes",
                     "scene": "gym"})
    out = point_in_time_features(pl.DataFrame(rows))
    user_cols = [c for c in out.columns if c.startswith("user_") and c != "user_id"]
    assert user_cols, "the builder produces user features"
    no_consent = out.filter(~pl.col("consent_personalization"))
    assert not allowed(ConsentFlags(True, False, True), "training_data", "join_user_features")
    for c in user_cols:
        assert no_consent[c].fill_null(0).sum() == 0, f"{c} is non-zero for rows without personalization"
    consented_last = out.filter(pl.col("consent_personalization")).sort("event_time")[-1]
    assert consented_last["user_impressions_24h"][0] > 0, "consented rows do get user history"


def test_experiments_cells_against_the_assignment_function():
    """experiments/assign_by_user: the unit is the user only with personalization consent
    (experiments.assign_request, which serving calls)."""
    from experiments import assign_request, parse_experiment

    exp = parse_experiment({"id": "e1", "layer": "l1", "salt": "s1", "status": "running", "unit_type": "user",
                            "arms": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]})
    with_consent = assign_request([exp], user_id="p1", request_id="r1", personalization=True)
    without = assign_request([exp], user_id="p1", request_id="r1", personalization=False)
    assert allowed(ConsentFlags.all(), "experiments", "assign_by_user")
    assert not allowed(ConsentFlags(True, False, True), "experiments", "assign_by_user")
    assert [(a.unit_type, a.unit_id) for a in with_consent] == [("user", "p1")]
    assert [(a.unit_type, a.unit_id) for a in without] == [("request", "r1")], "no user-level unit without consent"


def test_consent_table_cli_prints_and_writes(tmp_path):
    from click.testing import CliRunner

    from sightline.cli import main

    printed = CliRunner().invoke(main, ["privacy", "consent-table"], catch_exceptions=False)
    assert printed.exit_code == 0 and printed.output == render_markdown()
    doc = tmp_path / "p.md"
    doc.write_text(f"x\n{TABLE_BEGIN}\n{TABLE_END}\n")
    wrote = CliRunner().invoke(main, ["privacy", "consent-table", "--write", str(doc)], catch_exceptions=False)
    assert wrote.exit_code == 0 and render_markdown() in doc.read_text()
    bad = tmp_path / "none.md"
    bad.write_text("no markers")
    failed = CliRunner().invoke(main, ["privacy", "consent-table", "--write", str(bad)])
    assert failed.exit_code != 0 and "markers" in failed.output
