"""Serving's fastest encoding path: the catalog's item side encoded once, requests as index arrays.

A request scores ~250 candidates drawn from a catalog of ~53k items whose attributes
(id, kind, advertiser, campaign, category, brand, price, rating) change only when the
campaign snapshot does. ``ItemBlock`` holds, per catalog and model pipeline, every
feature that reads item attributes only (hashed ids as CSR rows, numeric columns as
arrays) and the item-side columns as integer codes. ``encode_items`` then builds a
request's ``EncodedBatch`` with numpy gathers:

* features of the item alone (``item``, ``category``, ``brand``, ``price_z``, ...): gathered;
* features of the context alone (``scene``, ``hour``, ``user``, ...): computed once, repeated;
* crosses of the two (``scene_x_category``, ``object_match``, ...): computed once per
  *distinct* item value among the candidates (~30 categories, not 250 rows), then gathered;
* per-candidate numbers that move during the day (item/campaign statistics, the user's
  clicks in the category): passed in ``extra`` as columns.

The result equals ``FeaturePipeline.encode_columns`` on the same values (pinned by
tests/unit/models/test_models_items.py); it costs ~0.6–1.0 ms of CPU a request instead
of ~2.8 ms (XGBoost Recommend in-process: 10.3 → 4.3 ms per call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from models._schema import (
    DERIVED_COLUMNS, RAW_DENSE_COLUMNS, EncodedBatch, FeaturePipeline, _hashable, _num, dense_matrix,
)
from models.errors import InvalidModelInput


@dataclass(frozen=True)
class ItemBlock:
    """One catalog's item side encoded for one pipeline (see the module docstring)."""

    n: int
    keys: frozenset[str]
    """The item-side columns (every other column is context or ``extra``)."""
    codes: dict[str, tuple[np.ndarray, list]]
    """Item-side column → (int64 code per item, the distinct values): crosses compute per code."""
    sparse: dict[str, tuple[np.ndarray, np.ndarray, int]]
    """Features of item columns only → (offsets [n + 1], hashed ids, ids per row or -1)."""
    dense: dict[str, np.ndarray]
    """Item-side numeric columns (raw, ``price_z``, item-only derived) → float64 [n]."""


def _factorize(values: Sequence) -> tuple[np.ndarray, list]:
    index: dict = {}
    codes = np.fromiter((index.setdefault(_hashable(v), len(index)) for v in values), dtype=np.int64,
                        count=len(values))
    return codes, list(index)


def _csr(ids_per_row: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of ids → (offsets [n + 1], concatenated ids, k): ``k`` ids in every row, else -1."""
    lens = np.fromiter(map(len, ids_per_row), dtype=np.int64, count=len(ids_per_row))
    offsets = np.zeros(len(ids_per_row) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    values = np.fromiter((i for ids in ids_per_row for i in ids), dtype=np.int64, count=int(offsets[-1]))
    k = int(lens[0]) if len(lens) and (lens == lens[0]).all() else -1
    return offsets, values, k


def _gather(offsets: np.ndarray, values: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows ``rows`` → (int32 lengths, concatenated ids)."""
    if k >= 0:                  # every row has k ids (item, campaign: 1; category: leaf and top)
        return np.full(len(rows), k, dtype=np.int32), values.reshape(-1, k)[rows].reshape(-1) if k else values[:0]
    starts = offsets[rows]
    lens = offsets[rows + 1] - starts
    total = int(lens.sum())
    if not total:
        return lens.astype(np.int32), np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lens)
    pos = np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lens), lens)
    return lens.astype(np.int32), values[pos]


def item_block(pipeline: FeaturePipeline, columns: Mapping[str, Sequence], n: int) -> ItemBlock:
    """Encode a catalog's item columns (``key → n values``) once; ~0.3 s for 53k items."""
    bad = [k for k, v in columns.items() if len(v) != n]
    if bad:
        raise InvalidModelInput(f"item columns {bad} do not have {n} values; pass one value per catalog item")
    keys = frozenset(columns)
    codes = {k: _factorize(v) for k, v in columns.items()}
    sparse: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for feat in pipeline.features:
        if feat.sources and all(c in keys for c in feat.sources):
            sparse[feat.name] = _csr(_per_code(codes, feat.sources, n, feat.ids))
    dense: dict[str, np.ndarray] = {}
    for c in RAW_DENSE_COLUMNS:
        if c in keys:
            dense[c] = np.fromiter(map(_num, columns[c]), dtype=np.float64, count=n)
    for d in DERIVED_COLUMNS:
        if all(c in keys for c in d.sources):
            dense[d.name] = np.asarray(_per_code(codes, d.sources, n, d.fn), dtype=np.float64)
    if "category" in keys and "price" in keys:
        dense["price_z"] = pipeline.price_z(list(columns["category"]), dense["price"])
    return ItemBlock(n=n, keys=keys, codes=codes, sparse=sparse, dense=dense)


def _per_code(codes: Mapping[str, tuple[np.ndarray, list]], sources: Sequence[str], n: int, fn: Callable) -> list:
    """``fn`` of every item's ``sources`` values, called once per distinct combination."""
    combos, inverse = _distinct(codes, sources, np.arange(n))
    per = [fn(*values) for values in combos]
    return [per[i] for i in inverse.tolist()]


def _distinct(codes: Mapping[str, tuple[np.ndarray, list]], sources: Sequence[str],
              rows: np.ndarray) -> tuple[list[tuple], np.ndarray]:
    """The distinct combinations of ``sources`` values among ``rows`` (as value tuples), and
    which combination each row has (int64 [len(rows)])."""
    key = np.zeros(len(rows), dtype=np.int64)
    sizes = []
    for c in sources:
        col, vocab = codes[c]
        key = key * len(vocab) + col[rows]
        sizes.append(len(vocab))
    uniq, inverse = np.unique(key, return_inverse=True)
    combos = []
    for k in uniq.tolist():
        parts = []
        for size in reversed(sizes):
            k, r = divmod(k, size)
            parts.append(r)
        combos.append(tuple(codes[c][1][r] for c, r in zip(sources, reversed(parts))))
    return combos, inverse.astype(np.int64)


def encode_items(pipeline: FeaturePipeline, context: Mapping, block: ItemBlock, rows: np.ndarray,
                 extra: Mapping[str, np.ndarray] | None = None, cache: dict | None = None) -> EncodedBatch:
    """A request's ``EncodedBatch``: candidates are ``rows`` of ``block``; ``extra`` holds
    per-candidate numeric columns (float arrays of ``len(rows)``) that are neither item
    attributes nor context. Equal to ``encode_columns`` on the merged values.

    ``cache`` (kept by the caller across requests, for one block) remembers crosses by
    context value and item value: scene x category, say, has ~3k pairs, so after warm-up a
    request hashes only what its open-vocabulary intent text brings."""
    rows = np.asarray(rows, dtype=np.int64)
    m = len(rows)
    extra = extra or {}
    cache = {} if cache is None else cache
    if len(cache) > 50_000:
        cache.clear()
    keys = block.keys
    clash = [c for c in extra if c in keys]
    if clash:
        raise InvalidModelInput(f"extra columns {clash} are also item columns of the block; pass each column once")
    lengths: dict[str, np.ndarray] = {}
    values: dict[str, np.ndarray] = {}
    distinct: dict[str, tuple[list, np.ndarray]] = {}

    def values_of(column: str) -> tuple[list, np.ndarray]:
        """The distinct values of an item column among the candidates, and which each reads."""
        hit = distinct.get(column)
        if hit is None:
            codes, vocab = block.codes[column]
            uniq, inverse = np.unique(codes[rows], return_inverse=True)
            hit = distinct[column] = ([vocab[k] for k in uniq.tolist()], inverse.astype(np.int64))
        return hit

    def per_candidate(name: str, sources: tuple[str, ...], fn: Callable) -> tuple[list, np.ndarray]:
        """``fn`` once per distinct item-side value among the candidates, and which one each reads."""
        side = [c for c in sources if c in keys]
        if len(side) != 1:
            combos, inverse = _distinct(block.codes, side, rows)
            per = []
            for vals in combos:
                given = dict(zip(side, vals))
                per.append(fn(*(given[c] if c in given else context.get(c) for c in sources)))
            return per, inverse
        at = sources.index(side[0])
        args = [context.get(c) for c in sources]
        store = cache.setdefault((name, tuple(_hashable(a) for i, a in enumerate(args) if i != at)), {})
        vals, inverse = values_of(side[0])
        per = []
        for v in vals:
            out = store.get(v)
            if out is None:
                args[at] = v
                out = store[v] = fn(*args)
            per.append(out)
        return per, inverse

    for feat in pipeline.features:
        if feat.name in block.sparse:
            lengths[feat.name], values[feat.name] = _gather(*block.sparse[feat.name], rows=rows)
            continue
        if any(c in extra for c in feat.sources):
            raise InvalidModelInput(f"sparse feature {feat.name!r} reads {feat.sources}; extra columns are numeric "
                                    "only: pass item attributes in the block and request values in the context")
        if not any(c in keys for c in feat.sources):
            ids = feat.ids(*(context.get(c) for c in feat.sources))
            lengths[feat.name] = np.full(m, len(ids), dtype=np.int32)
            values[feat.name] = np.tile(np.asarray(ids, dtype=np.int64), m)
            continue
        per, inverse = per_candidate(feat.name, feat.sources, feat.ids)
        lengths[feat.name], values[feat.name] = _gather(*_csr(per), rows=inverse)
    cols: dict[str, np.ndarray] = {}
    for c in RAW_DENSE_COLUMNS:
        if c in extra:
            cols[c] = np.asarray(extra[c], dtype=np.float64)
        elif c in block.dense:
            cols[c] = block.dense[c][rows]
        else:
            cols[c] = np.full(m, _num(context.get(c)))
    for d in DERIVED_COLUMNS:
        if d.name in block.dense:
            cols[d.name] = block.dense[d.name][rows]
        elif not any(c in keys for c in d.sources):
            cols[d.name] = np.full(m, float(d.fn(*(context.get(c) for c in d.sources))))
        else:
            per, inverse = per_candidate(d.name, d.sources, d.fn)
            cols[d.name] = np.asarray(per, dtype=np.float64)[inverse]
    if "price_z" in block.dense:
        cols["price_z"] = block.dense["price_z"][rows]
    else:
        cols["price_z"] = pipeline.price_z([context.get("category")] * m, cols["price"])
    dense = pipeline._normalise(dense_matrix(cols, m, pipeline.prior_ctr, pipeline.prior_cvr))
    return EncodedBatch(dense=dense, lengths=lengths, values=values)
