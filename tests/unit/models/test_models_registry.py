"""Registry round trip: register → list/show → promote → load → identical scores."""

from __future__ import annotations

import numpy as np
import pytest

from models import ModelNotFound, Registry, fit_model, point_in_time_features, prepare
from models.testing import synthetic_impressions


_FAST = {"logreg": {"max_iter": 30}, "xgboost": {"rounds": 20}}


@pytest.fixture(scope="module")
def prepared():
    return prepare(point_in_time_features(synthetic_impressions(3000, seed=21)))


@pytest.mark.parametrize("kind", ["popularity", "logreg", "xgboost"])
def test_register_load_and_score_identically(tmp_path, prepared, kind):
    reg = Registry(root=tmp_path / "models")
    trained = fit_model(kind, prepared, options=_FAST.get(kind))
    rec = reg.register(kind, trained.predictor, prepared.pipeline, config=trained.config,
                       data_window=prepared.split.window, metrics={"auc": 0.7}, alias="candidate")
    assert reg.aliases() == {"candidate": rec.version}
    assert [r.version for r in reg.list()] == [rec.version]
    meta = reg.get("candidate").meta
    assert meta["kind"] == kind and meta["features"]["sparse"] and meta["data_window"]["train"][0]
    assert meta["code_version"]
    scorer = reg.load("candidate")
    rows = prepared.split.test.head(250).to_dicts()
    pctr, pcvr = scorer.score(rows)
    expected = trained.predictor.predict(prepared.pipeline.encode_frame(prepared.split.test.head(250)))
    np.testing.assert_allclose(pctr, expected[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pcvr, expected[:, 1], rtol=1e-5, atol=1e-6)
    assert scorer.version == rec.version and pctr.shape == (250,)
    reg.promote("candidate", "production")
    assert reg.load("production").version == rec.version


def test_score_request_merges_the_context(tmp_path, prepared):
    reg = Registry(root=tmp_path / "models")
    trained = fit_model("logreg", prepared, options=_FAST["logreg"])
    reg.register("logreg", trained.predictor, prepared.pipeline, alias="production")
    scorer = reg.load("production")
    rows = prepared.split.test.head(5).to_dicts()
    context_keys = ("device", "scene", "objects", "intent_text", "location_category", "region", "local_hour",
                    "local_weekday", "user_id", "consent_personalization")
    context = {k: rows[0][k] for k in context_keys}
    candidates = [{k: v for k, v in r.items() if k not in context_keys} for r in rows]
    merged = [{**r, **context} for r in rows]
    np.testing.assert_allclose(scorer.score_request(context, candidates)[0], scorer.score(merged)[0])
    assert scorer.score([])[0].shape == (0,)


def test_unknown_version_names_the_fix(tmp_path):
    with pytest.raises(ModelNotFound, match="sightline train"):
        Registry(root=tmp_path).load("production")


def test_xgboost_serving_path_equals_the_public_calls(prepared):
    # predict_ctr builds the matrix in place and calls XGBoost's C predictor directly
    # (models._predictors._DensePredict): the same numbers as tabular + inplace_predict
    from models._predictors import _tabular_x, tabular

    predictor = fit_model("xgboost", prepared, options=_FAST["xgboost"]).predictor
    enc = prepared.test                          # item-side features of varying lengths
    x, _, _ = tabular(enc)
    np.testing.assert_array_equal(_tabular_x(enc), x)
    assert predictor._predict_ctr._direct, "the direct call is in use with the pinned xgboost"
    want = predictor.ctr.inplace_predict(x, iteration_range=predictor._iterations())
    np.testing.assert_array_equal(predictor.predict_ctr(enc), want)
    np.testing.assert_array_equal(predictor.predict(enc)[:, 1], predictor.cvr.inplace_predict(x))
    empty = predictor.predict_ctr(type(enc)(dense=enc.dense[:0], lengths={k: v[:0] for k, v in enc.lengths.items()},
                                            values={k: v[:0] for k, v in enc.values.items()}))
    assert empty.shape == (0,) and empty.dtype == np.float32
    with pytest.raises(ValueError, match="Feature shape mismatch"):
        predictor._predict_ctr(x[:, :-1].copy())
