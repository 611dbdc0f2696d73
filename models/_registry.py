"""The model registry: versioned artifact directories with metadata, and aliases.

Layout under ``settings.registry_dir``::

    versions/<version>/meta.json        kind, features, config, data window, metrics, code version
    versions/<version>/pipeline.json    the fitted feature pipeline (priors, dense normalisation)
    versions/<version>/<model files>    ranker.pt + ranker_config.json | xgb_*.ubj | logreg.npz | popularity.json
    versions/<version>/report/          metrics.json, calibration.png, roc.png
    aliases.json                        {"production": "<version>", "candidate": "<version>"}

Versions are immutable once written (written to a temporary directory, then renamed);
aliases are rewritten atomically. ``Registry.load`` returns a ``Scorer``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from models._schema import DENSE_FEATURES, FeaturePipeline
from models.errors import InvalidModelInput, ModelNotFound, ModelsError

log = logging.getLogger(__name__)

ALIASES = ("production", "candidate")


def code_version(repo: Path | None = None) -> str:
    """The git sha of the checkout (``-dirty`` when it has uncommitted changes), else ``unknown``."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "models"], cwd=repo, capture_output=True,
                               text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class ModelRecord:
    """One registered version: its directory and metadata."""

    version: str
    path: Path
    meta: dict

    @property
    def kind(self) -> str:
        return self.meta["kind"]


class Scorer:
    """A loaded model: ``score(rows) -> (pctr, pcvr)`` for one request's candidates at once.

    ``rows`` are dicts (or one dict of equal-length columns) holding the request context
    (``device``, ``scene``, ``objects``, ``intent_text``, ``intent_category``,
    ``location_category``, ``region``, ``local_hour``, ``local_weekday``, ``user_id``,
    ``consent_personalization``) and candidate attributes (``item_id``, ``item_kind``,
    ``campaign_id``, ``advertiser_id``, ``category``, ``brand``, ``price``), optionally
    ``position``/``prior_exposures`` and Feast feature values (``item_ctr``-style counts
    named as in ``models.COUNT_COLUMNS``). Missing keys count as unknown / 0.
    Thread-safe for concurrent ``score`` calls (the id cache is a plain dict; races only
    recompute a hash).
    """

    def __init__(self, version: str, kind: str, pipeline: FeaturePipeline, predictor, meta: dict) -> None:
        self.version, self.kind, self.pipeline, self.predictor, self.meta = version, kind, pipeline, predictor, meta
        self._cache: dict = {}
        self._blocks: tuple = ()     # newest first: (the item columns encoded, their ItemBlock, its cross cache)
        self._prefix: tuple | None = None    # (the catalog's product columns, their ItemBlock)
        self._block_lock = threading.Lock()

    def score(self, rows: Sequence[Mapping] | Mapping[str, Sequence]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (pctr, pcvr), float32 arrays in row order."""
        rows = _as_rows(rows)
        return self._predict(len(rows), lambda: self.pipeline.encode_rows(rows, self._cache))

    def score_request(self, context: Mapping, candidates: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
        """Same as ``score([{**context, **c} for c in candidates])``, but request-level features
        are computed once: the call serving makes, once per request, for all its candidates."""
        return self._predict(len(candidates), lambda: self.pipeline.encode_request(context, candidates, self._cache))

    def score_columns(self, context: Mapping, columns: Mapping[str, Sequence], n: int) -> tuple[np.ndarray, np.ndarray]:
        """``score_request`` with the candidates as columns (see ``FeaturePipeline.encode_columns``)."""
        return self._predict(n, lambda: self.pipeline.encode_columns(context, columns, n, self._cache))

    def item_block(self, items: Mapping[str, Sequence], n: int, *,
                   prefix: tuple[Mapping[str, Sequence], int] | None = None):
        """The ``ItemBlock`` of a catalog's item columns, built on first use and kept while
        the same ``items`` object is passed (serving passes its catalog's, rebuilt with each
        campaign snapshot): ~0.3 s for 53k items, once, instead of per-candidate work per
        request. The two latest catalogs are kept: while serving swaps to a new one, requests
        already holding the previous one must not rebuild it (and push the new one out).

        ``prefix`` = (columns, m): the first ``m`` items of ``items`` are these columns' (the
        catalog's products, which a campaign edit leaves alone). Their block is kept while the
        same columns object comes back, and only the items after them are encoded."""
        return self._block_entry(items, n, prefix)[1]

    def _block_entry(self, items: Mapping[str, Sequence], n: int,
                     prefix: tuple[Mapping[str, Sequence], int] | None = None) -> tuple:
        for entry in self._blocks:
            if entry[0] is items:
                return entry
        with self._block_lock:
            for entry in self._blocks:
                if entry[0] is items:
                    return entry
            from models._items import concat_blocks, item_block

            if prefix is None:
                block = item_block(self.pipeline, items, n)
            else:
                columns, m = prefix
                if set(columns) != set(items) or not 0 <= m <= n:
                    raise ValueError(f"prefix of {m} items with columns {sorted(columns)} does not start "
                                     f"items of {n} with columns {sorted(items)}; pass prefix=None")
                if self._prefix is None or self._prefix[0] is not columns:
                    self._prefix = (columns, item_block(self.pipeline, columns, m))
                tail = item_block(self.pipeline, {k: v[m:] for k, v in items.items()}, n - m)
                block = concat_blocks(self._prefix[1], tail)
            entry = (items, block, {})
            self._blocks = (entry,) + self._blocks[:1]
            return entry

    def score_items(self, context: Mapping, items: Mapping[str, Sequence], n_items: int, rows: Sequence[int],
                    extra: Mapping[str, np.ndarray] | None = None, *, cvr: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``score_columns`` for candidates that are ``rows`` of a catalog's item columns
        (``items``: ``key → n_items`` values), plus ``extra`` per-candidate numeric columns
        (statistics). Serving's path: see ``models._items``. ``cvr=False`` skips the pCVR
        head where the predictor can (XGBoost's second booster); pcvr is then None."""
        from models._items import encode_items

        _, block, crosses = self._block_entry(items, n_items)
        if not len(rows):
            return np.zeros(0, dtype=np.float32), (np.zeros(0, dtype=np.float32) if cvr else None)
        enc = encode_items(self.pipeline, context, block, np.asarray(rows, dtype=np.int64), extra, crosses,
                           getattr(self.predictor, "sparse_inputs", None))
        if not cvr and hasattr(self.predictor, "predict_ctr"):
            return self.predictor.predict_ctr(enc), None
        out = self.predictor.predict(enc)
        return out[:, 0], (out[:, 1] if cvr else None)

    def _predict(self, n: int, encode: Callable[[], object]) -> tuple[np.ndarray, np.ndarray]:
        if not n:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
        out = self.predictor.predict(encode())
        return out[:, 0], out[:, 1]

    def __repr__(self) -> str:
        return f"Scorer(version={self.version!r}, kind={self.kind!r})"


def _as_rows(rows) -> list[Mapping]:
    if isinstance(rows, Mapping):
        lens = {len(v) for v in rows.values() if isinstance(v, (list, tuple, np.ndarray))}
        if len(lens) > 1:
            raise InvalidModelInput(f"columns have different lengths {sorted(lens)}; pass equal-length columns")
        n = lens.pop() if lens else 0
        keys = list(rows)
        return [{k: rows[k][i] for k in keys} for i in range(n)]
    return list(rows)


class Registry:
    """Versions and aliases under ``settings.registry_dir`` (or an explicit directory)."""

    def __init__(self, settings=None, *, root: Path | None = None) -> None:
        if root is None and settings is None:
            raise ModelsError("Registry needs settings (settings.registry_dir) or root=")
        self.root = Path(root) if root is not None else Path(settings.registry_dir)

    # -- writing ---------------------------------------------------------------------------------
    def register(self, kind: str, predictor, pipeline: FeaturePipeline, *, config: Mapping | None = None,
                 data_window: Mapping | None = None, metrics: Mapping | None = None, extra: Mapping | None = None,
                 report_dir: Path | None = None, alias: str | None = None) -> ModelRecord:
        """Write a new immutable version; optionally point ``alias`` at it."""
        now = datetime.now(timezone.utc)
        version = f"{kind}-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        versions = self.root / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        tmp = versions / f".{version}.tmp"
        tmp.mkdir()
        predictor.save(tmp)
        (tmp / "pipeline.json").write_text(json.dumps(pipeline.to_dict()))
        if report_dir and Path(report_dir).exists():
            shutil.copytree(report_dir, tmp / "report")
        meta = {
            "version": version, "kind": kind, "created_at": now.isoformat(),
            "features": {"sparse": list(pipeline.sparse), "dense": list(DENSE_FEATURES)},
            "config": dict(config or {}), "data_window": dict(data_window or {}),
            "metrics": dict(metrics or {}), "code_version": code_version(), **dict(extra or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=_json_default))
        os.replace(tmp, versions / version)
        log.info("registered model %s", version)
        if alias:
            self.promote(version, alias)
        return ModelRecord(version, versions / version, meta)

    def promote(self, version_or_alias: str, alias: str = "production") -> ModelRecord:
        """Point ``alias`` at a version (or at what another alias points to)."""
        if alias not in ALIASES:
            raise InvalidModelInput(f"alias {alias!r} is not one of {', '.join(ALIASES)}")
        rec = self.get(version_or_alias)
        aliases = self.aliases()
        aliases[alias] = rec.version
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".aliases.{uuid.uuid4().hex[:6]}.tmp"
        tmp.write_text(json.dumps(aliases, indent=1))
        os.replace(tmp, self.root / "aliases.json")
        return rec

    # -- reading ---------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        f = self.root / "aliases.json"
        return json.loads(f.read_text()) if f.exists() else {}

    def list(self) -> list[ModelRecord]:
        """All versions, newest first."""
        d = self.root / "versions"
        if not d.exists():
            return []
        recs = []
        for p in d.iterdir():
            if p.name.startswith(".") or not (p / "meta.json").exists():
                continue
            recs.append(ModelRecord(p.name, p, json.loads((p / "meta.json").read_text())))
        return sorted(recs, key=lambda r: r.meta.get("created_at", ""), reverse=True)

    def get(self, version_or_alias: str) -> ModelRecord:
        version = self.aliases().get(version_or_alias, version_or_alias)
        p = self.root / "versions" / version
        if not (p / "meta.json").exists():
            known = ", ".join(sorted(self.aliases())) or "none"
            raise ModelNotFound(f"no model {version_or_alias!r} in {self.root} (aliases: {known}); "
                                "train one with `sightline train` or see `sightline models list`")
        return ModelRecord(version, p, json.loads((p / "meta.json").read_text()))

    def load(self, version_or_alias: str = "production") -> Scorer:
        """A ready ``Scorer`` for a version or alias."""
        from models._predictors import load_predictor

        rec = self.get(version_or_alias)
        pipeline = FeaturePipeline.from_dict(json.loads((rec.path / "pipeline.json").read_text()))
        return Scorer(rec.version, rec.kind, pipeline, load_predictor(rec.kind, rec.path), rec.meta)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
