"""Serving a written model version: load, recommend, cold start, and the sanity gate."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from drillkit.errors import ArtifactError
from drillkit.stacks.recommender.data import CatalogSpec
from drillkit.stacks.recommender.model import TrainedVersion, train_versions
from drillkit.stacks.recommender.runtime import LoadedModel, Recommendation

TINY = CatalogSpec(items=500, dim=16, seed=11)


@pytest.fixture(scope="module")
def version() -> TrainedVersion:
    return train_versions(TINY, device="cpu", versions=1)[0]


@pytest.fixture(scope="module")
def version_dir(version: TrainedVersion, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("v1")
    version.write(directory)
    return directory


@pytest.fixture(scope="module")
def loaded(version_dir: Path) -> LoadedModel:
    return LoadedModel.load(version_dir, device="cpu", threads=None)


def _poisoned_copy(source: Path, target: Path, poison: str) -> Path:
    shutil.copytree(source, target)
    path = target / "weights.safetensors"
    weights = safetensors.torch.load_file(str(path))
    generator = torch.Generator().manual_seed(0)
    for name, tensor in weights.items():
        if poison == "nan":
            weights[name] = torch.full_like(tensor, float("nan"))
        else:
            weights[name] = torch.randn(tensor.shape, generator=generator)
    safetensors.torch.save_file(weights, str(path))
    return target


def test_load_describes_the_model(loaded: LoadedModel) -> None:
    spec = TINY.resolved()
    assert (loaded.n_users, loaded.n_items, loaded.dim) == (spec.users, spec.items, spec.dim)
    assert loaded.device == "cpu"
    assert loaded.index_backend == "faiss-cpu/IndexFlatIP"


def test_sanity_check_reproduces_the_training_metric(
    loaded: LoadedModel, version: TrainedVersion, version_dir: Path
) -> None:
    # The oracle: recall@10 worked out here from what the replica serves (recommend) and the
    # stored golden items, not by the function both training and the check call.
    tables = safetensors.numpy.load_file(str(version_dir / "tables.safetensors"))
    users = tables["sample_users"].tolist()
    golden = tables["golden_items"]
    shares = [
        len(set(loaded.recommend(u, 10).items) & set(golden[u].tolist())) / golden.shape[1]
        for u in users
    ]
    expected = sum(shares) / len(shares)
    assert 0.0 < expected < 1.0  # a figure that can tell a good model from a broken one
    result = loaded.sanity_check()
    assert result.finite
    assert result.users == len(users) == 200
    assert result.sample_recall_at_10 == pytest.approx(expected, abs=1e-9)
    assert version.metrics["sample_recall_at_10"] == pytest.approx(expected, abs=1e-6)


def test_reload_with_other_thread_settings_gives_the_same_recall(
    version_dir: Path, version: TrainedVersion
) -> None:
    saved = torch.get_num_threads()
    try:
        single = LoadedModel.load(version_dir, device="cpu", threads=1)
        recall = single.sanity_check().sample_recall_at_10
    finally:
        torch.set_num_threads(saved)
    assert recall == pytest.approx(version.metrics["sample_recall_at_10"], abs=1e-6)


def test_recommend_a_known_user(loaded: LoadedModel, version_dir: Path) -> None:
    tables = safetensors.numpy.load_file(str(version_dir / "tables.safetensors"))
    user = 7
    seen = set(tables["seen_items"][tables["seen_indptr"][user] : tables["seen_indptr"][user + 1]])
    result = loaded.recommend(user, 25)
    assert isinstance(result, Recommendation) and not result.cold_start
    assert len(result.items) == len(result.scores) == 25
    assert len(set(result.items)) == 25
    assert not seen & set(result.items)
    assert all(0 <= item < loaded.n_items for item in result.items)
    assert result.scores == sorted(result.scores, reverse=True)


def test_recommend_batch_matches_single_calls(loaded: LoadedModel) -> None:
    users = [0, 3, -1, 42, loaded.n_users]
    batch = loaded.recommend_batch(users, 10)
    assert [r.cold_start for r in batch] == [False, False, True, False, True]
    for user, result in zip(users, batch, strict=True):
        single = loaded.recommend(user, 10)
        assert single.items == result.items
        np.testing.assert_allclose(single.scores, result.scores, rtol=1e-5)


@pytest.mark.parametrize("user", [-1, 10**9], ids=["negative", "beyond-known-users"])
def test_unknown_user_gets_popular_items(
    loaded: LoadedModel, version: TrainedVersion, user: int
) -> None:
    result = loaded.recommend(user, 5)
    assert result.cold_start
    assert result.items == [item for item, _ in version.popular[:5]]
    assert result.scores == [score for _, score in version.popular[:5]]


def test_k_bounds(loaded: LoadedModel) -> None:
    assert len(loaded.recommend(1, 1).items) == 1
    assert len(loaded.recommend(1, 1000).items) <= loaded.n_items
    with pytest.raises(AssertionError):
        loaded.recommend(1, 0)


def test_nan_weights_are_not_finite(version_dir: Path, tmp_path: Path) -> None:
    poisoned = _poisoned_copy(version_dir, tmp_path / "nan", "nan")
    result = LoadedModel.load(poisoned, device="cpu", threads=None).sanity_check()
    assert not result.finite


def test_garbage_weights_lose_recall(
    version_dir: Path, tmp_path: Path, version: TrainedVersion
) -> None:
    poisoned = _poisoned_copy(version_dir, tmp_path / "garbage", "random")
    result = LoadedModel.load(poisoned, device="cpu", threads=None).sanity_check()
    assert result.finite
    assert result.sample_recall_at_10 < 0.5 * version.metrics["sample_recall_at_10"]


def test_weights_of_another_shape_are_an_artifact_error(version_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "wrong"
    shutil.copytree(version_dir, target)
    weights = safetensors.torch.load_file(str(target / "weights.safetensors"))
    weights["user_id.weight"] = torch.zeros(3, 3)
    safetensors.torch.save_file(weights, str(target / "weights.safetensors"))
    with pytest.raises(ArtifactError, match="does not fit"):
        LoadedModel.load(target, device="cpu", threads=None)


def test_missing_file_is_an_artifact_error(version_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "missing"
    shutil.copytree(version_dir, target)
    (target / "index.faiss").unlink()
    with pytest.raises(ArtifactError, match="cannot load"):
        LoadedModel.load(target, device="cpu", threads=None)


def test_tables_of_another_catalog_are_an_artifact_error(version_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "tables"
    shutil.copytree(version_dir, target)
    path = target / "tables.safetensors"
    with safetensors.safe_open(str(path), framework="np") as handle:
        metadata = handle.metadata()
    tables = safetensors.numpy.load_file(str(path))
    tables["seen_items"] = tables["seen_items"] + 10**6
    safetensors.numpy.save_file(tables, str(path), metadata)
    with pytest.raises(ArtifactError, match="seen_items"):
        LoadedModel.load(target, device="cpu", threads=None)
