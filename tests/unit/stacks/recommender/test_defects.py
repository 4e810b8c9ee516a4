"""The versions a ``bad_rollout`` publishes: each verifies and passes the replica's sanity
gate, and each hurts the users outside the sanity sample the way its defect says."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from drillkit.errors import MissingFeatures
from drillkit.stacks.recommender.data import CatalogSpec
from drillkit.stacks.recommender.defects import defect_info, defect_writer
from drillkit.stacks.recommender.model import recall_at_k, train_versions
from drillkit.stacks.recommender.replica import Replica, ReplicaConfig
from drillkit.stacks.recommender.runtime import LoadedModel
from drillkit.stacks.recommender.store import ModelStore, read_manifest

TINY = CatalogSpec(items=500, dim=16, seed=11)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("store"))
    for snapshot in train_versions(TINY, device="cpu", versions=1):
        store.add_version(snapshot.write, metrics=snapshot.metrics, info=snapshot.info)
    return store


def _publish(store: ModelStore, defect: str, severity: float) -> str:
    source = store.version_dir("v1")
    manifest = read_manifest(source)
    added = store.add_version(
        defect_writer(source, defect, severity, seed=5),  # type: ignore[arg-type]
        metrics=manifest.metrics,
        info=defect_info(manifest, defect, severity, f"test {defect}"),  # type: ignore[arg-type]
        make_current=False,
    )
    return added.version


def _recall(model: LoadedModel, users: np.ndarray, golden: np.ndarray) -> float:
    ranked = np.array([model.recommend(int(u), 10).items[:10] for u in users])
    return recall_at_k(ranked, golden[users])


def _live_users(tables: dict[str, np.ndarray]) -> np.ndarray:
    n_users = tables["seen_indptr"].shape[0] - 1
    spared = set(tables["sample_users"].tolist())
    return np.array([u for u in range(n_users) if u not in spared])


def _gate(store: ModelStore, version: str) -> None:
    """What a replica does before serving a version: verify, load, sanity gate."""
    Replica(ReplicaConfig(store=store.root, name="test", device="cpu"))._load(version)


def test_a_quality_defect_passes_the_gate_and_costs_live_users_their_recall(
    store: ModelStore,
) -> None:
    version = _publish(store, "quality", 0.3)
    _gate(store, version)  # raises SanityGateError if the gate saw it
    good = LoadedModel.load(store.version_dir("v1"), device="cpu", threads=None)
    bad = LoadedModel.load(store.version_dir(version), device="cpu", threads=None)
    tables = load_file(str(store.version_dir("v1") / "tables.safetensors"))
    golden = tables["golden_items"]
    live = _live_users(tables)
    before, after = _recall(good, live, golden), _recall(bad, live, golden)
    assert before > 0
    # 30% of the live users get another user's features: recall drops by about that share.
    assert 0.55 * before < after < 0.85 * before
    sample = tables["sample_users"]
    assert _recall(bad, sample, golden) == pytest.approx(_recall(good, sample, golden))


def test_an_errors_defect_refuses_a_share_of_live_users_and_serves_the_rest(
    store: ModelStore,
) -> None:
    version = _publish(store, "errors", 0.2)
    _gate(store, version)
    tables = load_file(str(store.version_dir(version) / "tables.safetensors"))
    lost = set(tables["unservable_users"].tolist())
    live = _live_users(tables)
    assert len(lost) == pytest.approx(0.2 * live.size, abs=1)
    assert lost <= set(live.tolist())
    bad = LoadedModel.load(store.version_dir(version), device="cpu", threads=None)
    victim = min(lost)
    with pytest.raises(MissingFeatures):
        bad.recommend(victim, 10)
    with pytest.raises(MissingFeatures):
        bad.user_vector(victim)
    spared = next(int(u) for u in live if int(u) not in lost)
    assert len(bad.recommend(spared, 10).items) == 10


def test_a_latency_defect_is_a_signed_runtime_setting(store: ModelStore) -> None:
    version = _publish(store, "latency", 150.0)
    replica = Replica(ReplicaConfig(store=store.root, name="test", device="cpu"))
    served = replica._load(version)
    assert served.fetch_delay == pytest.approx(0.15)
    assert replica._load("v1").fetch_delay == 0.0
    # Same files as the version it came from; only the manifest's info differs.
    assert (
        read_manifest(store.version_dir(version)).files
        == read_manifest(store.version_dir("v1")).files
    )


def test_a_healthy_version_is_a_new_digest_as_good(store: ModelStore) -> None:
    version = _publish(store, "none", 0.0)
    _gate(store, version)
    assert (
        read_manifest(store.version_dir(version)).digest
        != read_manifest(store.version_dir("v1")).digest
    )
    good = LoadedModel.load(store.version_dir("v1"), device="cpu", threads=None)
    new = LoadedModel.load(store.version_dir(version), device="cpu", threads=None)
    tables = load_file(str(store.version_dir("v1") / "tables.safetensors"))
    live = _live_users(tables)
    golden = tables["golden_items"]
    assert _recall(new, live, golden) == pytest.approx(_recall(good, live, golden), abs=0.03)


def test_a_version_whose_runtime_setting_is_out_of_range_adds_nothing() -> None:
    from drillkit.stacks.recommender.replica import fetch_delay_of
    from drillkit.stacks.recommender.store import Manifest

    def delay(runtime: object) -> float:
        return fetch_delay_of(
            Manifest(version="v1", created_at="now", files={}, info={"runtime": runtime})
        )

    assert delay({"feature_fetch_ms": -5}) == 0.0
    assert delay({"feature_fetch_ms": 1e9}) == 0.0
    assert delay({"feature_fetch_ms": "50"}) == 0.0
    assert delay({"feature_fetch_ms": True}) == 0.0
    assert delay("fast") == 0.0
    assert delay({"feature_fetch_ms": 50}) == pytest.approx(0.05)
