"""Serving one model version inside a replica process.

:meth:`LoadedModel.load` rebuilds the two-tower model from a version folder's
``weights.safetensors``, ``tables.safetensors`` and ``index.faiss``. The caller (the model
store) has already checked the manifest's digests; this module only loads, and reports a file
that does not fit together as an :class:`~drillkit.errors.ArtifactError`.

:meth:`LoadedModel.recommend` ranks with the same procedure offline evaluation used
(:func:`~drillkit.stacks.recommender.model.rank_items`), and
:meth:`LoadedModel.sanity_check` recomputes the sample recall the training run recorded, so a
model that verifies but was poisoned (NaN or random weights) is caught before it serves.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import safetensors
import safetensors.numpy
import safetensors.torch
import torch

from drillkit import safejson
from drillkit.errors import ArtifactError, MissingFeatures
from drillkit.stacks.recommender.index import RetrievalIndex, select_device, set_threads
from drillkit.stacks.recommender.model import (
    ModelConfig,
    TwoTower,
    UserInputs,
    rank_items,
    sample_recall,
)

__all__ = ["FILES", "MAX_K", "LoadedModel", "MissingFeatures", "Recommendation", "SanityResult"]

#: The files a version is loaded from.
FILES = ("weights.safetensors", "tables.safetensors", "index.faiss")

#: The largest ``k`` a recommend call may ask for.
MAX_K = 1000

_REQUIRED_TABLES = (
    "seen_indptr",
    "seen_items",
    "user_category_counts",
    "item_category",
    "item_price_bucket",
    "golden_items",
    "sample_users",
    "popular_ids",
    "popular_scores",
)


#: An optional table: users whose feature rows the version's feature join lost. Serving them
#: raises :class:`MissingFeatures` (the replica answers 500), as a server does for a user
#: whose features are not there; a version built without the table serves everyone.
UNSERVABLE_TABLE = "unservable_users"


class Accelerator(Protocol):
    """Where a replica's inference runs (:class:`drillkit.stacks.recommender.gpu.Gpu`):
    each step launches on it, and what comes back from its memory passes through it."""

    def launch(self, work_bytes: int) -> contextlib.AbstractContextManager[None]: ...

    def corrupt(self, values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class Recommendation:
    """Items for one user, best first, with their scores.

    ``cold_start`` is true when the user is unknown to the model and the items are the
    popular-items list instead of a personal ranking.
    """

    items: list[int]
    scores: list[float]
    cold_start: bool


@dataclass(frozen=True)
class SanityResult:
    """Outcome of :meth:`LoadedModel.sanity_check`.

    ``finite`` is false when any sample user vector or any indexed item vector is NaN or
    infinite; ``sample_recall_at_10`` is comparable to the version's
    ``metrics["sample_recall_at_10"]``; ``users`` is the sample size.
    """

    finite: bool
    sample_recall_at_10: float
    users: int


class LoadedModel:
    """A model version loaded for serving. Build it with :meth:`load`."""

    def __init__(
        self,
        *,
        model: TwoTower,
        inputs: UserInputs,
        tables: dict[str, npt.NDArray[Any]],
        index: RetrievalIndex,
        device: str,
        label: str,
    ) -> None:
        """Assemble from loaded parts; prefer :meth:`load`."""
        self._model = model
        self._inputs = inputs
        self._tables = tables
        self._index = index
        self._device = device
        self.label = label
        self._seen_indptr: npt.NDArray[np.int64] = tables["seen_indptr"]
        self._seen_items: npt.NDArray[np.int64] = tables["seen_items"]
        self._popular_ids = [int(item) for item in tables["popular_ids"]]
        self._popular_scores = [float(score) for score in tables["popular_scores"]]
        unservable = tables.get(UNSERVABLE_TABLE)
        self._unservable = frozenset(
            int(u) for u in (unservable.tolist() if unservable is not None else [])
        )
        #: The device every inference step launches on; None: run as is (offline use).
        self.accelerator: Accelerator | None = None
        config = model.config
        # Working memory of one user's inference: the tower's activations over the history,
        # and the index's score row over the catalog.
        self._tower_bytes = 4 * config.dim * (config.history_len + 4)
        self._search_bytes = 4 * (config.n_items + 2 * MAX_K)

    @classmethod
    def load(cls, directory: Path, *, device: str = "auto", threads: int | None = 1) -> LoadedModel:
        """Load the version in ``directory`` onto ``device`` ("auto", "cuda" or "cpu"), from
        the files as they are now (a replica loads from verified bytes instead:
        :meth:`from_files`)."""
        directory = Path(directory)
        files = {}
        for name in FILES:
            try:
                files[name] = (directory / name).read_bytes()
            except OSError as exc:
                raise ArtifactError(f"{directory}: cannot load the model: {exc}") from exc
        return cls.from_files(files, device=device, threads=threads, where=str(directory))

    @classmethod
    def from_files(
        cls,
        files: dict[str, bytes],
        *,
        device: str = "auto",
        threads: int | None = 1,
        where: str = "model",
    ) -> LoadedModel:
        """Load a version from the bytes of its files (:data:`FILES`, by name): a replica
        hands in exactly the bytes it hashed, so what serves is what was verified.

        ``threads`` sets torch's and faiss's thread count for this process: a replica answers
        one request at a time, and for a single query one thread is fastest. ``None`` leaves
        the process settings alone. Raises :class:`~drillkit.errors.ArtifactError` (naming
        ``where``, the version's folder) when the files do not fit together.
        """
        resolved = select_device(device)
        if threads is not None:
            torch.set_num_threads(threads)
            set_threads(threads)
        try:
            tables_bytes = files["tables.safetensors"]
            tables = safetensors.numpy.load(tables_bytes)
            metadata = _safetensors_metadata(tables_bytes)
            config = ModelConfig.from_json(metadata["config"])
            label = metadata.get("label", Path(where).name)
            weights = {
                name: tensor.to(resolved)
                for name, tensor in safetensors.torch.load(files["weights.safetensors"]).items()
            }
            index = RetrievalIndex.from_bytes(files["index.faiss"], resolved)
        except (
            OSError,
            KeyError,
            TypeError,
            ValueError,
            RuntimeError,
            json.JSONDecodeError,
            safetensors.SafetensorError,
        ) as exc:
            raise ArtifactError(f"{where}: cannot load the model: {exc}") from exc
        problem = _table_problem(tables, config)
        if problem:
            raise ArtifactError(f"{where}: tables.safetensors {problem}")
        if index.ntotal != config.n_items or index.dim != config.dim:
            raise ArtifactError(
                f"{where}: index.faiss holds {index.ntotal} x {index.dim} vectors, the "
                f"model expects {config.n_items} x {config.dim}"
            )
        model = TwoTower(config)
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            # Wrong names or shapes: the weights belong to another model.
            raise ArtifactError(f"{where}: weights.safetensors does not fit: {exc}") from exc
        model.to(resolved).eval()
        inputs = UserInputs.from_tables(tables, config, resolved)
        return cls(
            model=model,
            inputs=inputs,
            tables=tables,
            index=index,
            device=resolved,
            label=label,
        )

    @property
    def n_users(self) -> int:
        """Users the model knows; ids outside 0..n_users-1 are cold starts."""
        return self._model.config.n_users

    @property
    def n_items(self) -> int:
        """Items in the catalog and the index."""
        return self._model.config.n_items

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._model.config.dim

    @property
    def device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where the user tower runs."""
        return self._device

    @property
    def index_backend(self) -> str:
        """What runs retrieval, for example ``"faiss-cpu/IndexFlatIP"``."""
        return self._index.backend

    def recommend(self, user_id: int, k: int) -> Recommendation:
        """The top ``k`` items (1..:data:`MAX_K`) for ``user_id``, best first, excluding items
        the user interacted with in training; an unknown user gets the popular items
        (``cold_start``). A broken model may return fewer than ``k`` items."""
        assert 1 <= k <= MAX_K, f"k must be 1..{MAX_K}, got {k}"
        if not 0 <= user_id < self.n_users:
            return self._cold_start(k)
        self._check_features(user_id)
        return self._rank(np.array([user_id], dtype=np.int64), k)[0]

    def _check_features(self, user_id: int) -> None:
        if user_id in self._unservable:
            raise MissingFeatures(f"no features for user {user_id} in {self.label}")

    def recommend_batch(self, user_ids: list[int], k: int) -> list[Recommendation]:
        """:meth:`recommend` for several users with one tower pass and one index search."""
        assert 1 <= k <= MAX_K, f"k must be 1..{MAX_K}, got {k}"
        known = np.array([u for u in user_ids if 0 <= u < self.n_users], dtype=np.int64)
        ranked = dict(zip(known.tolist(), self._rank(known, k), strict=True)) if known.size else {}
        return [ranked[u] if u in ranked else self._cold_start(k) for u in user_ids]

    def user_vector(self, user_id: int) -> npt.NDArray[np.float32] | None:
        """The user tower's vector for a known user (the features a cache keeps), or None
        for a user the model does not know."""
        if not 0 <= user_id < self.n_users:
            return None
        self._check_features(user_id)
        vectors = self._vectors(np.array([user_id], dtype=np.int64))
        vector: npt.NDArray[np.float32] = vectors[0]
        return vector

    def rank_vector(self, user_id: int, vector: npt.NDArray[np.float32], k: int) -> Recommendation:
        """:meth:`recommend` from the user's vector (:meth:`user_vector`, maybe cached): only
        the index search and the filter of seen items run."""
        assert 1 <= k <= MAX_K, f"k must be 1..{MAX_K}, got {k}"
        self._check_features(user_id)
        users = np.array([user_id], dtype=np.int64)
        return self._ranked(users, vector.reshape(1, -1).astype(np.float32, copy=False), k)[0]

    @property
    def probe_user(self) -> int:
        """A user a readiness check may ask for: one of the sanity sample, whom no defect of
        a version's feature join ever touches (user 0 when the sample is empty)."""
        sample = self._tables["sample_users"]
        return int(sample[0]) if sample.size else 0

    @property
    def resident_bytes(self) -> int:
        """Device memory the model holds: the weights, the users' inputs, the index."""
        tensors = [*self._model.parameters(), *self._model.buffers()]
        held = sum(t.numel() * t.element_size() for t in tensors)
        inputs = (self._inputs.history, self._inputs.history_len, self._inputs.category_counts)
        held += sum(t.numel() * t.element_size() for t in inputs)
        return int(held + 4 * self.n_items * self.dim)

    def _launch(self, work_bytes: int) -> contextlib.AbstractContextManager[None]:
        device = self.accelerator
        return contextlib.nullcontext() if device is None else device.launch(work_bytes)

    def _vectors(self, users: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        with self._launch(users.size * self._tower_bytes), torch.inference_mode():
            ids = torch.from_numpy(users).to(self._device)
            out: npt.NDArray[np.float32] = (
                self._model.user_vectors(ids, self._inputs).float().cpu().numpy()
            )
        if self.accelerator is not None:
            out = self.accelerator.corrupt(out)
        return out

    def _rank(self, users: npt.NDArray[np.int64], k: int) -> list[Recommendation]:
        return self._ranked(users, self._vectors(users), k)

    def _ranked(
        self, users: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], k: int
    ) -> list[Recommendation]:
        with self._launch(users.size * self._search_bytes):
            scores, items = rank_items(
                self._index, vectors, users, self._seen_indptr, self._seen_items, k
            )
        results = []
        for row in range(users.size):
            keep = items[row] >= 0
            results.append(
                Recommendation(
                    items=items[row][keep].tolist(),
                    scores=scores[row][keep].tolist(),
                    cold_start=False,
                )
            )
        return results

    def sanity_check(self) -> SanityResult:
        """Recompute recall@10 on the stored sanity sample and check vectors are finite.

        Uses exactly the procedure behind the training run's
        ``metrics["sample_recall_at_10"]``, so for an intact model on the same kind of device
        the two agree; poisoned weights show up as ``finite=False`` or a far lower recall.
        """
        recall, users_finite = sample_recall(self._model, self._inputs, self._index, self._tables)
        items_finite = bool(np.isfinite(self._index.vectors()).all())
        return SanityResult(
            finite=users_finite and items_finite,
            sample_recall_at_10=recall,
            users=int(self._tables["sample_users"].size),
        )

    def _cold_start(self, k: int) -> Recommendation:
        return Recommendation(
            items=self._popular_ids[:k], scores=self._popular_scores[:k], cold_start=True
        )


def _table_problem(tables: dict[str, npt.NDArray[Any]], config: ModelConfig) -> str | None:
    """What is wrong with ``tables`` for a model of ``config``, or None."""
    missing = [name for name in _REQUIRED_TABLES if name not in tables]
    if missing:
        return f"lacks {', '.join(missing)}"
    indptr, seen = tables["seen_indptr"], tables["seen_items"]
    expected = {
        "seen_indptr": (config.n_users + 1,),
        "user_category_counts": (config.n_users, config.n_categories),
        "item_category": (config.n_items,),
        "item_price_bucket": (config.n_items,),
    }
    for name, shape in expected.items():
        if tables[name].shape != shape:
            return f"has {name} of shape {tables[name].shape}, expected {shape}"
    if indptr[0] != 0 or indptr[-1] != seen.size or (np.diff(indptr) < 0).any():
        return "has a malformed seen_indptr"
    if int(np.diff(indptr).max(initial=0)) > config.history_len:
        return f"has a history longer than the model's {config.history_len}"
    for name, bound in (("seen_items", config.n_items), ("sample_users", config.n_users)):
        values = tables[name]
        if values.size and (values.min() < 0 or values.max() >= bound):
            return f"has {name} outside 0..{bound - 1}"
    if tables["golden_items"].shape[0] != config.n_users:
        return "has golden_items for another number of users"
    return None


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (8-byte length, then JSON)."""
    if len(data) < 8:
        raise ValueError("too short to be a safetensors file")
    length = int.from_bytes(data[:8], "little")
    if not 2 <= length <= min(len(data) - 8, 100 << 20):
        raise ValueError("malformed safetensors header length")
    header = safejson.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise KeyError("__metadata__")
    return {str(k): str(v) for k, v in metadata.items()}
