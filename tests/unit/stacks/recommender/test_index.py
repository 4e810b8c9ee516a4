"""Retrieval index: exactness of the flat index, IVF quality, persistence, device choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from drillkit.errors import BackendUnavailable, InputError
from drillkit.stacks.recommender.index import RetrievalIndex, select_device, set_threads

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


def _clustered(n: int, dim: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(32, dim))
    points = centres[rng.integers(0, 32, n)] + 0.3 * rng.normal(size=(n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> npt.NDArray[np.float32]:
    return _clustered(3000, 24, seed=0)


@pytest.fixture(scope="module")
def queries() -> npt.NDArray[np.float32]:
    return _clustered(50, 24, seed=1)


def _brute_force(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    scores = queries @ vectors.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def test_flat_search_equals_brute_force(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> None:
    index = RetrievalIndex.build(vectors, kind="flat", device="cpu")
    assert index.backend == "faiss-cpu/IndexFlatIP"
    assert (index.ntotal, index.dim, index.nprobe) == (3000, 24, None)
    scores, ids = index.search(queries, 10)
    expected_scores, expected_ids = _brute_force(vectors, queries, 10)
    assert ids.dtype == np.int64 and ids.shape == (50, 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)


def test_single_query_matches_batch(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> None:
    index = RetrievalIndex.build(vectors, device="cpu")
    set_threads(1)
    _, batch_ids = index.search(queries, 5)
    for row in range(5):
        _, ids = index.search(queries[row], 5)
        np.testing.assert_array_equal(ids[0], batch_ids[row])


def test_k_larger_than_the_index_is_clamped(vectors: npt.NDArray[np.float32]) -> None:
    index = RetrievalIndex.build(vectors[:7], device="cpu")
    scores, ids = index.search(vectors[:2], 50)
    assert ids.shape == scores.shape == (2, 7)


def test_vectors_round_trip(vectors: npt.NDArray[np.float32]) -> None:
    for kind in ("flat", "ivf"):
        index = RetrievalIndex.build(vectors, kind=kind, device="cpu")
        np.testing.assert_array_equal(index.vectors(), vectors)


def test_save_and_load_round_trip(
    tmp_path: Path, vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> None:
    for kind in ("flat", "ivf"):
        index = RetrievalIndex.build(vectors, kind=kind, device="cpu")
        path = tmp_path / f"{kind}.faiss"
        index.save(path)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
        loaded = RetrievalIndex.load(path, device="cpu")
        assert (loaded.kind, loaded.backend, loaded.nprobe) == (
            index.kind,
            index.backend,
            index.nprobe,
        )
        for got, want in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
            np.testing.assert_array_equal(got, want)


def test_save_replaces_an_existing_file_atomically(
    tmp_path: Path, vectors: npt.NDArray[np.float32]
) -> None:
    path = tmp_path / "index.faiss"
    path.write_bytes(b"old contents")
    RetrievalIndex.build(vectors, device="cpu").save(path)
    assert RetrievalIndex.load(path, device="cpu").ntotal == vectors.shape[0]
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def test_ivf_finds_most_exact_neighbours(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> None:
    index = RetrievalIndex.build(vectors, kind="ivf", device="cpu")
    assert index.backend == "faiss-cpu/IndexIVFFlat"
    assert index.nprobe is not None and index.nprobe >= 1
    _, ids = index.search(queries, 10)
    _, exact = _brute_force(vectors, queries, 10)
    overlap = np.mean([len(set(ids[r]) & set(exact[r])) / 10 for r in range(len(queries))])
    assert overlap >= 0.9
    index.nprobe = 10_000  # every list: exact again
    _, ids = index.search(queries, 10)
    np.testing.assert_array_equal(ids, exact)


def test_nprobe_is_ivf_only(vectors: npt.NDArray[np.float32]) -> None:
    with pytest.raises(InputError, match="nprobe"):
        RetrievalIndex.build(vectors, kind="flat", device="cpu").nprobe = 4


@pytest.mark.parametrize(
    "call",
    [
        lambda v: RetrievalIndex.build(v, kind="hnsw", device="cpu"),
        lambda v: RetrievalIndex.build(v[:0], device="cpu"),
        lambda v: RetrievalIndex.build(v[0], device="cpu"),
    ],
    ids=["unknown-kind", "empty", "one-dimensional"],
)
def test_bad_build_arguments(call: object, vectors: npt.NDArray[np.float32]) -> None:
    with pytest.raises(InputError):
        call(vectors)  # type: ignore[operator]


def test_select_device() -> None:
    assert select_device("cpu") == "cpu"
    assert select_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="device"):
        select_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a CUDA GPU")
def test_cuda_without_a_gpu_is_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="cuda"):
        select_device("cuda")


@pytest.mark.gpu
@needs_cuda
def test_gpu_search_matches_cpu(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> None:
    cpu = RetrievalIndex.build(vectors, device="cpu")
    gpu = RetrievalIndex.build(vectors, device="cuda")
    assert gpu.backend in ("faiss-gpu/IndexFlatIP", "torch-cuda/exact")
    _, cpu_ids = cpu.search(queries, 10)
    gpu_scores, gpu_ids = gpu.search(queries, 10)
    assert gpu_ids.dtype == np.int64 and gpu_scores.dtype == np.float32
    np.testing.assert_array_equal(gpu_ids, cpu_ids)


@pytest.mark.parametrize(
    ("items", "kind"),
    [(20_000, "flat"), (199_999, "flat"), (200_000, "ivf"), (1_000_000, "ivf")],
    ids=["default", "below", "threshold", "million"],
)
def test_large_catalogs_are_served_from_ivf(items: int, kind: str) -> None:
    from drillkit.stacks.recommender.build import index_kind_for

    assert index_kind_for(items) == kind
