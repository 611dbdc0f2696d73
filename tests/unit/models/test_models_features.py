"""Feature encoding: the training (polars) and serving (dict rows) paths agree; ids are stable."""

from __future__ import annotations

import numpy as np

from models import FeaturePipeline, bucket
from models._schema import _price_cap, intent_tokens
from models.testing import synthetic_impressions


def test_bucket_is_stable_across_processes_and_versions():
    # crc32-based: golden values pin it (a change would silently re-map every trained id).
    assert bucket("item", "i42", 65536) == 43205
    assert bucket("scene", "gym", 512) == bucket("scene", "gym", 512)


def test_intent_tokens_drop_stop_words_and_numbers():
    assert intent_tokens("I need running shoes under 100 euros") == ["running", "shoes", "euros"]
    assert intent_tokens("") == []
    assert _price_cap("running shoes under 100 euros") == 100.0
    assert _price_cap("cheap shoes") == 0.0


def test_frame_and_row_encoding_are_identical():
    df = synthetic_impressions(600, seed=3)
    pipe = FeaturePipeline.fit(df)
    a = pipe.encode_frame(df)
    b = pipe.encode_rows(df.to_dicts())
    for name in a.lengths:
        np.testing.assert_array_equal(a.lengths[name], b.lengths[name], err_msg=name)
        np.testing.assert_array_equal(a.values[name], b.values[name], err_msg=name)
    np.testing.assert_allclose(a.dense, b.dense, rtol=1e-6, atol=1e-6)


def test_user_id_is_a_feature_only_with_personalization_consent():
    df = synthetic_impressions(300, seed=4)
    enc = FeaturePipeline.fit(df).encode_frame(df)
    consent = df["consent_personalization"].to_numpy()
    assert (enc.lengths["user"][~consent] == 0).all()
    assert (enc.lengths["user"][consent] == 1).all()


def test_pipeline_round_trips_through_json():
    df = synthetic_impressions(300, seed=5)
    pipe = FeaturePipeline.fit(df)
    again = FeaturePipeline.from_dict(pipe.to_dict())
    np.testing.assert_array_equal(pipe.encode_frame(df).dense, again.encode_frame(df).dense)


def test_request_fast_path_equals_row_encoding():
    df = synthetic_impressions(400, seed=6)
    pipe = FeaturePipeline.fit(df)
    rows = df.head(60).to_dicts()
    context_keys = ("user_id", "device", "scene", "objects", "intent_text", "location_category", "region",
                    "local_hour", "local_weekday", "consent_personalization", "user_clicks_7d")
    context = {k: rows[0].get(k) for k in context_keys}
    candidates = [{k: v for k, v in r.items() if k not in context_keys} for r in rows]
    candidates[3].pop("price")                    # a candidate without a key reads the context's
    b = pipe.encode_rows([{**context, **c} for c in candidates])
    columns = {k: [c.get(k, context.get(k)) for c in candidates] for k in set().union(*candidates)}
    for a in (pipe.encode_request(context, candidates, {}), pipe.encode_columns(context, columns, len(candidates), {})):
        for name in a.lengths:
            np.testing.assert_array_equal(a.lengths[name], b.lengths[name], err_msg=name)
            np.testing.assert_array_equal(a.values[name], b.values[name], err_msg=name)
        np.testing.assert_allclose(a.dense, b.dense, rtol=1e-6, atol=1e-6)


def test_device_accepts_the_proto_enum_name():
    from models._schema import SPARSE_FEATURES

    device = next(f for f in SPARSE_FEATURES if f.name == "device")
    assert device.ids("GLASSES") == device.ids("glasses") and device.ids("DEVICE_UNSPECIFIED") == []
    cross = next(f for f in SPARSE_FEATURES if f.name == "device_x_category")
    assert cross.ids("GLASSES", "sports/yoga") == cross.ids("glasses", "sports/yoga")


def test_closed_vocabularies_get_one_row_each():
    # Table sizes keep these collision-free (an 8-row device table once put glasses and phone on one row).
    from campaigns.vocab import LOCATION_CATEGORIES
    from models._schema import SPARSE_FEATURES

    by = {f.name: f for f in SPARSE_FEATURES}
    closed = {"hour": [[h] for h in range(24)], "weekday": [[d] for d in range(7)], "device": [["glasses"], ["phone"]],
              "item_kind": [["ad"], ["product"]], "location": [[loc] for loc in LOCATION_CATEGORIES]}
    for name, raws in closed.items():
        ids = [tuple(by[name].ids(*raw)) for raw in raws]
        assert len(set(ids)) == len(raws), name


def test_object_match_ignores_plural_and_price_words_are_read():
    from models._schema import _object_match, _price_word

    assert _object_match(["tire"], "auto/tires") == 1.0
    assert _object_match(["running_shoe"], "sports/running_shoes") == 1.0
    assert _object_match(["puzzle"], "auto/tires") == 0.0
    assert _price_word("Show me cheap coffee") == -1.0
    assert _price_word("Looking for premium sneakers nearby") == 1.0
    assert _price_word("I need running shoes under 100 euros") == 0.0


def test_price_is_read_relative_to_its_category():
    import polars as pl

    df = synthetic_impressions(400, seed=8)
    pipe = FeaturePipeline.fit(df)
    cat = df.filter(pl.col("price") > 0)["category"].mode()[0]
    mean, _ = pipe.category_log_price[cat]
    z = pipe.price_z([cat, cat, "no/such", cat], np.array([np.exp(mean), np.exp(mean) * 10, 50.0, 0.0]))
    assert z[0] == 0.0 or abs(z[0]) < 1e-9
    assert z[1] > 0 and z[2] == 0.0 and z[3] == 0.0


_CATEGORIES = [None, "", "auto/tires", "auto/tire", "sports/running_shoes", "sports/running_shoe", "sports",
               "fashion/dresses", "fashion/boxes", "home/a/b", "/odd", "auto/batteries", "books_media/books"]
_CONTEXTS = {
    "objects": [None, [], ["tire"], ["running_shoe", "tire"], ["dress", "", None], ["box", "battery", "book"]],
    "intent_text": [None, "", "cheap tires under 40 euros", "running shoes", "a book about home"],
    "intent_category": [None, "", "auto/tires", "sports/running_shoes", "sports", "home/a/b"],
}


def test_item_keys_and_matches_say_what_the_features_read():
    # serving's catalog path computes a cross once per item key and fills a matches column
    # per context value (models._items): both must give what the feature gives per value
    from models._schema import DERIVED_COLUMNS, SPARSE_FEATURES

    declared = [f for f in (*SPARSE_FEATURES, *DERIVED_COLUMNS) if f.item_key is not None]
    assert {f.name for f in declared} >= {"objects_x_category", "intent_x_category", "object_match"}
    for f in declared:
        column, key = f.item_key
        assert column in f.sources
        other = [c for c in f.sources if c != column]
        fn = f.ids if hasattr(f, "ids") else f.fn
        for value in _CONTEXTS[other[0]]:
            def call(item, value=value):
                return fn(*(item if c == column else value for c in f.sources))

            by_key: dict = {}
            for item in _CATEGORIES:
                by_key.setdefault(key(item), []).append(call(item))
                if getattr(f, "matches", None) is not None:
                    assert call(item) == (1.0 if key(item) in f.matches(value) else 0.0), (f.name, value, item)
            for k, outs in by_key.items():
                assert all(o == outs[0] for o in outs), (f.name, value, k, outs)


def test_dense_features_read_only_their_declared_sources():
    # the catalog path decides from ``sources`` whether a feature is item-only, context-only
    # or per candidate; a feature reading an undeclared column would be computed wrongly there
    from models._schema import DENSE_FEATURES, DENSE_SPECS, DenseInputs

    class Recording(DenseInputs):
        def __call__(self, name):
            read.add(name)
            return super().__call__(name)

    rng = np.random.default_rng(3)
    assert [f.name for f in DENSE_SPECS] == list(DENSE_FEATURES)
    for spec in DENSE_SPECS:
        read: set = set()
        cols = {c: rng.uniform(-1, 50, 8) for c in spec.sources}
        spec.fn(Recording(cols, 8, 0.02, 0.05))
        assert read and read <= set(spec.sources), (spec.name, read)
        if spec.form is not None:
            assert spec.form[0] in ("log1p", "ctr") and set(spec.form[1:-2 if spec.form[0] == "ctr" else -1]) <= read
