"""Assignment: golden cases, independent hash, layers, splits, consent fallback."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from experiments import (
    GOLDEN_CASES_PATH,
    ArmParams,
    ExperimentValidationError,
    arms_map,
    assign,
    assign_request,
    check_golden_cases,
    layer_bucket,
    load_experiment_yaml,
    merged_params,
    parse_experiment,
    unit_hash,
)


def _exp(**kw):
    base = {"id": "e1", "layer": "l1", "status": "running",
            "arms": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]}
    base.update(kw)
    return parse_experiment(base)


def test_golden_cases_pass():
    check = check_golden_cases()
    assert check.ok, "\n".join(check.mismatches)
    assert check.cases >= 80


def test_golden_hashes_match_an_independent_computation():
    data = json.loads(GOLDEN_CASES_PATH.read_text())
    for case in data["hashes"]:
        digest = hashlib.sha256(f"{case['salt']}:{case['unit_id']}".encode()).hexdigest()
        independent = int(digest[:16], 16) // 2**11 / 2**53
        assert independent == case["hash"] == unit_hash(case["salt"], case["unit_id"])


def test_hash_is_uniform_and_salted():
    values = [unit_hash("s", f"u{i}") for i in range(20_000)]
    assert all(0 <= v < 1 for v in values)
    deciles = Counter(int(v * 10) for v in values)
    assert all(1800 < deciles[d] < 2200 for d in range(10))
    assert unit_hash("a", "u1") != unit_hash("b", "u1")


def test_split_follows_weights():
    exp = _exp(arms=[{"name": "a", "weight": 3}, {"name": "b", "weight": 1}])
    counts = Counter(assign([exp], f"user{i}")[0].arm for i in range(20_000))
    assert abs(counts["a"] / 20_000 - 0.75) < 0.015


def test_layers_are_mutually_exclusive_and_cover_buckets():
    a = _exp(id="a", buckets=[0, 3000])
    b = _exp(id="b", buckets=[3000, 10000])
    c = _exp(id="c", layer="other")
    seen = Counter()
    for i in range(5000):
        got = assign([a, b, c], f"u{i}")
        per_layer = Counter(x.layer for x in got)
        assert per_layer["l1"] == 1 and per_layer["other"] == 1
        seen.update(x.experiment_id for x in got if x.layer == "l1")
    assert abs(seen["a"] / 5000 - 0.3) < 0.03


def test_layer_and_arm_hashes_are_independent():
    exp = _exp(buckets=[0, 5000])
    arms = Counter(assign([exp], f"u{i}")[0].arm for i in range(20_000) if assign([exp], f"u{i}"))
    assert abs(arms["control"] / sum(arms.values()) - 0.5) < 0.02


def test_only_running_experiments_assign():
    assert assign([_exp(status="draft"), _exp(id="e2", status="stopped")], "u1") == []


def test_unit_type_and_consent_fallback():
    user_exp = _exp(id="by_user")
    strict = _exp(id="strict", layer="l2", request_fallback=False)
    per_request = _exp(id="by_req", layer="l3", unit_type="request")
    exps = [user_exp, strict, per_request]
    assert {a.experiment_id for a in assign(exps, "u1", "user")} == {"by_user", "strict"}
    assert {a.experiment_id for a in assign(exps, "r1", "request")} == {"by_user", "by_req"}
    with_consent = assign_request(exps, user_id="u1", request_id="r1", personalization=True)
    assert {(a.experiment_id, a.unit_id, a.unit_type) for a in with_consent} == {
        ("by_user", "u1", "user"), ("strict", "u1", "user"), ("by_req", "r1", "request")}
    without = assign_request(exps, user_id="u1", request_id="r1", personalization=False)
    assert {(a.experiment_id, a.unit_id) for a in without} == {("by_user", "r1"), ("by_req", "r1")}
    with pytest.raises(ExperimentValidationError, match="unit_type"):
        assign(exps, "u1", "device")
    with pytest.raises(ExperimentValidationError, match="request_id"):
        assign_request(exps, user_id="u1", request_id="", personalization=True)


def test_deterministic_and_stable_for_the_same_unit():
    exp = _exp()
    assert {assign([exp], "u42")[0].arm for _ in range(5)} == {assign([exp], "u42")[0].arm}
    assert layer_bucket("l1", "u42") == layer_bucket("l1", "u42")


def test_params_merge_and_arms_map():
    exp = _exp(arms=[{"name": "a", "weight": 1, "params": {"ranker": "xgboost", "num_ads": 2}},
                     {"name": "b", "weight": 1e-9, "params": {"ranker": "production"}}])
    other = _exp(id="o", layer="l9", arms=[{"name": "x", "weight": 1, "params": {"reserve": 0.7}},
                                            {"name": "y", "weight": 1e-9}])
    got = assign([exp, other], "u1")
    assert merged_params(got) == ArmParams(ranker="xgboost", num_ads=2, reserve=0.7)
    assert arms_map(got) == {"e1": "a", "o": "x"}


@pytest.mark.parametrize("bad, match", [
    ({"arms": [{"name": "only", "weight": 1}]}, "at least 2 arms"),
    ({"arms": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]}, "duplicate arm"),
    ({"arms": [{"name": "a", "weight": 0}, {"name": "b", "weight": 1}]}, "greater than 0"),
    ({"buckets": [5000, 4000]}, "buckets"),
    ({"id": "Bad Id!"}, "experiment id"),
    ({"control": "nope"}, "control"),
    ({"arms": [{"name": "a", "weight": 1, "params": {"exploration_rate": 2}}, {"name": "b", "weight": 1}]},
     "exploration_rate"),
    ({"colour": "red"}, "colour"),
])
def test_invalid_definitions_name_the_field(bad, match):
    with pytest.raises(ExperimentValidationError, match=match) as info:
        _exp(**bad)
    assert info.value.code == "INVALID_ARGUMENT"


def test_yaml_definition():
    exp = load_experiment_yaml("""
id: ranker_xgb
layer: ranking
description: XGBoost challenger vs the production TorchRec ranker
arms:
  - {name: control, weight: 50, params: {ranker: production}}
  - {name: xgboost, weight: 50, params: {ranker: xgboost, num_ads: 3}}
""")
    assert exp.salt == "ranker_xgb" and exp.control == "control" and exp.status == "draft"
    assert exp.arm("xgboost").params.num_ads == 3
    with pytest.raises(ExperimentValidationError, match="YAML"):
        load_experiment_yaml("id: [unclosed")


def test_example_definitions_parse():
    from pathlib import Path

    import experiments

    examples = sorted((Path(experiments.__file__).parent / "examples").glob("*.yaml"))
    parsed = [load_experiment_yaml(p.read_text()) for p in examples]
    assert {e.id for e in parsed} >= {"ranker_xgb", "auction_reserve"}
    assert len({e.layer for e in parsed}) == len(parsed)  # different layers: both can run at once
