"""The TorchRec ranker's pooling: SUM tables divided by the bag sizes equal MEAN pooling."""

from __future__ import annotations

import numpy as np
import torch  # a pinned dependency: its absence is an install failure (make install), never a skip

KEYS = ["a", "b", "c"]


def _small_ranker_and_batch(seed: int, lengths=None, n: int = 5):
    """A 3-table eval ranker (seeded) and a random batch for it: lengths per table (random
    0-3 ids per row when not given), dense features and ids in range."""
    from models._schema import EncodedBatch
    from models._torchrec import RankerConfig, build_ranker

    cfg = RankerConfig(sparse=tuple(KEYS), num_embeddings={"a": 50, "b": 7, "c": 1000}, num_dense=3)
    torch.manual_seed(0)
    ranker = build_ranker(cfg, torch.device("cpu")).eval()
    rng = np.random.default_rng(seed)
    lengths = lengths or {k: rng.integers(0, 4, n).astype(np.int32) for k in KEYS}
    n = len(next(iter(lengths.values())))
    enc = EncodedBatch(dense=rng.normal(size=(n, 3)).astype(np.float32), lengths=lengths,
                       values={k: rng.integers(0, cfg.num_embeddings[k], int(v.sum())).astype(np.int64)
                               for k, v in lengths.items()})
    return cfg, ranker, enc, rng


def test_sum_pooling_divided_by_bag_size_is_mean_pooling():
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

    from models._torchrec import RankerConfig, build_ranker

    keys = ["a", "b", "c"]
    cfg = RankerConfig(sparse=tuple(keys), num_embeddings={"a": 50, "b": 7, "c": 1000}, num_dense=3)
    torch.manual_seed(0)
    ranker = build_ranker(cfg, torch.device("cpu"))
    mean = EmbeddingBagCollection(tables=[
        EmbeddingBagConfig(name=f"t_{k}", embedding_dim=cfg.embedding_dim, num_embeddings=cfg.num_embeddings[k],
                           feature_names=[k], pooling=PoolingType.MEAN) for k in keys])
    mean.load_state_dict(ranker.ebc.state_dict())
    # batch of 4; empty bags (length 0) must stay 0 as with MEAN
    lengths = {"a": [1, 0, 3, 2], "b": [1, 1, 1, 0], "c": [0, 0, 5, 1]}
    gen = torch.Generator().manual_seed(1)
    values = {k: torch.randint(0, cfg.num_embeddings[k], (sum(v),), generator=gen) for k, v in lengths.items()}

    def kjt(order):
        return KeyedJaggedTensor(keys=order, values=torch.cat([values[k] for k in order]),
                                 lengths=torch.tensor([n for k in order for n in lengths[k]], dtype=torch.int32))

    with torch.no_grad():
        want = mean(kjt(keys)).to_dict()
        for order in (keys, ["c", "a", "b"]):   # any key order of the input
            got = ranker.mean(ranker.ebc(kjt(order)), kjt(order))
            for i, k in enumerate(keys):
                torch.testing.assert_close(got[:, i], want[k], rtol=1e-6, atol=1e-7)
    assert torch.equal(got[1, 0], torch.zeros(cfg.embedding_dim))


def test_serving_prediction_equals_the_modules_forward():
    # predict_ranker reads the tables with one embedding_bag each (no KeyedJaggedTensor): same numbers
    from models._torchrec import kjt_from_encoded, predict_ranker, stack_tables

    keys = KEYS
    lengths = {"a": np.array([1, 0, 3, 2, 1], dtype=np.int32), "b": np.array([1, 1, 1, 0, 0], dtype=np.int32),
               "c": np.array([0, 0, 5, 1, 2], dtype=np.int32)}
    cfg, ranker, enc, _ = _small_ranker_and_batch(2, lengths)
    with torch.no_grad():
        dense, kjt = kjt_from_encoded(enc, keys)
        want = torch.sigmoid(ranker(dense, kjt)).numpy()
    np.testing.assert_allclose(predict_ranker(ranker, enc, keys), want, rtol=1e-5, atol=1e-6)
    tables = stack_tables(ranker, keys)            # one lookup over every table, the module's tables its views
    np.testing.assert_allclose(predict_ranker(ranker, enc, keys, tables), want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(ranker(dense, kjt)), torch.from_numpy(want))
    assert ranker.ebc.embedding_bags["t_b"].weight.data_ptr() == tables[0][50:].data_ptr()


def test_a_loaded_rankers_prepared_head_and_pctr_equal_the_modules():
    # serving's TorchRecPredictor runs the head as plain calls (ranker_head) and calibrates
    # only the pCTR head for predict_ctr: the same numbers, bit for bit
    from models._predictors import TorchRecPredictor
    from models._torchrec import ranker_head, stack_tables

    keys = KEYS
    n = 37
    cfg, ranker, enc, rng = _small_ranker_and_batch(4, n=n)
    head = ranker_head(ranker)
    with torch.inference_mode():
        dense = torch.from_numpy(enc.dense)
        pooled = torch.from_numpy(rng.normal(size=(n, len(keys), cfg.embedding_dim)).astype(np.float32))
        assert torch.equal(head(dense, pooled), ranker.head(dense, pooled))
    plain = TorchRecPredictor(ranker, cfg, platt=[[1.3, -0.2], [0.8, 0.1]])
    want = plain.predict(enc)
    loaded = TorchRecPredictor(ranker, cfg, platt=[[1.3, -0.2], [0.8, 0.1]])
    loaded.tables, loaded.head = stack_tables(ranker, keys), head
    np.testing.assert_array_equal(loaded.predict(enc), want)
    np.testing.assert_array_equal(loaded.predict_ctr(enc), want[:, 0])
    raw = TorchRecPredictor(ranker, cfg)
    np.testing.assert_array_equal(raw.predict_ctr(enc), raw.predict(enc)[:, 0])
