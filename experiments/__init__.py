"""A/B experiments: definitions, deterministic assignment, exposure logging, analysis.

Serving uses: ``ExperimentStore`` + ``ExperimentCache`` (running definitions, reloaded
without restart), ``assign_request`` / ``assign`` (pure, salted, layered), and
``ExposureLogger`` (once per unit and experiment, ``ExposureEvent`` records).
Analysts use ``analyze`` and the reports (``sightline experiments report``).
"""

from experiments._assign import (
    HASH_VERSION,
    Assignment,
    arms_map,
    assign,
    assign_request,
    choose_arm,
    layer_bucket,
    merged_params,
    unit_hash,
)
from experiments._definitions import (
    LAYER_BUCKETS,
    Arm,
    ArmParams,
    Experiment,
    load_experiment_yaml,
    parse_experiment,
)
from experiments._exposure import ExposureLogger
from experiments._golden import GOLDEN_CASES_PATH, GoldenCheck, check_golden_cases, load_golden_cases
from experiments._store import ExperimentCache, ExperimentStore
from experiments.errors import (
    AnalysisError,
    ExperimentError,
    ExperimentExists,
    ExperimentImmutable,
    ExperimentNotFound,
    ExperimentStoreUnavailable,
    ExperimentValidationError,
    LayerConflict,
)

__all__ = [
    "HASH_VERSION", "Assignment", "arms_map", "assign", "assign_request", "choose_arm", "layer_bucket",
    "merged_params", "unit_hash",
    "LAYER_BUCKETS", "Arm", "ArmParams", "Experiment", "load_experiment_yaml", "parse_experiment",
    "ExposureLogger", "GOLDEN_CASES_PATH", "GoldenCheck", "check_golden_cases", "load_golden_cases",
    "ExperimentCache", "ExperimentStore",
    "AnalysisError", "ExperimentError", "ExperimentExists", "ExperimentImmutable", "ExperimentNotFound",
    "ExperimentStoreUnavailable", "ExperimentValidationError", "LayerConflict",
]
