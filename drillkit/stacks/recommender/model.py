"""The two-tower retrieval model, its training run, and the payload of one model version.

A user tower and an item tower map their inputs to L2-normalised vectors of ``spec.dim``
numbers; a user's recommendations are the items whose vectors have the largest inner product
with the user's vector, found in a :class:`~drillkit.stacks.recommender.index.RetrievalIndex`,
minus the items the user already interacted with in training.

* User tower: the mean item-id embedding of the user's training history, plus a (slowly
  learned) user-id embedding, plus a projection of the user's category mix (share of history
  per category).
* Item tower: an item-id embedding plus a category embedding plus a price-bucket embedding.

Sums of embeddings rather than MLPs on purpose: the MLP variant learned slower and generalised
worse within the CPU time budget (about half the recall at the default size).

Training uses in-batch sampled softmax with a temperature and a logQ correction (so popular
items are not favoured merely for being frequent negatives), and leave-one-out user features:
the target item is taken out of the user's history features, otherwise the model would learn
to find the item in its own input rather than to predict it.

:func:`train_versions` trains one run and snapshots it as successive model versions;
:meth:`TrainedVersion.write` writes a version's payload files. The ranking and recall helpers
here are the single implementation both offline evaluation and serving
(:mod:`~drillkit.stacks.recommender.runtime`) use, so offline and online recall agree.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import safetensors.numpy
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from drillkit import safejson
from drillkit.errors import InputError
from drillkit.stacks.recommender.data import CatalogSpec, Dataset, generate, popular_items
from drillkit.stacks.recommender.index import (
    RetrievalIndex,
    get_threads,
    select_device,
    set_threads,
)

__all__ = [
    "FORMAT",
    "POPULAR_FALLBACK",
    "SAMPLE_USERS",
    "ModelConfig",
    "Progress",
    "TrainedVersion",
    "TwoTower",
    "UserInputs",
    "build_tables",
    "item_vectors_numpy",
    "popularity_ranking",
    "rank_items",
    "recall_at_k",
    "sample_recall",
    "train_versions",
    "user_vectors_numpy",
]

#: Identifies the payload layout in the files' safetensors metadata.
FORMAT = "drillkit-two-tower/1"
#: Size of the load-time sanity sample (users drawn once per catalog, stored in the tables).
SAMPLE_USERS = 200
#: Entries in ``popular.json``, the gateway's fallback list.
POPULAR_FALLBACK = 200
# Popular items kept in the tables: enough to answer a cold-start request for the largest k.
_POPULAR_TABLE = 1000
_PRICE_BUCKETS = 16
_RECALL_K = 10

# Training hyperparameters, tuned so the default catalog trains in well under a minute on two
# CPU cores and clearly beats the popularity baseline.
_EPOCHS = 4
_BATCH = 1024
# Small catalogs get smaller batches and more epochs, so every run takes at least this many
# optimizer steps; the default catalog needs no more than its four epochs.
_MIN_STEPS = 400
_MAX_EPOCHS = 50
_LEARNING_RATE = 0.03
# The user-id embedding learns 20x slower than the rest: at full speed it memorises each
# user's training items (which serving filters out anyway) and recall on held-out items drops.
_USER_ID_LR_SCALE = 0.05
_TEMPERATURE = 0.1
_EVAL_BATCH = 4096

Progress = Callable[[str, float], None]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`TwoTower` besides its weights."""

    n_users: int
    n_items: int
    n_categories: int
    n_price_buckets: int
    dim: int
    history_len: int
    temperature: float

    def to_json(self) -> str:
        """Serialise for the tables file's metadata."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Inverse of :meth:`to_json`."""
        values = safejson.loads(text)
        return cls(**values)


@dataclass(frozen=True)
class UserInputs:
    """The user tower's inputs for every known user, as tensors on one device.

    ``history`` is each user's training items padded with ``n_items`` (the padding row of the
    history embedding) to ``history_len`` columns; ``category_counts`` counts those items per
    category.
    """

    history: torch.Tensor  # [users, history_len] int64
    history_len: torch.Tensor  # [users] float32
    category_counts: torch.Tensor  # [users, categories] float32

    @classmethod
    def from_tables(
        cls, tables: dict[str, npt.NDArray[Any]], config: ModelConfig, device: str
    ) -> UserInputs:
        """Build the inputs from the CSR history and counts stored in ``tables``."""
        indptr = tables["seen_indptr"]
        items = tables["seen_items"]
        lengths = np.diff(indptr)
        padded = np.full((config.n_users, config.history_len), config.n_items, dtype=np.int64)
        column = np.arange(items.size) - np.repeat(indptr[:-1], lengths)
        padded[np.repeat(np.arange(config.n_users), lengths), column] = items
        return cls(
            history=torch.from_numpy(padded).to(device),
            history_len=torch.from_numpy(lengths.astype(np.float32)).to(device),
            category_counts=torch.from_numpy(tables["user_category_counts"]).to(device),
        )


class TwoTower(nn.Module):
    """User and item towers ending in L2-normalised ``config.dim`` vectors.

    The history feature reuses the item tower's id embeddings, so every interaction trains
    the same table from both sides.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        # Row n_items is the history padding; it stays zero.
        self.item_id = nn.Embedding(config.n_items + 1, dim, padding_idx=config.n_items)
        self.item_category = nn.Embedding(config.n_categories, dim)
        self.item_price = nn.Embedding(config.n_price_buckets, dim)
        self.user_id = nn.Embedding(config.n_users, dim)
        self.category_mix = nn.Linear(config.n_categories, dim, bias=False)
        nn.init.normal_(self.item_id.weight, std=0.1)
        for small in (self.item_category, self.item_price, self.user_id, self.category_mix):
            nn.init.normal_(small.weight, std=0.01)
        with torch.no_grad():
            self.item_id.weight[config.n_items].zero_()

    def user_vectors(self, users: torch.Tensor, inputs: UserInputs) -> torch.Tensor:
        """User vectors [len(users), dim] for the user ids ``users``."""
        return self._user_vectors(users, inputs, None, None)

    def item_vectors(
        self, items: torch.Tensor, category: torch.Tensor, price_bucket: torch.Tensor
    ) -> torch.Tensor:
        """Item vectors [len(items), dim]; ``category`` and ``price_bucket`` are per item."""
        return self._item_vectors(self.item_id(items), category, price_bucket)

    def forward(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        inputs: UserInputs,
        item_category: torch.Tensor,
        item_price_bucket: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass for (user, item) pairs: leave-one-out user vectors, item vectors."""
        category = item_category[items]
        # One lookup serves both towers: the item's own vector and its leave-one-out share.
        item_embedding = self.item_id(items)
        user = self._user_vectors(users, inputs, item_embedding, category)
        item = self._item_vectors(item_embedding, category, item_price_bucket[items])
        return user, item

    def _user_vectors(
        self,
        users: torch.Tensor,
        inputs: UserInputs,
        leave_out: torch.Tensor | None,
        leave_out_category: torch.Tensor | None,
    ) -> torch.Tensor:
        # embedding_bag sums the padded history without materialising [users, len, dim].
        history_sum = F.embedding_bag(
            inputs.history[users],
            self.item_id.weight,
            mode="sum",
            padding_idx=self.config.n_items,
        )
        length = inputs.history_len[users]
        counts = inputs.category_counts[users]
        if leave_out is not None and leave_out_category is not None:
            history_sum = history_sum - leave_out
            counts = counts - F.one_hot(leave_out_category, self.config.n_categories).to(counts)
            length = length - 1.0
        denominator = length.clamp(min=1.0).unsqueeze(1)
        vector = (
            history_sum / denominator
            + self.user_id(users)
            + self.category_mix(counts / denominator)
        )
        return F.normalize(vector, dim=1)

    def _item_vectors(
        self, item_embedding: torch.Tensor, category: torch.Tensor, price_bucket: torch.Tensor
    ) -> torch.Tensor:
        vector = item_embedding + self.item_category(category) + self.item_price(price_bucket)
        return F.normalize(vector, dim=1)


def rank_items(
    index: RetrievalIndex,
    user_vectors: FloatArray,
    users: IntArray,
    seen_indptr: IntArray,
    seen_items: IntArray,
    k: int,
) -> tuple[FloatArray, IntArray]:
    """Top ``k`` items per user by inner product, excluding the user's training items.

    This is the one ranking procedure: offline recall, the load-time sanity check and the
    served recommendations all go through it. Rows with fewer than ``k`` results (tiny
    catalogs) are padded with id -1.
    """
    seen_count = seen_indptr[users + 1] - seen_indptr[users]
    wanted = k + int(seen_count.max(initial=0))
    scores, ids = index.search(user_vectors, wanted)
    return _filter_seen(scores, ids, users, seen_indptr, seen_items, k)


def popularity_ranking(
    popular_ids: IntArray,
    popular_scores: FloatArray,
    users: IntArray,
    seen_indptr: IntArray,
    seen_items: IntArray,
    k: int,
) -> tuple[FloatArray, IntArray]:
    """The popularity baseline, filtered exactly like :func:`rank_items`."""
    seen_count = seen_indptr[users + 1] - seen_indptr[users]
    wanted = k + int(seen_count.max(initial=0))
    ids = np.broadcast_to(popular_ids[:wanted], (users.size, min(wanted, popular_ids.size)))
    scores = np.broadcast_to(popular_scores[: ids.shape[1]], ids.shape)
    return _filter_seen(scores, ids, users, seen_indptr, seen_items, k)


def _filter_seen(
    scores: npt.NDArray[np.float32],
    ids: IntArray,
    users: IntArray,
    seen_indptr: IntArray,
    seen_items: IntArray,
    k: int,
) -> tuple[FloatArray, IntArray]:
    # Each row's seen items padded to a common width; one broadcast comparison then marks
    # the seen candidates of every row. Cheap at serving size (one user, a few dozen items).
    starts = seen_indptr[users]
    lengths = seen_indptr[users + 1] - starts
    drop = ids < 0
    width = int(lengths.max(initial=0))
    if width:
        columns = np.arange(width)
        inside = columns[None, :] < lengths[:, None]
        positions = np.where(inside, starts[:, None] + columns[None, :], 0)
        seen = np.where(inside, seen_items[positions], -1)
        drop |= (ids[:, :, None] == seen[:, None, :]).any(axis=2)
    # Stable sort on the drop flag keeps the survivors in score order.
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    kept_ids = np.take_along_axis(ids, order, axis=1)
    kept_drop = np.take_along_axis(drop, order, axis=1)
    kept_scores = np.take_along_axis(np.asarray(scores, dtype=np.float32), order, axis=1)
    kept_ids = np.where(kept_drop, -1, kept_ids)
    kept_scores = np.where(kept_drop, np.float32(-np.inf), kept_scores)
    if kept_ids.shape[1] < k:
        pad = k - kept_ids.shape[1]
        kept_ids = np.pad(kept_ids, ((0, 0), (0, pad)), constant_values=-1)
        kept_scores = np.pad(kept_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return kept_scores.astype(np.float32), kept_ids.astype(np.int64)


def recall_at_k(ranked: IntArray, golden: IntArray) -> float:
    """Mean over users of |top-k ∩ golden| / |golden|; ``ranked`` is [users, k]."""
    if ranked.shape[0] == 0:
        return 0.0
    hits = (ranked[:, :, None] == golden[:, None, :]).any(axis=1).sum(axis=1)
    return float(np.mean(hits / golden.shape[1]))


def user_vectors_numpy(
    model: TwoTower, inputs: UserInputs, users: IntArray, *, batch: int = _EVAL_BATCH
) -> FloatArray:
    """User vectors for ``users`` as a float32 numpy matrix, in evaluation mode."""
    device = inputs.history.device
    parts: list[FloatArray] = []
    with torch.inference_mode():
        for start in range(0, users.size, batch):
            ids = torch.from_numpy(users[start : start + batch]).to(device)
            parts.append(model.user_vectors(ids, inputs).float().cpu().numpy())
    if not parts:
        return np.zeros((0, model.config.dim), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def item_vectors_numpy(
    model: TwoTower, tables: dict[str, npt.NDArray[Any]], device: str
) -> FloatArray:
    """Every item's vector, [n_items, dim] float32, in item-id order."""
    n_items = model.config.n_items
    category = torch.from_numpy(tables["item_category"]).to(device)
    bucket = torch.from_numpy(tables["item_price_bucket"]).to(device)
    parts: list[FloatArray] = []
    with torch.inference_mode():
        for start in range(0, n_items, _EVAL_BATCH):
            ids = torch.arange(start, min(start + _EVAL_BATCH, n_items), device=device)
            parts.append(model.item_vectors(ids, category[ids], bucket[ids]).float().cpu().numpy())
    return np.concatenate(parts).astype(np.float32, copy=False)


def sample_recall(
    model: TwoTower,
    inputs: UserInputs,
    index: RetrievalIndex,
    tables: dict[str, npt.NDArray[Any]],
) -> tuple[float, bool]:
    """Recall@10 on the stored sanity sample, and whether its user vectors are finite.

    Training (``metrics["sample_recall_at_10"]``) and the load-time sanity check both call
    this, so their figures agree exactly for the same weights, index and device.
    """
    users = tables["sample_users"]
    vectors = user_vectors_numpy(model, inputs, users, batch=max(1, users.size))
    finite = bool(np.isfinite(vectors).all())
    _, ranked = rank_items(
        index, vectors, users, tables["seen_indptr"], tables["seen_items"], _RECALL_K
    )
    return recall_at_k(ranked, tables["golden_items"][users]), finite


@dataclass
class TrainedVersion:
    """One snapshot of a training run: a model version ready to be written to the store.

    ``metrics`` holds ``recall_at_10`` (full golden set), ``popularity_recall_at_10`` (the
    popularity baseline, same golden set and seen-item filtering), ``sample_recall_at_10``
    (the sanity sample, reproduced by
    :meth:`~drillkit.stacks.recommender.runtime.LoadedModel.sanity_check`), ``train_seconds``
    (training time up to this snapshot) and ``epochs``. ``info`` describes the catalog and
    where the model ran. The remaining fields are the payload :meth:`write` stores.
    """

    label: str
    metrics: dict[str, float]
    info: dict[str, object]
    config: ModelConfig = field(repr=False)
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    tables: dict[str, npt.NDArray[Any]] = field(repr=False)
    index: RetrievalIndex = field(repr=False)
    popular: list[tuple[int, float]] = field(repr=False)

    #: The payload files :meth:`write` creates, in the order it returns them.
    FILES = ("weights.safetensors", "tables.safetensors", "index.faiss", "popular.json")

    def write(self, directory: Path) -> list[str]:
        """Write this version's payload files into the existing ``directory``.

        Returns the file names (see :attr:`FILES`). Weights and tables are safetensors (no
        pickle anywhere); the tables' metadata carries the model config so the model can be
        rebuilt from these files alone.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise InputError(f"{directory}: not an existing directory")
        metadata = {"format": FORMAT, "label": self.label}
        weights = {name: tensor.contiguous() for name, tensor in self.state_dict.items()}
        safetensors.torch.save_file(weights, str(directory / "weights.safetensors"), metadata)
        table_meta = {
            **metadata,
            "config": self.config.to_json(),
            "info": json.dumps(self.info, sort_keys=True),
        }
        safetensors.numpy.save_file(self.tables, str(directory / "tables.safetensors"), table_meta)
        self.index.save(directory / "index.faiss")
        fallback = [
            {"item_id": item, "score": score} for item, score in self.popular[:POPULAR_FALLBACK]
        ]
        (directory / "popular.json").write_text(json.dumps(fallback) + "\n")
        return list(self.FILES)


def build_tables(data: Dataset, *, sample_seed: int) -> dict[str, npt.NDArray[Any]]:
    """The numpy tables serving needs besides the weights (see :meth:`TrainedVersion.write`)."""
    n_users, n_cats = data.n_users, data.n_categories
    counts = np.zeros((n_users, n_cats), dtype=np.float32)
    np.add.at(counts, (data.train_users, data.item_category[data.train_items]), 1.0)
    # Quantile buckets make price useful whatever the currency scale of a category.
    edges = np.quantile(np.log(data.item_price), np.linspace(0, 1, _PRICE_BUCKETS + 1)[1:-1])
    price_bucket = np.searchsorted(edges, np.log(data.item_price)).astype(np.int64)
    rng = np.random.default_rng(sample_seed)
    sample = np.sort(rng.choice(n_users, size=min(SAMPLE_USERS, n_users), replace=False))
    popular = popular_items(data, min(_POPULAR_TABLE, data.n_items))
    return {
        "seen_indptr": data.train_indptr.astype(np.int64),
        "seen_items": data.train_items.astype(np.int64),
        "user_category_counts": counts,
        "item_category": data.item_category.astype(np.int64),
        "item_price": data.item_price.astype(np.float32),
        "item_price_bucket": price_bucket,
        "golden_users": np.arange(n_users, dtype=np.int64),
        "golden_items": data.golden_items.astype(np.int64),
        "sample_users": sample.astype(np.int64),
        "popular_ids": np.array([item for item, _ in popular], dtype=np.int64),
        "popular_scores": np.array([score for _, score in popular], dtype=np.float32),
    }


def train_versions(
    spec: CatalogSpec,
    *,
    device: str = "auto",
    index_kind: str = "flat",
    versions: int = 2,
    progress: Progress | None = None,
) -> list[TrainedVersion]:
    """Generate ``spec``'s data, train one two-tower run and return ``versions`` snapshots.

    The snapshots are taken after the last ``versions`` epochs, oldest first; they stand for
    successive releases of the same model. Each is evaluated on the full golden set and on
    the sanity sample with its own index. ``progress(message, fraction)`` is called as the
    run advances. ``device="auto"`` trains on CUDA when torch sees a GPU.
    """
    if isinstance(versions, bool) or not isinstance(versions, int) or versions < 1:
        raise InputError(f"versions: expected a positive integer, got {versions!r}")
    if index_kind not in ("flat", "ivf"):
        raise InputError(f"index kind: expected 'flat' or 'ivf', got {index_kind!r}")
    device = select_device(device)
    report = progress or (lambda message, fraction: None)
    spec = spec.resolved()

    with _threads(device):
        report("generating catalog", 0.0)
        data = generate(spec)
        tables = build_tables(data, sample_seed=spec.seed + 1)
        lengths = np.diff(data.train_indptr)
        config = ModelConfig(
            n_users=data.n_users,
            n_items=data.n_items,
            n_categories=data.n_categories,
            n_price_buckets=_PRICE_BUCKETS,
            dim=spec.dim,
            history_len=max(1, int(lengths.max(initial=1))),
            temperature=_TEMPERATURE,
        )
        inputs = UserInputs.from_tables(tables, config, device)
        info: dict[str, object] = {
            "items": data.n_items,
            "users": data.n_users,
            "dim": spec.dim,
            "categories": data.n_categories,
            "seed": spec.seed,
            "catalog_key": spec.key(),
            "data_digest": data.digest(),
            "index_kind": index_kind,
            "device": device,
            "torch_version": str(torch.__version__),
        }
        return list(
            _train(data, tables, config, inputs, info, device, index_kind, versions, report)
        )


def _train(
    data: Dataset,
    tables: dict[str, npt.NDArray[Any]],
    config: ModelConfig,
    inputs: UserInputs,
    info: dict[str, object],
    device: str,
    index_kind: str,
    versions: int,
    report: Progress,
) -> Iterator[TrainedVersion]:
    n_examples = int(data.train_items.shape[0])
    batch_size = int(np.clip(n_examples // 64, 128, _BATCH))
    steps = max(1, -(-n_examples // batch_size))
    epochs = int(np.clip(-(-_MIN_STEPS // steps), _EPOCHS, _MAX_EPOCHS))
    epochs = max(epochs, versions)
    with torch.random.fork_rng(devices=[]):
        # Seeded, and isolated from the caller's global RNG state.
        torch.manual_seed(data.spec.seed)
        model = TwoTower(config).to(device)
        generator = torch.Generator().manual_seed(data.spec.seed)
    optimizer = _optimizer(model)

    users = torch.from_numpy(data.train_users).to(device)
    items = torch.from_numpy(data.train_items).to(device)
    item_category = torch.from_numpy(tables["item_category"]).to(device)
    item_bucket = torch.from_numpy(tables["item_price_bucket"]).to(device)
    frequency = np.bincount(data.train_items, minlength=data.n_items).astype(np.float64)
    log_q = torch.from_numpy(np.log(np.maximum(frequency, 1.0) / frequency.sum())).float()
    log_q = log_q.to(device)
    popularity = _popularity_recall(tables)
    popular = popular_items(data, min(_POPULAR_TABLE, data.n_items))
    train_seconds = 0.0

    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n_examples, generator=generator).to(device)
        # Summed on the device: a float() per step would stall a GPU every step.
        total_loss = torch.zeros((), device=device)
        for step in range(steps):
            batch = order[step * batch_size : (step + 1) * batch_size]
            batch_items = items[batch]
            user_vec, item_vec = model(
                users[batch], batch_items, inputs, item_category, item_bucket
            )
            logits = user_vec @ item_vec.T / config.temperature - log_q[batch_items][None, :]
            # The same item twice in a batch is not a negative for itself.
            same = batch_items[:, None] == batch_items[None, :]
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
            labels = torch.arange(batch.shape[0], device=device)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total_loss += loss.detach()
            if step % 50 == 0 and step:
                done = (epoch - 1 + step / steps) / epochs
                report(
                    f"epoch {epoch}/{epochs}, loss {float(loss.detach()):.3f}", 0.05 + 0.9 * done
                )
        train_seconds += time.perf_counter() - started
        if epoch <= epochs - versions:
            continue
        report(f"evaluating epoch {epoch}", 0.05 + 0.9 * epoch / epochs)
        model.eval()
        yield _snapshot(
            model,
            tables,
            inputs,
            info,
            device,
            index_kind,
            epoch=epoch,
            loss=float(total_loss) / steps,
            train_seconds=train_seconds,
            popularity=popularity,
            popular=popular,
        )
    report("done", 1.0)


def _optimizer(model: TwoTower) -> torch.optim.Optimizer:
    def groups() -> list[dict[str, Any]]:
        # Fresh dicts each time: the optimizer writes its defaults into them.
        others = [p for name, p in model.named_parameters() if name != "user_id.weight"]
        return [
            {"params": others},
            {"params": [model.user_id.weight], "lr": _LEARNING_RATE * _USER_ID_LR_SCALE},
        ]

    try:
        # The fused kernel halves the optimizer step on CPU (torch >= 2.4).
        return torch.optim.Adam(groups(), lr=_LEARNING_RATE, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(groups(), lr=_LEARNING_RATE)


def _snapshot(
    model: TwoTower,
    tables: dict[str, npt.NDArray[Any]],
    inputs: UserInputs,
    info: dict[str, object],
    device: str,
    index_kind: str,
    *,
    epoch: int,
    loss: float,
    train_seconds: float,
    popularity: float,
    popular: list[tuple[int, float]],
) -> TrainedVersion:
    vectors = item_vectors_numpy(model, tables, device)
    index = RetrievalIndex.build(vectors, kind=index_kind, device=device)
    users = tables["golden_users"]
    user_vec = user_vectors_numpy(model, inputs, users)
    _, ranked = rank_items(
        index, user_vec, users, tables["seen_indptr"], tables["seen_items"], _RECALL_K
    )
    recall = recall_at_k(ranked, tables["golden_items"][users])
    sample, _ = sample_recall(model, inputs, index, tables)
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    return TrainedVersion(
        label=f"epoch-{epoch}",
        metrics={
            "recall_at_10": recall,
            "popularity_recall_at_10": popularity,
            "sample_recall_at_10": sample,
            "train_seconds": round(train_seconds, 3),
            "epochs": float(epoch),
            "train_loss": loss,
        },
        info={**info, "index_backend": index.backend},
        config=model.config,
        state_dict=state,
        tables=tables,
        index=index,
        popular=popular,
    )


def _popularity_recall(tables: dict[str, npt.NDArray[Any]]) -> float:
    users = tables["golden_users"]
    _, ranked = popularity_ranking(
        tables["popular_ids"],
        tables["popular_scores"],
        users,
        tables["seen_indptr"],
        tables["seen_items"],
        _RECALL_K,
    )
    return recall_at_k(ranked, tables["golden_items"][users])


class _threads:
    """Thread counts for a CPU run (torch and faiss); restores the caller's settings after.

    One core is left to everything else: a build runs beside a drill harness, load
    generators and replicas, and OpenMP worker threads that find one of "their" cores busy
    spin at every barrier; on two cores that made training ten times slower, not twice.
    """

    def __init__(self, device: str) -> None:
        self._device = device
        self._saved = (torch.get_num_threads(), get_threads())

    def __enter__(self) -> None:
        if self._device == "cpu":
            threads = max(1, _usable_cores() - 1)
            torch.set_num_threads(threads)
            set_threads(threads)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._saved[0])
        set_threads(self._saved[1])


def _usable_cores() -> int:
    # cpu_count() reports the host's cores; a container or taskset may allow fewer.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
