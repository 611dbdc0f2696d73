"""Train any model kind on featurized impressions and evaluate it on the time-based test split.

``prepare`` turns featurized impressions into a fitted ``FeaturePipeline`` and encoded
splits once; ``fit_model`` trains one kind on them; ``evaluate_predictor`` scores the
test split (with the simulator's true probabilities as the Bayes ceiling when present).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models._dataset import Split, time_split
from models._metrics import evaluate, log_loss
from models._schema import EncodedBatch, FeaturePipeline
from models.errors import ModelsError

log = logging.getLogger(__name__)

MODEL_KINDS = ("torchrec", "xgboost", "logreg", "popularity")


@dataclass
class Prepared:
    """Encoded splits of one featurized impression frame, ready for any model kind."""

    pipeline: FeaturePipeline
    split: Split
    train: EncodedBatch
    valid: EncodedBatch
    test: EncodedBatch
    y_train: np.ndarray
    y_valid: np.ndarray
    y_test: np.ndarray


def _labels(frame) -> np.ndarray:
    return frame.select("click", "conversion").to_numpy().astype(np.float32)


def prepare(featurized, valid: float = 0.1, test: float = 0.2) -> Prepared:
    split = time_split(featurized, valid=valid, test=test)
    pipe = FeaturePipeline.fit(split.train)
    return Prepared(pipe, split, pipe.encode_frame(split.train), pipe.encode_frame(split.valid),
                    pipe.encode_frame(split.test), _labels(split.train), _labels(split.valid), _labels(split.test))


@dataclass
class Trained:
    kind: str
    predictor: object
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def fit_model(kind: str, prep: Prepared, *, world_size: int = 1, work_dir: Path | None = None,
              ranker_config=None, max_steps: int | None = None, progress: bool = True,
              options: dict | None = None) -> Trained:
    """Train ``kind`` on ``prep.train`` (validation split for early stopping where used).

    ``options`` go to the challenger's ``fit`` (``rounds`` for xgboost, ``max_iter``/``c`` for logreg).
    """
    from models._predictors import LogRegPredictor, PopularityPredictor, TorchRecPredictor, XGBoostPredictor

    t0 = time.perf_counter()
    if kind == "torchrec":
        from models._torchrec import RankerConfig, train_torchrec

        cfg = ranker_config or RankerConfig()
        work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="sightline-torchrec-"))
        ranker, info = train_torchrec(prep.train, prep.y_train, prep.test, prep.y_test, cfg, work,
                                      world_size=world_size, max_steps=max_steps, progress=progress)
        info["world_size"] = world_size
        predictor = TorchRecPredictor(ranker, cfg)
        if prep.valid.size:
            predictor.calibrate(prep.valid, prep.y_valid)
        info["platt"] = predictor.platt
        trained = Trained(kind, predictor, cfg.to_dict(), info)
    elif kind == "xgboost":
        trained = Trained(kind, XGBoostPredictor.fit(prep.train, prep.y_train, (prep.valid, prep.y_valid),
                                                              **(options or {})),
                          {"tree_method": "hist"})
    elif kind == "logreg":
        sizes = {f.name: f.num_embeddings for f in prep.pipeline.features}
        trained = Trained(kind, LogRegPredictor.fit(prep.train, prep.y_train, sizes, **(options or {})),
                          {"C": 0.5, **(options or {})})
    elif kind == "popularity":
        trained = Trained(kind, PopularityPredictor.fit(prep.train, prep.y_train), {"strength": 20})
    else:
        raise ModelsError(f"unknown model kind {kind!r}; use one of {', '.join(MODEL_KINDS)}")
    trained.info["train_seconds"] = time.perf_counter() - t0
    return trained


def evaluate_predictor(predictor, prep: Prepared) -> tuple[dict, np.ndarray]:
    """Test-split metrics for pCTR (with slices) and pCVR on clicked rows; and the predictions."""
    pred = predictor.predict(prep.test)
    test = prep.split.test
    slices = {}
    if "device" in test.columns:
        slices["device"] = test["device"].cast(str).to_numpy()
    slices["consent"] = np.where(test["consent_personalization"].to_numpy(), "personalization", "context_only")
    m = evaluate(prep.y_test[:, 0], pred[:, 0], slices)
    clicked = prep.y_test[:, 0] > 0
    if clicked.sum() > 1:
        cv = evaluate(prep.y_test[clicked, 1], pred[clicked, 1])
        m["cvr"] = {k: cv[k] for k in ("auc", "logloss", "ne", "calibration", "n")}
    return m, pred


def bayes_ceiling(prep: Prepared) -> dict | None:
    """AUC/log-loss of the simulator's true probabilities on the test split (None without them)."""
    test = prep.split.test
    if "p_click" not in test.columns:
        return None
    m = evaluate(prep.y_test[:, 0], test["p_click"].to_numpy())
    out = {k: m[k] for k in ("auc", "logloss", "ne", "calibration", "deciles")}
    cvr_col = "p_conversion_given_click" if "p_conversion_given_click" in test.columns else None
    clicked = prep.y_test[:, 0] > 0
    if cvr_col and clicked.sum() > 1:
        out["cvr"] = {"logloss": log_loss(prep.y_test[clicked, 1], test[cvr_col].to_numpy()[clicked])}
    return out


def train_and_register(kind: str, impressions, registry, *, store=None, world_size: int = 1,
                       ranker_config=None, max_steps: int | None = None, alias: str | None = "candidate",
                       work_dir: Path | None = None, progress: bool = True, source: str = "") -> tuple[object, dict]:
    """Featurize (Feast when ``store`` is given, else polars), split by time, train, evaluate,
    write the report and register the model. Returns (ModelRecord, metrics)."""
    from models._dataset import build_training_set
    from models._metrics import write_report

    featurized = build_training_set(impressions, store=store)
    prep = prepare(featurized)
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=f"sightline-{kind}-"))
    trained = fit_model(kind, prep, world_size=world_size, work_dir=work / "train", ranker_config=ranker_config,
                        max_steps=max_steps, progress=progress)
    metrics, pred = evaluate_predictor(trained.predictor, prep)
    bayes = bayes_ceiling(prep)
    preds = {kind: pred[:, 0]}
    table = {kind: metrics}
    if bayes:
        metrics["bayes"] = {k: v for k, v in bayes.items() if k != "deciles"}
        preds["bayes (true p)"] = prep.split.test["p_click"].to_numpy()
        table["bayes (true p)"] = bayes
    write_report(work / "report", prep.y_test[:, 0], preds, table)
    info = {k: v for k, v in trained.info.items()
            if k in ("timings", "world_size", "sharding_plan", "train_seconds", "platt")}
    rec = registry.register(
        kind, trained.predictor, prep.pipeline, config=trained.config, data_window=prep.split.window,
        metrics=metrics, extra={"training": info, "feature_source": "feast" if store is not None else "polars",
                                "source": source, "rows": {"train": prep.split.train.height,
                                                          "valid": prep.split.valid.height,
                                                          "test": prep.split.test.height}},
        report_dir=work / "report", alias=alias)
    return rec, metrics
