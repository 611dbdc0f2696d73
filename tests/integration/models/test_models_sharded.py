"""Sharded TorchRec training: 2 gloo ranks on localhost vs 1, checkpoint → inference model.

Ranks are spawned with torch.multiprocessing on 127.0.0.1 (as torchrec's
MultiProcessTestBase does). Small synthetic world, one epoch: ~1 minute on 2 cores.
"""

from __future__ import annotations

import numpy as np
import pytest

from models import Registry, auc, fit_model, point_in_time_features, prepare
from models._torchrec import RankerConfig
from models.testing import synthetic_impressions

pytestmark = [pytest.mark.integration, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def prepared():
    return prepare(point_in_time_features(synthetic_impressions(60_000, seed=31, n_items=200, n_users=300)))


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    cfg = RankerConfig(epochs=1, batch_size=512, seed=0)
    out = {}
    for ws in (1, 2):
        work = tmp_path_factory.mktemp(f"torchrec-ws{ws}")
        out[ws] = (fit_model("torchrec", prepared, world_size=ws, work_dir=work, ranker_config=cfg, progress=False), work)
    return out


def test_two_ranks_reach_the_auc_of_one(prepared, trained):
    y = prepared.y_test[:, 0]
    aucs = {ws: auc(y, t.predictor.predict(prepared.test)[:, 0]) for ws, (t, _) in trained.items()}
    assert aucs[1] > 0.7, aucs
    assert abs(aucs[2] - aucs[1]) <= 0.005, aucs
    plan = trained[2][0].info["sharding_plan"]["model.ebc"]
    ranks = {r for v in plan.values() for r in v.split("ranks")[1].strip(" []").split(",")}
    assert {"0", "1"} <= {r.strip() for r in ranks}, plan   # tables really are spread over both ranks


def test_checkpoint_to_inference_model_gives_identical_scores(prepared, trained):
    t, work = trained[2]
    sharded = np.load(work / "sharded_eval_scores.npy")          # scored by the DMP model inside the ranks
    unsharded = t.predictor.predict_raw(prepared.test)             # the single-process model from the checkpoint
    np.testing.assert_allclose(unsharded, sharded, rtol=0, atol=1e-5)


def test_torchrec_registry_round_trip(prepared, trained, tmp_path):
    t, _ = trained[2]
    reg = Registry(root=tmp_path / "models")
    rec = reg.register("torchrec", t.predictor, prepared.pipeline, config=t.config, alias="production")
    scorer = reg.load("production")
    rows = prepared.split.test.head(250).to_dicts()
    pctr, pcvr = scorer.score(rows)
    expected = t.predictor.predict(prepared.pipeline.encode_frame(prepared.split.test.head(250)))
    np.testing.assert_allclose(pctr, expected[:, 0], atol=1e-6)
    np.testing.assert_allclose(pcvr, expected[:, 1], atol=1e-6)
    assert scorer.version == rec.version
