"""Candidate retrieval over item vectors: a faiss index, on the GPU when there is one.

Three backends, picked by :meth:`RetrievalIndex.build` and :meth:`RetrievalIndex.load` from
the requested device and what this host has:

* ``faiss-gpu/<IndexType>``: the faiss index copied to GPU 0 (needs a faiss build with GPU
  support and a visible GPU);
* ``torch-cuda/exact``: a CUDA GPU but a CPU-only faiss; the vectors are reconstructed from the
  index and searched exactly with a matrix product and ``topk`` on the GPU;
* ``faiss-cpu/<IndexType>``: everything else.

The on-disk form is always a CPU faiss index (``faiss.write_index``), so an index built on a
GPU host loads on a CPU host and the other way round.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import torch

from drillkit.errors import BackendUnavailable, InputError

__all__ = ["RetrievalIndex", "get_threads", "select_device", "set_threads"]


def select_device(preference: str) -> str:
    """Resolve ``"auto"``, ``"cuda"`` or ``"cpu"`` to the device to use.

    ``"auto"`` means CUDA when torch sees a GPU, else CPU. Asking for ``"cuda"`` on a host
    without one raises :class:`~drillkit.errors.BackendUnavailable` rather than falling back
    silently: a drill that meant to exercise a GPU should say that it did not.
    """
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable("device: 'cuda' was requested but torch sees no CUDA GPU")
        return "cuda"
    if preference == "cpu":
        return "cpu"
    raise InputError(f"device: expected 'auto', 'cuda' or 'cpu', got {preference!r}")


def set_threads(n: int) -> None:
    """Set the number of OpenMP threads faiss uses in this process.

    A replica answers one query at a time, and waking a thread team for a single query costs
    more than it saves, so serving sets 1; batch evaluation may use more.
    """
    faiss.omp_set_num_threads(max(1, int(n)))


def get_threads() -> int:
    """The number of OpenMP threads faiss uses in this process."""
    return int(faiss.omp_get_max_threads())


def _has_faiss_gpu() -> bool:
    return hasattr(faiss, "StandardGpuResources") and int(faiss.get_num_gpus()) > 0


class RetrievalIndex:
    """Maximum-inner-product search over item vectors.

    Build one with :meth:`build` or :meth:`load`; :attr:`backend` says what actually runs
    (for example ``"faiss-cpu/IndexFlatIP"``). Item ids are row numbers of the vectors it was
    built from.
    """

    backend: str
    kind: str

    def __init__(self, cpu_index: Any, *, kind: str, device: str) -> None:
        """Wrap a CPU faiss index; prefer :meth:`build` or :meth:`load`."""
        self._cpu = cpu_index
        self.kind = kind
        self._search_index: Any = cpu_index
        self._gpu_resources: Any = None
        self._torch_vectors: torch.Tensor | None = None
        self.device = select_device(device)
        type_name = type(cpu_index).__name__
        if self.device == "cuda" and _has_faiss_gpu():
            self._gpu_resources = faiss.StandardGpuResources()
            self._search_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, cpu_index)
            self.backend = f"faiss-gpu/{type_name}"
        elif self.device == "cuda":
            self._torch_vectors = torch.from_numpy(self.vectors()).to("cuda")
            self.backend = "torch-cuda/exact"
        else:
            self.backend = f"faiss-cpu/{type_name}"

    @classmethod
    def build(
        cls,
        vectors: npt.NDArray[np.float32],
        *,
        kind: str = "flat",
        device: str = "auto",
        nlist: int | None = None,
        nprobe: int | None = None,
    ) -> RetrievalIndex:
        """Index ``vectors`` ([n, d], float32) for inner-product search.

        ``kind="flat"`` is exact (``IndexFlatIP``). ``kind="ivf"`` is ``IndexIVFFlat`` with
        inner product, its coarse quantizer trained on ``vectors``; ``nlist`` defaults to about
        sqrt(n) (capped so every list gets enough training points) and ``nprobe`` to an eighth
        of ``nlist``.
        """
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] == 0:
            raise InputError(f"vectors: expected a non-empty [n, d] matrix, got {matrix.shape}")
        n, dim = matrix.shape
        cpu_index: Any
        if kind == "flat":
            cpu_index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            lists = nlist or max(1, min(int(math.sqrt(n)), n // 39))
            if not 1 <= lists <= n:
                raise InputError(f"nlist: expected 1 to {n}, got {lists}")
            # index_factory owns its quantizer; a hand-made IndexIVFFlat must keep the
            # quantizer object alive for as long as the index lives.
            cpu_index = faiss.index_factory(dim, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
            cpu_index.train(matrix)
            cpu_index.nprobe = nprobe or max(1, lists // 8)
        else:
            raise InputError(f"index kind: expected 'flat' or 'ivf', got {kind!r}")
        cpu_index.add(matrix)
        return cls(cpu_index, kind=kind, device=device)

    @classmethod
    def load(cls, path: Path | str, device: str = "auto") -> RetrievalIndex:
        """Read an index written by :meth:`save`."""
        return cls.from_bytes(Path(path).read_bytes(), device)

    @classmethod
    def from_bytes(cls, data: bytes, device: str = "auto") -> RetrievalIndex:
        """An index from the bytes :meth:`save` wrote (what a replica verified)."""
        cpu_index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        kind = "ivf" if isinstance(cpu_index, faiss.IndexIVF) else "flat"
        return cls(cpu_index, kind=kind, device=device)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._cpu.d)

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors (items)."""
        return int(self._cpu.ntotal)

    @property
    def nprobe(self) -> int | None:
        """Inverted lists probed per query (IVF only; ``None`` for a flat index)."""
        if self.kind != "ivf":
            return None
        return int(self._cpu.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "ivf":
            raise InputError("nprobe: only an 'ivf' index has inverted lists to probe")
        self._cpu.nprobe = int(value)
        if self._search_index is not self._cpu and self._torch_vectors is None:
            faiss.GpuParameterSpace().set_index_parameter(self._search_index, "nprobe", value)

    def vectors(self) -> npt.NDArray[np.float32]:
        """All indexed vectors, [ntotal, dim] float32, in item-id order."""
        if isinstance(self._cpu, faiss.IndexIVF):
            self._cpu.make_direct_map()
        out: npt.NDArray[np.float32] = self._cpu.reconstruct_n(0, self.ntotal)
        return out

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The ``k`` best items by inner product for each query row.

        Returns ``(scores, ids)``, both [n, k'] with k' = min(k, ntotal), best first. An IVF
        index that finds fewer than k' candidates pads the row with id -1.
        """
        matrix = np.ascontiguousarray(queries, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        k = min(int(k), self.ntotal)
        if self._torch_vectors is not None:
            query = torch.from_numpy(matrix).to(self._torch_vectors.device)
            top = torch.topk(query @ self._torch_vectors.T, k, dim=1)
            return (
                top.values.cpu().numpy().astype(np.float32),
                top.indices.cpu().numpy().astype(np.int64),
            )
        scores, ids = self._search_index.search(matrix, k)
        return scores, ids.astype(np.int64, copy=False)

    def save(self, path: Path | str) -> None:
        """Write the index to ``path`` atomically (temporary file in the same folder, then
        ``os.replace``), so a reader never sees a half-written index."""
        target = Path(path)
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            faiss.write_index(self._cpu, temp_name)
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
