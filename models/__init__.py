"""Ranking models: sharded TorchRec ranker, XGBoost/logistic/popularity challengers, registry.

Inference (what serving calls; torch/xgboost are imported only when a model is loaded)::

    from models import Registry
    scorer = Registry(settings).load("production")      # or a version, or "candidate"
    pctr, pcvr = scorer.score(rows)                      # one batched call per request
    pctr, pcvr = scorer.score_request(context, candidates)   # same, context merged per row
    scorer.version                                       # e.g. "torchrec-20261123-201500-ab12cd"

Training (CLI ``sightline train``; benchmarks ``bench.quality``/``bench.train``)::

    from models import build_training_set, train_and_register
    rec, metrics = train_and_register("torchrec", impressions, Registry(settings), world_size=2)

See docs/models.md for features, the point-in-time join, sharding and the numbers.
"""

from models._dataset import (
    Split, build_training_set, feast_features, normalize_impressions, point_in_time_features, time_split,
)
from models._metrics import auc, calibration, evaluate, log_loss, normalized_entropy, write_report
from models._registry import ALIASES, ModelRecord, Registry, Scorer, code_version
from models._schema import (
    COUNT_COLUMNS, DENSE_FEATURES, SPARSE_FEATURES, EncodedBatch, FeaturePipeline, SparseFeature, bucket,
)
from models._train import (
    MODEL_KINDS, Prepared, Trained, bayes_ceiling, evaluate_predictor, fit_model, prepare, train_and_register,
)
from models.errors import InvalidModelInput, ModelNotFound, ModelsError, TrainingDataError, TrainingError

__all__ = [
    "Registry", "Scorer", "ModelRecord", "ALIASES", "code_version",
    "build_training_set", "point_in_time_features", "feast_features", "normalize_impressions", "time_split", "Split",
    "FeaturePipeline", "EncodedBatch", "SparseFeature", "SPARSE_FEATURES", "DENSE_FEATURES", "COUNT_COLUMNS", "bucket",
    "MODEL_KINDS", "Prepared", "Trained", "prepare", "fit_model", "evaluate_predictor", "bayes_ceiling",
    "train_and_register",
    "auc", "log_loss", "normalized_entropy", "calibration", "evaluate", "write_report",
    "ModelsError", "ModelNotFound", "InvalidModelInput", "TrainingDataError", "TrainingError",
]
