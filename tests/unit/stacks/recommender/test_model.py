"""Two-tower training: versions, quality against popularity, and the written payload."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch

from drillkit.errors import InputError
from drillkit.stacks.recommender.data import GOLDEN_PER_USER, CatalogSpec
from drillkit.stacks.recommender.model import (
    POPULAR_FALLBACK,
    SAMPLE_USERS,
    ModelConfig,
    TrainedVersion,
    train_versions,
)

TINY = CatalogSpec(items=500, dim=16, seed=42)


@pytest.fixture(scope="module")
def progress_calls() -> list[tuple[str, float]]:
    return []


@pytest.fixture(scope="module")
def versions(progress_calls: list[tuple[str, float]]) -> list[TrainedVersion]:
    def progress(message: str, fraction: float) -> None:
        progress_calls.append((message, fraction))

    return train_versions(TINY, device="cpu", progress=progress)


@pytest.fixture(scope="module")
def written(versions: list[TrainedVersion], tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("version")
    names = versions[-1].write(directory)
    assert names == ["weights.safetensors", "tables.safetensors", "index.faiss", "popular.json"]
    return directory


def test_two_versions_oldest_first(versions: list[TrainedVersion]) -> None:
    assert len(versions) == 2
    older, newer = versions
    assert older.metrics["epochs"] < newer.metrics["epochs"]
    assert older.metrics["train_seconds"] <= newer.metrics["train_seconds"]
    assert older.label != newer.label


def test_model_beats_popularity(versions: list[TrainedVersion]) -> None:
    for version in versions:
        recall = version.metrics["recall_at_10"]
        popularity = version.metrics["popularity_recall_at_10"]
        assert 0 < popularity < 1
        assert recall > 1.3 * popularity, version.metrics


def test_metrics_and_info(versions: list[TrainedVersion]) -> None:
    version = versions[-1]
    for name in (
        "recall_at_10",
        "popularity_recall_at_10",
        "sample_recall_at_10",
        "train_seconds",
        "epochs",
    ):
        assert isinstance(version.metrics[name], float), name
    assert 0 < version.metrics["sample_recall_at_10"] <= 1
    info = version.info
    spec = TINY.resolved()
    assert (info["items"], info["users"], info["dim"], info["categories"], info["seed"]) == (
        spec.items,
        spec.users,
        spec.dim,
        spec.categories,
        spec.seed,
    )
    assert info["index_kind"] == "flat"
    assert info["index_backend"] == "faiss-cpu/IndexFlatIP"
    assert info["device"] == "cpu"
    assert isinstance(info["torch_version"], str)


def test_progress_is_reported(progress_calls: list[tuple[str, float]]) -> None:
    fractions = [fraction for _, fraction in progress_calls]
    assert len(fractions) >= 3
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0


def test_weights_are_safetensors_not_pickle(written: Path) -> None:
    raw = (written / "weights.safetensors").read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["format"].startswith("drillkit-two-tower/")
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # pickle, torch zip
    tensors = safetensors.torch.load_file(str(written / "weights.safetensors"))
    assert tensors["item_id.weight"].shape == (TINY.items + 1, TINY.dim)


def test_tables_hold_what_serving_needs(written: Path) -> None:
    tables = safetensors.numpy.load_file(str(written / "tables.safetensors"))
    spec = TINY.resolved()
    assert tables["golden_users"].dtype == np.int64
    np.testing.assert_array_equal(tables["golden_users"], np.arange(spec.users))
    assert tables["golden_items"].shape == (spec.users, GOLDEN_PER_USER)
    assert tables["golden_items"].dtype == np.int64
    assert tables["sample_users"].shape == (min(SAMPLE_USERS, spec.users),)
    assert tables["seen_indptr"].shape == (spec.users + 1,)
    assert tables["seen_items"].shape == (int(tables["seen_indptr"][-1]),)
    assert tables["popular_ids"].shape == tables["popular_scores"].shape
    with safetensors.safe_open(str(written / "tables.safetensors"), framework="np") as handle:
        metadata = handle.metadata()
    config = ModelConfig.from_json(metadata["config"])
    assert (config.n_users, config.n_items, config.dim) == (spec.users, spec.items, spec.dim)


def test_popular_json_is_the_fallback_list(written: Path) -> None:
    popular = json.loads((written / "popular.json").read_text())
    assert len(popular) == POPULAR_FALLBACK
    assert set(popular[0]) == {"item_id", "score"}
    scores = [entry["score"] for entry in popular]
    assert scores == sorted(scores, reverse=True)


def test_write_needs_an_existing_directory(versions: list[TrainedVersion], tmp_path: Path) -> None:
    with pytest.raises(InputError):
        versions[0].write(tmp_path / "missing")


@pytest.mark.parametrize(
    "kwargs",
    [{"versions": 0}, {"index_kind": "hnsw"}, {"device": "tpu"}],
    ids=["no-versions", "unknown-index", "unknown-device"],
)
def test_bad_arguments_are_input_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        train_versions(TINY, **kwargs)  # type: ignore[arg-type]


def test_ivf_index_and_more_versions() -> None:
    versions = train_versions(
        CatalogSpec(items=300, dim=8, seed=5), device="cpu", index_kind="ivf", versions=3
    )
    assert len(versions) == 3
    assert [v.metrics["epochs"] for v in versions] == sorted(v.metrics["epochs"] for v in versions)
    assert versions[-1].info["index_backend"] == "faiss-cpu/IndexIVFFlat"
