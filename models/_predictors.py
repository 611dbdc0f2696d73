"""Predictors: a trained model of any kind behind one small interface, saved to a directory.

``Predictor.predict(EncodedBatch) -> float32 [B, 2]`` (pCTR, pCVR). Kinds: ``torchrec``
(the unsharded ranker), ``xgboost`` (hist trees, one booster per head), ``logreg``
(logistic regression on one-hot hashed ids + dense), ``popularity`` (smoothed item CTR).
All read the same ``EncodedBatch`` the feature pipeline makes, so they share features.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from models._schema import DENSE_FEATURES, EncodedBatch
from models.errors import ModelsError

# Low-cardinality sparse features XGBoost reads as categoricals (first id of the bag,
# "category" also its second: the top). High-cardinality ids reach trees through the
# CTR statistics and the context-match features instead.
_XGB_CATEGORICAL = ("category", "item_kind", "scene", "intent_category", "location", "hour", "device", "weekday")


class Predictor(Protocol):
    kind: str
    sparse_inputs: frozenset[str] | None
    """The sparse features ``predict`` reads (None: all of them): serving's catalog path
    encodes only these (``models._items.encode_items``)."""

    def predict(self, enc: EncodedBatch) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...


def _first_ids(enc: EncodedBatch, feature: str, which: int = 0) -> np.ndarray:
    lens = enc.lengths[feature]
    off = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])[:-1]
    ok = lens > which
    out = np.full(enc.size, np.nan, dtype=np.float32)
    out[ok] = enc.values[feature][off[ok] + which]
    return out


def tabular(enc: EncodedBatch) -> tuple[np.ndarray, list[str], list[str]]:
    """Dense features + categorical codes (NaN missing) for tree models; names and types."""
    cols = [enc.dense]
    names = list(DENSE_FEATURES)
    types = ["q"] * len(DENSE_FEATURES)
    for f in _XGB_CATEGORICAL:
        if f not in enc.lengths:
            continue
        cols.append(_first_ids(enc, f)[:, None])
        names.append(f)
        types.append("c")
    if "category" in enc.lengths:
        cols.append(_first_ids(enc, "category", 1)[:, None])
        names.append("category_top")
        types.append("c")
    return np.hstack(cols).astype(np.float32), names, types


def _tabular_x(enc: EncodedBatch) -> np.ndarray:
    """``tabular(enc)[0]``, built in place: a feature with the same number of ids in every row
    (all but the item-side ones, in a request) reads its first ids as a strided slice."""
    cats = [(f, 0) for f in _XGB_CATEGORICAL if f in enc.lengths]
    if "category" in enc.lengths:
        cats.append(("category", 1))
    n, d = enc.dense.shape
    x = np.empty((n, d + len(cats)), dtype=np.float32)
    x[:, :d] = enc.dense
    for j, (f, which) in enumerate(cats, d):
        lens = enc.lengths[f]
        k = int(lens[0]) if n else -1
        if n and (lens == k).all():
            x[:, j] = enc.values[f][which::k] if k > which else np.nan
        else:
            x[:, j] = _first_ids(enc, f, which)
    return x


class _DensePredict:
    """``booster.inplace_predict(x, iteration_range=...)`` for a C-contiguous float32 matrix,
    calling XGBoost's C function (``XGBoosterPredictFromDense``) as ``inplace_predict`` does
    but without its per-call Python: JSON-encoding the same arguments, checking a dozen
    input types, and a class built per call to wrap the output (~90 of ~330 µs for 250
    rows). It relies on ``xgboost.core`` internals, so it is used only when a probe gives
    exactly what ``inplace_predict`` gives; otherwise (another xgboost) the public call."""

    def __init__(self, booster, iteration_range: tuple[int, int]) -> None:
        self.booster, self.iteration_range = booster, iteration_range
        self.features = booster.num_features()
        self._direct = None
        try:
            import ctypes

            from xgboost import core

            self._ctypes, self._fn, self._check = ctypes, core._LIB.XGBoosterPredictFromDense, core._check_call
            self._args = core.make_jcargs(type=0, training=False, iteration_begin=int(iteration_range[0]),
                                          iteration_end=int(iteration_range[1]), missing=np.nan,
                                          strict_shape=False, cache_id=0)
            self._interface = ('{"data": [%d, false], "shape": [%d, %d], "strides": null, "typestr": "'
                               + np.dtype(np.float32).str + '", "version": 3}').encode()
            probe = np.zeros((4, self.features), dtype=np.float32)
            probe[1] = np.nan
            probe[2] = 1.0
            probe[3, ::2] = np.nan
            self._direct = True
            if not np.array_equal(self._call(probe), self._public(probe)):
                self._direct = None
        except Exception:  # noqa: BLE001 - any difference in xgboost's internals: the public call
            self._direct = None

    def _public(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(x, iteration_range=self.iteration_range), dtype=np.float32)

    def _call(self, x: np.ndarray) -> np.ndarray:
        ct = self._ctypes
        n, d = x.shape
        preds, shape, dims = ct.POINTER(ct.c_float)(), ct.POINTER(ct.c_uint64)(), ct.c_uint64()
        self._check(self._fn(self.booster.handle, self._interface % (x.ctypes.data, n, d), self._args, None,
                             ct.byref(shape), ct.byref(dims), ct.byref(preds)))
        if dims.value != 1 or shape[0] != n:
            raise ValueError(f"xgboost returned a prediction of {dims.value} dimensions for {n} rows")
        out = np.empty(n, dtype=np.float32)
        ct.memmove(out.ctypes.data, preds, 4 * n)
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._direct is None or x.dtype != np.float32 or x.ndim != 2 or not x.flags.c_contiguous or not len(x):
            return self._public(x)
        if x.shape[1] != self.features:
            raise ValueError(f"Feature shape mismatch, expected: {self.features}, got {x.shape[1]}")
        return self._call(x)


class XGBoostPredictor:
    kind = "xgboost"
    sparse_inputs = frozenset(_XGB_CATEGORICAL)     # "category" also gives "category_top"

    def __init__(self, ctr, cvr) -> None:
        self.ctr, self.cvr = ctr, cvr
        self._predict_ctr = _DensePredict(ctr, self._iterations())     # read once: a C call each
        self._predict_cvr = _DensePredict(cvr, (0, 0))

    @classmethod
    def fit(cls, enc: EncodedBatch, labels: np.ndarray, valid: tuple[EncodedBatch, np.ndarray] | None = None,
            rounds: int = 400, seed: int = 0) -> "XGBoostPredictor":
        import xgboost as xgb

        x, names, types = tabular(enc)
        params = {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
                  "max_depth": 7, "eta": 0.08, "subsample": 0.9, "colsample_bytree": 0.8, "min_child_weight": 5,
                  "max_cat_to_onehot": 8, "nthread": 2, "seed": seed}
        dtr = xgb.DMatrix(x, label=labels[:, 0], feature_names=names, feature_types=types, enable_categorical=True)
        evals, dva = [], None
        if valid is not None and valid[0].size:
            xv, _, _ = tabular(valid[0])
            dva = xgb.DMatrix(xv, label=valid[1][:, 0], feature_names=names, feature_types=types, enable_categorical=True)
            evals = [(dva, "valid")]
        ctr = xgb.train(params, dtr, rounds, evals=evals, early_stopping_rounds=30 if evals else None, verbose_eval=False)
        clicked = labels[:, 0] > 0
        dcv = xgb.DMatrix(x[clicked], label=labels[clicked, 1], feature_names=names, feature_types=types,
                          enable_categorical=True)
        cvr = xgb.train({**params, "max_depth": 4}, dcv, max(rounds // 3, 10))
        return cls(ctr, cvr)

    # inplace_predict on the numpy matrix: the boosters keep the feature names and types
    # (categoricals) from training, so no DMatrix is built per call (~2.7x cheaper, same values).
    def _iterations(self) -> tuple[int, int]:
        return (0, self.ctr.best_iteration + 1) if self.ctr.attr("best_iteration") is not None else (0, 0)

    def predict(self, enc: EncodedBatch) -> np.ndarray:
        x = _tabular_x(enc)
        return np.stack([self._predict_ctr(x), self._predict_cvr(x)], axis=1).astype(np.float32)

    def predict_ctr(self, enc: EncodedBatch) -> np.ndarray:
        """pCTR only (float32 [B]): serving's auction reads no pCVR, and its booster is half the cost."""
        return self._predict_ctr(_tabular_x(enc))

    def save(self, directory: Path) -> None:
        self.ctr.save_model(str(Path(directory) / "xgb_ctr.ubj"))
        self.cvr.save_model(str(Path(directory) / "xgb_cvr.ubj"))

    @classmethod
    def load(cls, directory: Path) -> "XGBoostPredictor":
        import xgboost as xgb

        ctr, cvr = xgb.Booster(), xgb.Booster()
        ctr.load_model(str(Path(directory) / "xgb_ctr.ubj"))
        cvr.load_model(str(Path(directory) / "xgb_cvr.ubj"))
        ctr.set_param({"nthread": 1})
        cvr.set_param({"nthread": 1})
        return cls(ctr, cvr)


def _onehot(enc: EncodedBatch, sizes: dict[str, int]):
    """CSR matrix: dense features, then one column per hashed id of every sparse feature."""
    from scipy import sparse

    n, d = enc.dense.shape
    rows, cols, vals = [np.repeat(np.arange(n), d)], [np.tile(np.arange(d), n)], [enc.dense.reshape(-1)]
    base = d
    for f, size in sizes.items():
        lens = enc.lengths[f]
        rows.append(np.repeat(np.arange(n), lens))
        cols.append(enc.values[f] + base)
        vals.append(np.repeat(1.0 / np.maximum(lens, 1), lens))
        base += size
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    v = np.concatenate(vals).astype(np.float32)
    return sparse.csr_matrix((v, (r, c)), shape=(n, base))


class LogRegPredictor:
    kind = "logreg"
    sparse_inputs = None

    def __init__(self, coef_ctr: np.ndarray, b_ctr: float, coef_cvr: np.ndarray, b_cvr: float, sizes: dict) -> None:
        self.coef_ctr, self.b_ctr, self.coef_cvr, self.b_cvr, self.sizes = coef_ctr, b_ctr, coef_cvr, b_cvr, sizes

    @classmethod
    def fit(cls, enc: EncodedBatch, labels: np.ndarray, sizes: dict[str, int], c: float = 0.5,
            max_iter: int = 200) -> "LogRegPredictor":
        from sklearn.linear_model import LogisticRegression

        full = _onehot(enc, sizes)
        # Fit on the columns the training rows use (~100k of the 3.3M hashed ids): lbfgs
        # pays per column per iteration. An unseen column's L2-optimal weight is 0 anyway.
        used = np.flatnonzero(full.getnnz(axis=0))
        x = full[:, used]

        def widen(coef: np.ndarray) -> np.ndarray:
            out = np.zeros(full.shape[1], dtype=np.float32)
            out[used] = coef
            return out

        ctr = LogisticRegression(C=c, max_iter=max_iter, solver="lbfgs").fit(x, labels[:, 0])
        clicked = labels[:, 0] > 0
        y = labels[clicked, 1]
        if clicked.sum() < 2 or y.min() == y.max():   # no conversions logged yet: a constant pCVR
            rate = float(np.clip(y.mean() if len(y) else 0.0, 1e-4, 1 - 1e-4))
            cvr_coef, cvr_b = np.zeros(full.shape[1], dtype=np.float32), float(np.log(rate / (1 - rate)))
        else:
            cvr = LogisticRegression(C=c / 4, max_iter=max_iter, solver="lbfgs").fit(x[clicked], y)
            cvr_coef, cvr_b = widen(cvr.coef_[0]), float(cvr.intercept_[0])
        return cls(widen(ctr.coef_[0]), float(ctr.intercept_[0]), cvr_coef, cvr_b, dict(sizes))

    def predict(self, enc: EncodedBatch) -> np.ndarray:
        x = _onehot(enc, self.sizes)
        z1 = x @ self.coef_ctr + self.b_ctr
        z2 = x @ self.coef_cvr + self.b_cvr
        return (1 / (1 + np.exp(-np.stack([z1, z2], axis=1)))).astype(np.float32)

    def save(self, directory: Path) -> None:
        np.savez(Path(directory) / "logreg.npz", coef_ctr=self.coef_ctr, coef_cvr=self.coef_cvr,
                 b=np.array([self.b_ctr, self.b_cvr]))
        (Path(directory) / "logreg_sizes.json").write_text(json.dumps(self.sizes))

    @classmethod
    def load(cls, directory: Path) -> "LogRegPredictor":
        z = np.load(Path(directory) / "logreg.npz")
        sizes = json.loads((Path(directory) / "logreg_sizes.json").read_text())
        return cls(z["coef_ctr"], float(z["b"][0]), z["coef_cvr"], float(z["b"][1]), sizes)


class PopularityPredictor:
    """Smoothed per-item CTR/CVR from the training split (by hashed item id); prior otherwise."""

    kind = "popularity"
    sparse_inputs = frozenset({"item"})

    def __init__(self, table: dict[int, tuple[float, float]], prior: tuple[float, float]) -> None:
        self.table, self.prior = table, prior

    @classmethod
    def fit(cls, enc: EncodedBatch, labels: np.ndarray, strength: float = 20.0) -> "PopularityPredictor":
        item = _first_ids(enc, "item")
        p_ctr = float(labels[:, 0].mean())
        p_cvr = float(labels[labels[:, 0] > 0, 1].mean()) if labels[:, 0].sum() else 0.0
        table: dict[int, tuple[float, float]] = {}
        ok = ~np.isnan(item)
        ids, inv = np.unique(item[ok].astype(np.int64), return_inverse=True)
        shows = np.bincount(inv, minlength=len(ids))
        clicks = np.bincount(inv, weights=labels[ok, 0], minlength=len(ids))
        convs = np.bincount(inv, weights=labels[ok, 1], minlength=len(ids))
        for i, s, c, v in zip(ids.tolist(), shows, clicks, convs):
            table[i] = ((c + strength * p_ctr) / (s + strength), (v + strength * p_cvr) / (c + strength))
        return cls(table, (p_ctr, p_cvr))

    def predict(self, enc: EncodedBatch) -> np.ndarray:
        item = _first_ids(enc, "item")
        out = np.empty((enc.size, 2), dtype=np.float32)
        for k, i in enumerate(item):
            out[k] = self.prior if np.isnan(i) else self.table.get(int(i), self.prior)
        return out

    def save(self, directory: Path) -> None:
        (Path(directory) / "popularity.json").write_text(json.dumps(
            {"prior": self.prior, "table": {str(k): v for k, v in self.table.items()}}))

    @classmethod
    def load(cls, directory: Path) -> "PopularityPredictor":
        d = json.loads((Path(directory) / "popularity.json").read_text())
        return cls({int(k): tuple(v) for k, v in d["table"].items()}, tuple(d["prior"]))


class TorchRecPredictor:
    """The unsharded TorchRec ranker (whole tables) loaded for single-process inference."""

    kind = "torchrec"
    sparse_inputs = None

    def __init__(self, ranker, cfg, platt: list[list[float]] | None = None) -> None:
        self.ranker, self.cfg = ranker, cfg
        self.keys = list(cfg.sparse)
        self.platt = platt
        """Per head (a, b): p = sigmoid(a * logit + b), fitted on the validation split; None = raw."""
        self.tables = None
        """``stack_tables`` of a loaded (inference-only) ranker: one lookup for every table."""
        self.head = None
        """``ranker_head`` of a loaded (inference-only) ranker."""

    def predict_raw(self, enc: EncodedBatch) -> np.ndarray:
        from models._torchrec import predict_ranker

        return predict_ranker(self.ranker, enc, self.keys, self.tables, self.head)

    def _calibrated(self, p: np.ndarray, heads: slice) -> np.ndarray:
        z = _logit(p)
        a = np.asarray([h[0] for h in self.platt[heads]], dtype=np.float32)
        b = np.asarray([h[1] for h in self.platt[heads]], dtype=np.float32)
        return (1 / (1 + np.exp(-(z * a + b)))).astype(np.float32)

    def predict(self, enc: EncodedBatch) -> np.ndarray:
        p = self.predict_raw(enc)
        return self._calibrated(p, slice(None)) if self.platt else p

    def predict_ctr(self, enc: EncodedBatch) -> np.ndarray:
        """pCTR only (float32 [B], ``predict(enc)[:, 0]``): serving's auction reads no pCVR,
        so only that head is calibrated."""
        p = self.predict_raw(enc)[:, :1]
        return (self._calibrated(p, slice(0, 1)) if self.platt else p)[:, 0]

    def calibrate(self, enc: EncodedBatch, labels: np.ndarray) -> None:
        """Platt scaling per head on held-out rows (the validation split, later than training).

        One pass of SGD leaves the intercept wherever the last batches put it (predicted/
        observed CTR swung between 0.95 and 1.25 across runs); two parameters fitted on
        the next time window fix that without touching the ranking (monotone)."""
        from sklearn.linear_model import LogisticRegression

        z = _logit(self.predict_raw(enc))
        heads = []
        for h, mask in ((0, np.ones(len(labels), dtype=bool)), (1, labels[:, 0] > 0)):
            y = labels[mask, h]
            if mask.sum() < 50 or y.min() == y.max():
                heads.append([1.0, 0.0])
                continue
            lr = LogisticRegression(C=1e4).fit(z[mask, h:h + 1], y)
            heads.append([float(lr.coef_[0, 0]), float(lr.intercept_[0])])
        self.platt = heads

    def save(self, directory: Path) -> None:
        import torch

        torch.save(self.ranker.state_dict(), Path(directory) / "ranker.pt")
        (Path(directory) / "ranker_config.json").write_text(json.dumps(self.cfg.to_dict()))
        (Path(directory) / "calibration.json").write_text(json.dumps({"platt": self.platt}))

    @classmethod
    def load(cls, directory: Path) -> "TorchRecPredictor":
        import torch

        from models._torchrec import RankerConfig, build_ranker

        cfg = RankerConfig.from_dict(json.loads((Path(directory) / "ranker_config.json").read_text()))
        ranker = build_ranker(cfg, device=torch.device("cpu"))
        ranker.load_state_dict(torch.load(Path(directory) / "ranker.pt", map_location="cpu", weights_only=True))
        ranker.eval()
        calib = Path(directory) / "calibration.json"
        platt = json.loads(calib.read_text())["platt"] if calib.exists() else None
        predictor = cls(ranker, cfg, platt)
        from models._torchrec import ranker_head, stack_tables

        predictor.tables = stack_tables(ranker, predictor.keys)
        predictor.head = ranker_head(ranker)
        return predictor


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


KINDS = {"torchrec": TorchRecPredictor, "xgboost": XGBoostPredictor, "logreg": LogRegPredictor,
         "popularity": PopularityPredictor}


def load_predictor(kind: str, directory: Path) -> Predictor:
    if kind not in KINDS:
        raise ModelsError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind].load(directory)
