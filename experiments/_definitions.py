"""Experiment definitions: typed, validated, loadable from YAML.

An experiment lives in one *layer*. Every unit hashes (with the layer's salt) into one
of ``LAYER_BUCKETS`` buckets; each experiment of a layer owns a bucket range, ranges of
running experiments never overlap, so a unit is in at most one experiment per layer.
Inside the experiment, the unit hashes again with the experiment's own salt onto the
arms' cumulative weights. The split signature (salt, layer, buckets, unit, arms and
weights) is frozen once the experiment runs: changing it mid-flight would mix
populations and void the analysis.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from experiments.errors import ExperimentValidationError

LAYER_BUCKETS = 10_000
"""Buckets per layer; an experiment owning ``[0, 1000)`` gets 10% of the layer's units."""

STATUSES = ("draft", "running", "stopped")
UNIT_TYPES = ("user", "request")
METRICS = ("ctr", "cvr", "revenue_per_1k_requests", "clicks_per_unit", "revenue_per_unit")

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


def _slug(value: str, what: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(f"{what} {value!r} must be 1-64 chars of a-z, 0-9, '_', '.', '-' starting with a letter or digit")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmParams(_Frozen):
    """What an arm changes in serving; ``None`` means "serving's default"."""

    ranker: str | None = None
    """Model alias or version from the registry, e.g. ``production``, ``xgboost``, ``torchrec@3``."""
    reserve: float | None = Field(None, ge=0)
    """Auction reserve price (eCPM floor)."""
    quality_floor: float | None = Field(None, ge=0)
    """Minimum pCTR an ad needs to enter the auction."""
    exploration_rate: float | None = Field(None, ge=0, le=1)
    """Share of slots given to exploration."""
    num_ads: int | None = Field(None, ge=0, le=20)
    """Ad slots to fill (capped by what the request asks for)."""

    def overrides(self) -> dict:
        """Only the parameters this arm sets."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Arm(_Frozen):
    name: str
    weight: float = Field(gt=0)
    """Relative share of the experiment's units (normalised over the arms)."""
    params: ArmParams = ArmParams()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _slug(v, "arm name")


class Experiment(_Frozen):
    """One A/B(/n) experiment. ``version``/``status``/timestamps are managed by the store."""

    id: str
    layer: str = "default"
    salt: str = ""
    """Hash salt for the arm split; empty means the experiment id."""
    description: str = ""
    unit_type: Literal["user", "request"] = "user"
    """Randomisation unit. User experiments fall back to the request id for requests
    without personalization consent (when ``request_fallback``)."""
    request_fallback: bool = True
    buckets: tuple[int, int] = (0, LAYER_BUCKETS)
    """``[start, end)`` of the layer's buckets this experiment owns."""
    arms: tuple[Arm, ...]
    control: str = ""
    """Arm the others are compared with; empty means the first arm."""
    primary_metric: Literal["ctr", "cvr", "revenue_per_1k_requests", "clicks_per_unit", "revenue_per_unit"] = "ctr"
    planned_units: int | None = Field(None, ge=2)
    """Units the analyst plans to collect; tunes the sequential test (optional)."""
    status: Literal["draft", "running", "stopped"] = "draft"
    version: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    stopped_at: datetime | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _slug(v, "experiment id")

    @field_validator("layer")
    @classmethod
    def _layer(cls, v: str) -> str:
        return _slug(v, "layer")

    @model_validator(mode="after")
    def _check(self) -> "Experiment":
        if not self.salt:
            object.__setattr__(self, "salt", self.id)
        if len(self.arms) < 2:
            raise ValueError(f"experiment {self.id!r} needs at least 2 arms (a control and a treatment)")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.id!r} has duplicate arm names {names}; give each arm a unique name")
        if not self.control:
            object.__setattr__(self, "control", names[0])
        elif self.control not in names:
            raise ValueError(f"control {self.control!r} is not one of the arms {names}")
        start, end = self.buckets
        if not 0 <= start < end <= LAYER_BUCKETS:
            raise ValueError(f"buckets {list(self.buckets)} must satisfy 0 <= start < end <= {LAYER_BUCKETS}")
        return self

    # -- derived -------------------------------------------------------------------
    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]

    @property
    def weights(self) -> dict[str, float]:
        """Normalised arm weights (sum to 1)."""
        total = sum(a.weight for a in self.arms)
        return {a.name: a.weight / total for a in self.arms}

    @property
    def traffic(self) -> float:
        """Share of the layer's units in this experiment."""
        return (self.buckets[1] - self.buckets[0]) / LAYER_BUCKETS

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise ExperimentValidationError(f"experiment {self.id!r} has no arm {name!r}; arms are {self.arm_names}")

    def split_signature(self) -> tuple:
        """Everything that decides who gets which arm; frozen while running."""
        return (self.salt, self.layer, tuple(self.buckets), self.unit_type, self.request_fallback,
                tuple((a.name, round(w, 12)) for a, w in zip(self.arms, self.weights.values())))

    def definition(self) -> dict:
        """The user-editable definition (no store-managed fields), JSON-serialisable."""
        return self.model_dump(mode="json", exclude={"status", "version", "created_at", "started_at", "stopped_at"})


def parse_experiment(data: dict) -> Experiment:
    """Validate a mapping (e.g. from YAML) into an ``Experiment``; errors name the field."""
    if not isinstance(data, dict):
        raise ExperimentValidationError("an experiment definition must be a mapping with at least 'id' and 'arms'")
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        ident = data.get("id", "<no id>")
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'experiment'}: {e['msg']}" for e in exc.errors()]
        raise ExperimentValidationError(f"invalid experiment {ident!r}:\n" + "\n".join(lines)) from None


def load_experiment_yaml(text: str) -> Experiment:
    """Parse one experiment definition from YAML text."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentValidationError(f"experiment definition is not valid YAML: {exc}") from None
    return parse_experiment(data)
