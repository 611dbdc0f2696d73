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

# Analysis pulls in numpy/scipy/polars: imported on first use, so serving's
# `from experiments import assign_request` stays light.
_LAZY = {
    "AnalysisOptions": "experiments._analysis", "ExperimentResult": "experiments._analysis",
    "analyze": "experiments._analysis", "unit_table": "experiments._analysis", "METRICS": "experiments._analysis",
    "served_requests": "experiments._analysis",
    "GUARDRAILS": "experiments._analysis", "decide": "experiments._decision",
    "render_terminal": "experiments._report", "render_html": "experiments._report", "to_json": "experiments._report",
    "to_csv": "experiments._report", "SyntheticWorld": "experiments._synthetic", "synthetic_logs": "experiments._synthetic",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")


__all__ = [
    "HASH_VERSION", "Assignment", "arms_map", "assign", "assign_request", "choose_arm", "layer_bucket",
    "merged_params", "unit_hash",
    "LAYER_BUCKETS", "Arm", "ArmParams", "Experiment", "load_experiment_yaml", "parse_experiment",
    "ExposureLogger", "GOLDEN_CASES_PATH", "GoldenCheck", "check_golden_cases", "load_golden_cases",
    "ExperimentCache", "ExperimentStore",
    "AnalysisError", "ExperimentError", "ExperimentExists", "ExperimentImmutable", "ExperimentNotFound",
    "ExperimentStoreUnavailable", "ExperimentValidationError", "LayerConflict",
    *_LAZY,
]
