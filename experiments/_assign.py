"""Deterministic, salted assignment: a pure function of (definitions, unit).

``unit_hash(salt, unit)`` is the top 53 bits of ``sha256("<salt>:<unit>")`` divided by
2**53, uniform in [0, 1). The layer bucket uses the salt ``layer:<layer>``; the arm
uses the experiment's salt. The behaviour is pinned by ``experiments/golden_cases.json``
(checked by the tests and by the analysis), so serving and analysis always agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable

from experiments._definitions import LAYER_BUCKETS, ArmParams, Experiment
from experiments.errors import ExperimentValidationError

HASH_VERSION = 1


def unit_hash(salt: str, unit_id: str) -> float:
    """Uniform in [0, 1) from ``sha256("<salt>:<unit_id>")`` (top 53 bits, exact in a float)."""
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def layer_bucket(layer: str, unit_id: str) -> int:
    """The unit's bucket in ``[0, LAYER_BUCKETS)`` of a layer."""
    return int(unit_hash(f"layer:{layer}", unit_id) * LAYER_BUCKETS)


@dataclass(frozen=True)
class Assignment:
    """One unit's arm in one experiment, with the arm's serving parameters."""

    experiment_id: str
    layer: str
    arm: str
    unit_type: str          # "user" | "request"
    unit_id: str
    params: ArmParams = field(default_factory=ArmParams)


def choose_arm(experiment: Experiment, unit_id: str) -> str:
    """The arm of a unit that is inside the experiment (ignores buckets and status)."""
    h = unit_hash(experiment.salt, unit_id)
    cumulative = 0.0
    weights = experiment.weights
    for name, w in weights.items():
        cumulative += w
        if h < cumulative:
            return name
    return experiment.arms[-1].name  # float rounding at the top end


def _accepts(experiment: Experiment, unit_type: str) -> bool:
    if experiment.unit_type == unit_type:
        return True
    return unit_type == "request" and experiment.unit_type == "user" and experiment.request_fallback


def _assign(experiments: Iterable[Experiment], pick_unit) -> list[Assignment]:
    out: list[Assignment] = []
    taken_layers: set[str] = set()
    buckets: dict[tuple[str, str], int] = {}
    for exp in sorted(experiments, key=lambda e: (e.layer, e.buckets[0], e.id)):
        if exp.status != "running" or exp.layer in taken_layers:
            continue
        unit = pick_unit(exp)
        if unit is None:
            continue
        unit_id, unit_type = unit
        key = (exp.layer, unit_id)
        if key not in buckets:
            buckets[key] = layer_bucket(exp.layer, unit_id)
        start, end = exp.buckets
        if not start <= buckets[key] < end:
            continue
        arm = choose_arm(exp, unit_id)
        taken_layers.add(exp.layer)
        out.append(Assignment(exp.id, exp.layer, arm, unit_type, unit_id, exp.arm(arm).params))
    return out


def assign(experiments: Iterable[Experiment], unit_id: str, unit_type: str = "user") -> list[Assignment]:
    """Arms of one unit in every running experiment that randomises on ``unit_type``.

    At most one assignment per layer. A ``request`` unit also enters user experiments
    that allow the request fallback (requests without personalization consent).
    """
    if unit_type not in ("user", "request"):
        raise ExperimentValidationError(f"unit_type {unit_type!r} is unknown; use 'user' or 'request'")
    if not unit_id:
        raise ExperimentValidationError("unit_id is empty; pass the user id (or the request id without personalization consent)")
    return _assign(experiments, lambda exp: (unit_id, unit_type) if _accepts(exp, unit_type) else None)


def assign_request(experiments: Iterable[Experiment], *, user_id: str, request_id: str,
                   personalization: bool) -> list[Assignment]:
    """Arms for one serving request, picking the unit per experiment.

    Request experiments use ``request_id``; user experiments use ``user_id`` when the
    user gave personalization consent, otherwise ``request_id`` (if the experiment
    allows the fallback) — so no user-keyed state is needed without consent.
    """
    if not request_id:
        raise ExperimentValidationError("request_id is empty; serving must give every request an id before assignment")

    def pick(exp: Experiment):
        if exp.unit_type == "request":
            return request_id, "request"
        if personalization and user_id:
            return user_id, "user"
        if exp.request_fallback:
            return request_id, "request"
        return None

    return _assign(experiments, pick)


def merged_params(assignments: Iterable[Assignment]) -> ArmParams:
    """One ``ArmParams`` from all assignments (layers ordered by name; later layers win on conflict)."""
    merged: dict = {}
    for a in sorted(assignments, key=lambda a: a.layer):
        merged.update(a.params.overrides())
    return ArmParams(**merged)


def arms_map(assignments: Iterable[Assignment]) -> dict[str, str]:
    """``{experiment_id: arm}``, as carried in FeedbackEvent.experiment_arms."""
    return {a.experiment_id: a.arm for a in assignments}
