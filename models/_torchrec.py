"""The TorchRec ranker (DLRM style, two heads) and its sharded training.

Shape: an ``EmbeddingBagCollection`` (one table per sparse feature, mean pooling) and a
dense MLP projecting the dense features to the embedding size; DLRM's pairwise dot
interactions between all of them; an over-arch MLP ending in two logits, pCTR and pCVR
(pCVR = P(conversion | click), trained on clicked rows only).

Training runs ``world_size`` processes (``torch.multiprocessing`` spawn on 127.0.0.1, the
way torchrec's MultiProcessTestBase does; gloo on CPU, nccl when every rank has a GPU).
The model is wrapped in ``DistributedModelParallel`` with a sharding plan chosen by
``EmbeddingShardingPlanner``; embedding tables are updated by the fused row-wise Adagrad
of FBGEMM's TBE kernels (``fused_params``), dense weights by Adam through DDP.
``TrainPipelineSparseDist`` overlaps the next batch's input all-to-all with compute.
Every epoch writes a ``torch.distributed.checkpoint`` (sharded); the final checkpoint is
loaded into a plain single-process ``Ranker`` (tables whole) that serving runs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models._schema import DENSE_FEATURES, SPARSE_FEATURES, EncodedBatch
from models.errors import TrainingError

log = logging.getLogger(__name__)


@dataclass
class RankerConfig:
    """Model shape and training hyper-parameters of the TorchRec ranker."""

    sparse: tuple[str, ...] = tuple(f.name for f in SPARSE_FEATURES)
    """Sparse features, one embedding table each (sizes from ``models._schema``)."""
    num_embeddings: dict[str, int] = field(default_factory=lambda: {f.name: f.num_embeddings for f in SPARSE_FEATURES})
    num_dense: int = len(DENSE_FEATURES)
    embedding_dim: int = 16
    dense_arch: tuple[int, ...] = (64,)
    """Hidden layers of the dense MLP (its output is ``embedding_dim``)."""
    over_arch: tuple[int, ...] = (128, 64)
    """Hidden layers after the interaction, before the two logits."""
    epochs: int = 1
    """One pass: a second epoch over the same impressions memorises the id tables (AUC drops,
    calibration goes to ~1.3 on the default world), the usual one-epoch effect of CTR models."""
    batch_size: int = 1024
    """Global batch: split evenly over the ranks."""
    embedding_lr: float = 0.02
    dense_lr: float = 2e-3
    cvr_weight: float = 1.0
    seed: int = 0
    shuffle: bool = True
    """Shuffle the batch order. Time order (ending on the newest traffic, as an online
    trainer would) measured worse on the default world: AUC 0.742 vs 0.748-0.751."""
    pipeline: bool = True
    """Use ``TrainPipelineSparseDist`` (overlaps input distribution with compute)."""
    init_rows: int = 4096
    """Rows are initialised uniform(±sqrt(1 / min(rows, init_rows))): TorchRec's default
    ±sqrt(1 / rows) would tie the starting scale to the hash capacity (±0.001 for the 1M
    item rows). A design choice, not a measured win: on a 40k-request log both gave the
    same test AUC within noise (0.7362 vs 0.7371)."""
    data_parallel_max_rows: int = 0
    """Tables with more rows are never sharded data-parallel: a replicated table gets a
    dense gradient all-reduce and a dense optimizer step over every row each step (the
    planner picked that for every table on one rank: 3.4k samples/s with the 3.3M-row
    default tables). Larger tables go table-/row-wise with FBGEMM's fused sparse update.
    0 (the default since 2026-12-04): no table is replicated, so every table is updated by
    the same fused row-wise Adagrad (the tiny ones were on the dense Adam before) and a
    step needs no dense embedding lookup and one all-reduce instead of two."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sparse"] = list(self.sparse)
        d["dense_arch"], d["over_arch"] = list(self.dense_arch), list(self.over_arch)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RankerConfig":
        d = dict(d)
        d["sparse"] = tuple(d["sparse"])
        d["dense_arch"], d["over_arch"] = tuple(d["dense_arch"]), tuple(d["over_arch"])
        return cls(**d)


def _mlp(sizes: list[int], final_relu: bool):
    import torch.nn as nn

    layers: list = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if final_relu or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _quiet_fbgemm() -> None:
    """Ignore the DeprecationWarnings fbgemm_gpu 1.9 raises while torchrec imports it (two SSD
    optimizer lookups absent from the CPU build, a module it imports itself): a dozen lines
    in every user's output with nothing to act on. Called where a process first uses torchrec
    (``build_ranker``, ``kjt_from_encoded``); training workers silence all warnings themselves."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"fbgemm_gpu(\.|$)")


def build_ranker(cfg: RankerConfig, device=None):
    """The ``Ranker`` module (tables on ``device``; ``"meta"`` defers allocation to DMP)."""
    _quiet_fbgemm()
    import torch
    import torch.nn as nn
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

    class BagMean(nn.Module):
        """Mean pooling from the collection's sums: ``[B, F, d]`` in ``keys`` order, each bag's sum
        divided by its number of ids (an empty bag stays 0, as with MEAN pooling).

        The tables pool with SUM because FBGEMM's CPU TBE kernels run MEAN through a much slower
        path (forward 4.5 vs 0.8 ms for the 22 tables at batch 1024, one thread); the gradient
        reaching the tables is the same (scaled by 1 / ids per bag). A module of its own so the
        train pipeline's tracer takes it as a leaf.
        """

        def __init__(self, keys: list[str]) -> None:
            super().__init__()
            self.keys = keys

        def forward(self, pooled, sparse: KeyedJaggedTensor) -> torch.Tensor:
            # a sharded EBC may return the features in another order (grouped by sharding type)
            by_name = pooled.to_dict()
            sums = torch.stack([by_name[n] for n in self.keys], dim=1)
            in_keys = sparse.keys()
            lengths = sparse.lengths().view(len(in_keys), -1)
            if in_keys != self.keys:
                lengths = lengths[[in_keys.index(n) for n in self.keys]]
            return sums / lengths.t().clamp(min=1).unsqueeze(-1).to(sums.dtype)

    class Ranker(nn.Module):
        """DLRM-style two-head ranker: ``forward(dense, sparse) -> logits [B, 2]`` (ctr, cvr)."""

        def __init__(self) -> None:
            super().__init__()
            d = cfg.embedding_dim
            self.ebc = EmbeddingBagCollection(
                tables=[EmbeddingBagConfig(name=f"t_{n}", embedding_dim=d, num_embeddings=cfg.num_embeddings[n],
                                           feature_names=[n], pooling=PoolingType.SUM) for n in cfg.sparse],
                device=device,
            )
            self.mean = BagMean(list(cfg.sparse))
            self.dense_arch = _mlp([cfg.num_dense, *cfg.dense_arch, d], final_relu=True)
            f = len(cfg.sparse) + 1
            # the pairs above the diagonal as flat positions of the f×f dot matrix: index_select
            # (backward index_add_) costs about half of a two-tensor gather (backward index_put_)
            tri = torch.triu_indices(f, f, offset=1)
            self.register_buffer("_pairs", tri[0] * f + tri[1], persistent=False)
            n_inter = f * (f - 1) // 2
            # the raw dense features also skip straight to the over-arch (no 16-d bottleneck)
            self.over_arch = _mlp([cfg.num_dense + d + n_inter, *cfg.over_arch, 2], final_relu=False)

        def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
            return self.head(dense, self.mean(self.ebc(sparse), sparse))

        def head(self, dense: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
            """Logits from the dense features and the bags' mean embeddings ``[B, F, d]`` (keys order)."""
            x = self.dense_arch(dense)
            allv = torch.cat([x.unsqueeze(1), pooled], dim=1)
            inter = torch.bmm(allv, allv.transpose(1, 2)).flatten(1).index_select(1, self._pairs)
            return self.over_arch(torch.cat([dense, x, inter], dim=1))

    return Ranker()


def ranker_loss(logits, labels, cvr_weight: float = 1.0):
    """BCE on click for every row plus BCE on conversion for clicked rows (masked)."""
    import torch.nn.functional as F

    ctr = F.binary_cross_entropy_with_logits(logits[:, 0], labels[:, 0])
    mask = labels[:, 0]
    cvr_all = F.binary_cross_entropy_with_logits(logits[:, 1], labels[:, 1], reduction="none")
    cvr = (cvr_all * mask).sum() / mask.sum().clamp(min=1.0)
    return ctr + cvr_weight * cvr


def _train_wrapper(cfg: RankerConfig, device=None):
    import torch.nn as nn

    class RankerTrain(nn.Module):
        """``forward(batch) -> (loss, (loss, logits, labels))``, the shape TrainPipeline expects."""

        def __init__(self) -> None:
            super().__init__()
            self.model = build_ranker(cfg, device)

        def forward(self, batch):
            logits = self.model(batch.dense_features, batch.sparse_features)
            loss = ranker_loss(logits, batch.labels, cfg.cvr_weight)
            return loss, (loss.detach(), logits.detach(), batch.labels)

    return RankerTrain()


# --- data ---------------------------------------------------------------------------------


class BatchSource:
    """Contiguous slices of an ``EncodedBatch`` as torchrec ``Batch``es (cheap: no copies of ids)."""

    def __init__(self, enc: EncodedBatch, labels: np.ndarray, keys: list[str]) -> None:
        self.enc, self.labels, self.keys = enc, labels.astype(np.float32), keys
        self.offsets = {k: np.concatenate([[0], np.cumsum(enc.lengths[k], dtype=np.int64)]) for k in keys}

    def __len__(self) -> int:
        return self.enc.size

    def batch(self, a: int, b: int):
        import torch
        from torchrec import KeyedJaggedTensor
        from torchrec.datasets.utils import Batch

        vals = [self.enc.values[k][self.offsets[k][a]:self.offsets[k][b]] for k in self.keys]
        lens = [self.enc.lengths[k][a:b] for k in self.keys]
        kjt = KeyedJaggedTensor(keys=self.keys, values=torch.from_numpy(np.concatenate(vals)),
                                lengths=torch.from_numpy(np.concatenate(lens).astype(np.int32)))
        return Batch(dense_features=torch.from_numpy(self.enc.dense[a:b]), sparse_features=kjt,
                     labels=torch.from_numpy(self.labels[a:b]))


def kjt_from_encoded(enc: EncodedBatch, keys: list[str]):
    """Whole ``EncodedBatch`` → (dense tensor, KeyedJaggedTensor) for inference."""
    _quiet_fbgemm()
    import torch
    from torchrec import KeyedJaggedTensor

    kjt = KeyedJaggedTensor(
        keys=keys,
        values=torch.from_numpy(np.concatenate([enc.values[k] for k in keys])),
        lengths=torch.from_numpy(np.concatenate([enc.lengths[k] for k in keys]).astype(np.int32)),
    )
    return torch.from_numpy(enc.dense), kjt


def save_encoded(path: Path, enc: EncodedBatch, labels: np.ndarray) -> None:
    arrays = {"dense": enc.dense, "labels": labels}
    for k in enc.lengths:
        arrays[f"len__{k}"] = enc.lengths[k]
        arrays[f"val__{k}"] = enc.values[k]
    np.savez(path, **arrays)


def load_encoded(path: Path) -> tuple[EncodedBatch, np.ndarray]:
    z = np.load(path)
    lengths = {n[5:]: z[n] for n in z.files if n.startswith("len__")}
    values = {n[5:]: z[n] for n in z.files if n.startswith("val__")}
    return EncodedBatch(dense=z["dense"], lengths=lengths, values=values), z["labels"]


# --- distributed training -----------------------------------------------------------------


@dataclass
class TrainJob:
    """Everything a rank needs, picklable (paths, not tensors)."""

    cfg: RankerConfig
    train_path: str
    eval_path: str
    out_dir: str
    world_size: int
    port: int
    max_steps: int | None = None
    """Stop after this many global steps per epoch (benchmarks, tests)."""
    measure_only: bool = False
    """Benchmark mode: time steps, skip checkpoints and evaluation."""
    progress: bool = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, job: TrainJob) -> None:
    import warnings

    import torch
    import torch.distributed as dist

    # A worker process is an edge: keep torchrec/fbgemm's planner chatter out of the CLI output.
    warnings.filterwarnings("ignore")
    for name in ("torchrec", "fbgemm_gpu", "root", "torch.fx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.world_size))
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= job.world_size
    backend = "nccl" if use_cuda else "gloo"
    device = torch.device(f"cuda:{rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{job.port}", rank=rank, world_size=job.world_size)
    try:
        _train_rank(rank, job, device, backend)
    finally:
        dist.destroy_process_group()


def _train_rank(rank: int, job: TrainJob, device, backend: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.types import ShardingType
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

    cfg, ws = job.cfg, job.world_size
    torch.manual_seed(cfg.seed)
    out = Path(job.out_dir)
    sharder = EmbeddingBagCollectionSharder(fused_params={
        "optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": cfg.embedding_lr, "eps": 1e-8,
    })
    module = _train_wrapper(cfg, device=torch.device("meta"))
    sparse_only = [t.value for t in ShardingType if t not in (ShardingType.DATA_PARALLEL, ShardingType.GRID_SHARD)]
    constraints = {f"t_{n}": ParameterConstraints(sharding_types=sparse_only)
                   for n in cfg.sparse if cfg.num_embeddings[n] > cfg.data_parallel_max_rows}
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=ws, compute_device=device.type,
                                                         local_world_size=ws), constraints=constraints)
    plan = planner.collective_plan(module, [sharder], dist.GroupMember.WORLD)
    model = DistributedModelParallel(module, device=device, plan=plan, sharders=[sharder])
    _init_tables(model, cfg)
    if rank == 0:
        shard_info = {k: {t: f"{p.sharding_type} on ranks {p.ranks}" for t, p in v.items()} for k, v in plan.plan.items()}
        (out / "sharding_plan.json").write_text(json.dumps(shard_info, indent=1, default=str))
    fused = set(model.fused_optimizer.params.keys())
    dense_opt = KeyedOptimizerWrapper({k: v for k, v in model.named_parameters() if k not in fused},
                                      lambda params: torch.optim.Adam(params, lr=cfg.dense_lr, fused=True))
    opt = CombinedOptimizer([model.fused_optimizer, dense_opt])

    enc, labels = load_encoded(Path(job.train_path))
    src = BatchSource(enc, labels, list(cfg.sparse))
    per_rank = cfg.batch_size // ws
    n_steps = len(src) // cfg.batch_size
    if job.max_steps:
        n_steps = min(n_steps, job.max_steps)
    if n_steps == 0:
        raise TrainingError(f"{len(src)} training rows are fewer than one batch of {cfg.batch_size}")

    def batches(epoch: int):
        rng = np.random.default_rng(cfg.seed + epoch)
        for step in (rng.permutation(n_steps) if cfg.shuffle else range(n_steps)):
            a = int(step) * cfg.batch_size + rank * per_rank
            yield src.batch(a, a + per_rank)

    timings: list[dict] = []
    bar = None
    if rank == 0 and job.progress:
        from tqdm import tqdm
        bar = tqdm(total=n_steps * cfg.epochs, desc=f"torchrec x{ws} ({backend})", unit="step", file=__import__("sys").stderr)
    pipe = None
    if cfg.pipeline:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        pipe = TrainPipelineSparseDist(model, opt, device)
    for epoch in range(cfg.epochs):
        model.train()
        it = iter(batches(epoch))
        t0, steps = time.perf_counter(), 0
        if pipe is not None:
            while True:
                try:
                    pipe.progress(it)
                except StopIteration:
                    break
                steps += 1
                if bar:
                    bar.update(1)
        else:
            for batch in it:
                batch = batch.to(device)
                opt.zero_grad()
                loss, _ = model(batch)
                loss.backward()
                opt.step()
                steps += 1
                if bar:
                    bar.update(1)
        dt = time.perf_counter() - t0
        timings.append({"epoch": epoch, "steps": steps, "seconds": dt, "samples_per_s": steps * cfg.batch_size / dt})
        if not job.measure_only:
            dcp.save({"model": model.state_dict()}, checkpoint_id=str(out / "checkpoint" / f"epoch-{epoch}"))
    if bar:
        bar.close()
    if pipe is not None:
        model = pipe.detach()
    if rank == 0:
        (out / "timings.json").write_text(json.dumps(timings))
    if job.measure_only:
        return
    # Scores of the *sharded* model on the evaluation rows (every rank runs the same rows;
    # rank 0 keeps them) so the unsharded inference model can be checked against them.
    eenc, elabels = load_encoded(Path(job.eval_path))
    esrc = BatchSource(eenc, elabels, list(cfg.sparse))
    model.eval()
    preds = []
    with torch.no_grad():
        for a in range(0, len(esrc), 4096):
            b = esrc.batch(a, min(a + 4096, len(esrc))).to(device)
            _, (_, logits, _) = model(b)
            preds.append(torch.sigmoid(logits).cpu().numpy())
    if rank == 0:
        np.save(out / "sharded_eval_scores.npy", np.concatenate(preds) if preds else np.zeros((0, 2)))


def _init_tables(model, cfg: RankerConfig) -> None:
    """Initialise every table from its own seeded generator, whatever the sharding.

    Each rank fills the rows/columns of the shards it holds from the same full-table
    draw, so 1, 2 or N ranks start from identical weights (and, with row-wise Adagrad
    being invariant to the per-rank loss scale, train alike).
    """
    import zlib

    import torch
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    with torch.no_grad():
        for name, t in model.state_dict().items():
            if ".embedding_bags." not in name:
                continue
            table = name.split(".embedding_bags.")[1].split(".")[0]
            rows = cfg.num_embeddings[table[2:]]
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + zlib.crc32(table.encode()))
            bound = (1.0 / min(rows, cfg.init_rows)) ** 0.5
            full = torch.empty(rows, cfg.embedding_dim).uniform_(-bound, bound, generator=gen)
            if isinstance(t, ShardedTensor):
                for shard in t.local_shards():
                    (r0, c0), (nr, nc) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                    shard.tensor.copy_(full[r0:r0 + nr, c0:c0 + nc])
            elif hasattr(t, "to_local"):   # DTensor
                t.copy_(torch.distributed.tensor.distribute_tensor(full, t.device_mesh, t.placements))
            else:
                t.copy_(full)


def run_distributed(job: TrainJob) -> dict:
    """Spawn ``job.world_size`` ranks and wait; raise ``TrainingError`` naming the failure."""
    import torch.multiprocessing as mp

    Path(job.out_dir).mkdir(parents=True, exist_ok=True)
    try:
        mp.spawn(_rank_main, args=(job,), nprocs=job.world_size, join=True)
    except Exception as exc:  # ProcessRaisedException carries the rank's traceback
        raise TrainingError(f"sharded training with {job.world_size} ranks failed: {exc}") from exc
    timings = json.loads((Path(job.out_dir) / "timings.json").read_text())
    return {"timings": timings}


def unshard_checkpoint(cfg: RankerConfig, checkpoint_dir: Path):
    """Load a sharded DCP checkpoint into a plain single-process ``Ranker`` (whole tables)."""
    import torch
    import torch.distributed.checkpoint as dcp

    wrapper = _train_wrapper(cfg, device=torch.device("cpu"))
    state = {"model": wrapper.state_dict()}
    dcp.load(state, checkpoint_id=str(checkpoint_dir))
    wrapper.load_state_dict(state["model"])
    ranker = wrapper.model
    ranker.eval()
    return ranker


def train_torchrec(train_enc: EncodedBatch, train_labels: np.ndarray, eval_enc: EncodedBatch,
                   eval_labels: np.ndarray, cfg: RankerConfig, work_dir: Path, world_size: int = 1,
                   max_steps: int | None = None, progress: bool = True):
    """Sharded training in ``world_size`` processes; returns (inference Ranker, info dict)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if cfg.batch_size % world_size:
        raise TrainingError(f"batch size {cfg.batch_size} does not split over {world_size} ranks; use a multiple")
    save_encoded(work_dir / "train.npz", train_enc, train_labels)
    save_encoded(work_dir / "eval.npz", eval_enc, eval_labels)
    job = TrainJob(cfg=cfg, train_path=str(work_dir / "train.npz"), eval_path=str(work_dir / "eval.npz"),
                   out_dir=str(work_dir), world_size=world_size, port=_free_port(), max_steps=max_steps,
                   progress=progress)
    t0 = time.perf_counter()
    info = run_distributed(job)
    info["wall_seconds"] = time.perf_counter() - t0
    last = work_dir / "checkpoint" / f"epoch-{cfg.epochs - 1}"
    ranker = unshard_checkpoint(cfg, last)
    info["checkpoint"] = str(last)
    plan_file = work_dir / "sharding_plan.json"
    info["sharding_plan"] = json.loads(plan_file.read_text()) if plan_file.exists() else {}
    return ranker, info


def predict_ranker(ranker, enc: EncodedBatch, keys: list[str], tables=None, head=None) -> np.ndarray:
    """Probabilities [B, 2] (pctr, pcvr) from an unsharded ranker.

    The tables are read straight from the encoded arrays rather than through a
    KeyedJaggedTensor and the collection's forward (the same sums, without ~1 ms of Python
    per call at serving's batch of ~250): with ``tables`` (``stack_tables``) in one
    ``embedding_bag`` over all of them, else one per table. ``head``: ``ranker_head(ranker)``
    of an inference ranker (else ``ranker.head``).
    """
    import torch

    head = head or ranker.head
    with torch.inference_mode():
        out = []
        for a in range(0, enc.size, 8192):
            sub = _slice(enc, a, min(a + 8192, enc.size), keys)
            pooled = _stacked_means(tables, sub, keys) if tables is not None else _bag_means(ranker, sub, keys)
            out.append(torch.sigmoid(head(torch.from_numpy(sub.dense), pooled)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.float32)


def ranker_head(ranker):
    """``ranker.head`` as plain calls of the same kernels (``F.linear``, ``torch.relu``) with
    the parameters read once: a module call costs ~5 µs of Python, and the head makes 11 of
    them (~60 µs of a ~0.9 ms predict at 250 rows). For an inference ranker whose parameters
    are not replaced afterwards; equal to ``ranker.head`` (tests/unit/models/test_models_ranker.py)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def layers(seq) -> list:
        out = []
        for layer in seq:
            if isinstance(layer, nn.Linear):
                out.append((layer.weight, layer.bias))
            elif isinstance(layer, nn.ReLU) and not layer.inplace:
                out.append(None)
            else:
                raise TypeError(f"ranker_head knows Linear and ReLU layers, not {layer!r}")
        return out

    def run(stack: list, x):
        for layer in stack:
            x = torch.relu(x) if layer is None else F.linear(x, layer[0], layer[1])
        return x

    dense_arch, over_arch, pairs = layers(ranker.dense_arch), layers(ranker.over_arch), ranker._pairs

    def head(dense, pooled):          # Ranker.head, step by step
        x = run(dense_arch, dense)
        allv = torch.cat([x.unsqueeze(1), pooled], dim=1)
        inter = torch.bmm(allv, allv.transpose(1, 2)).flatten(1).index_select(1, pairs)
        return run(over_arch, torch.cat([dense, x, inter], dim=1))

    return head


def stack_tables(ranker, keys: list[str]):
    """Every table of an inference ranker as rows of one tensor, in ``keys`` order, with each
    table's first row: the module's tables become views of it (no second copy of ~200 MB).
    For ``predict_ranker``: one lookup instead of one per table (22 here)."""
    import torch

    bags = ranker.ebc.embedding_bags
    weights = [bags[f"t_{k}"].weight.detach() for k in keys]
    stacked = torch.cat(weights)
    bases = np.zeros(len(keys), dtype=np.int64)
    np.cumsum([w.shape[0] for w in weights[:-1]], out=bases[1:])
    for k, w, base in zip(keys, weights, bases.tolist()):
        bags[f"t_{k}"].weight = torch.nn.Parameter(stacked[base:base + w.shape[0]], requires_grad=False)
    return stacked, bases


def _bag_means(ranker, enc: EncodedBatch, keys: list[str]):
    """Mean embedding of every bag, ``[B, F, d]`` in ``keys`` order (an empty bag: 0), as
    ``BagMean`` of the collection's sums gives."""
    import torch
    import torch.nn.functional as F

    bags = ranker.ebc.embedding_bags
    n = enc.size
    means = []
    for k in keys:
        lens = enc.lengths[k]
        offsets = np.zeros(n, dtype=np.int64)
        np.cumsum(lens[:-1], out=offsets[1:])
        sums = F.embedding_bag(torch.from_numpy(enc.values[k]), bags[f"t_{k}"].weight, torch.from_numpy(offsets),
                               mode="sum")
        means.append(sums / torch.from_numpy(np.maximum(lens, 1).astype(np.float32)).unsqueeze(1))
    return torch.stack(means, dim=1)


def _stacked_means(tables, enc: EncodedBatch, keys: list[str]):
    """``_bag_means`` from ``stack_tables``: the bags of every feature in one ``embedding_bag``."""
    import torch
    import torch.nn.functional as F

    stacked, bases = tables
    n = enc.size
    lens = np.concatenate([enc.lengths[k] for k in keys]).astype(np.int64)          # feature-major bags
    ids = [enc.values[k] for k in keys]
    values = np.concatenate(ids)
    values += np.repeat(bases, [len(v) for v in ids])                                 # each table's rows
    offsets = np.zeros(len(lens), dtype=np.int64)
    np.cumsum(lens[:-1], out=offsets[1:])
    sums = F.embedding_bag(torch.from_numpy(values), stacked, torch.from_numpy(offsets), mode="sum")
    means = sums / torch.from_numpy(np.maximum(lens, 1).astype(np.float32)).unsqueeze(1)
    return means.view(len(keys), n, -1).transpose(0, 1)


def _slice(enc: EncodedBatch, a: int, b: int, keys: list[str]) -> EncodedBatch:
    if a == 0 and b == enc.size:
        return enc
    lengths, values = {}, {}
    for k in keys:
        off = np.concatenate([[0], np.cumsum(enc.lengths[k], dtype=np.int64)])
        lengths[k] = enc.lengths[k][a:b]
        values[k] = enc.values[k][off[a]:off[b]]
    return EncodedBatch(dense=enc.dense[a:b], lengths=lengths, values=values)
