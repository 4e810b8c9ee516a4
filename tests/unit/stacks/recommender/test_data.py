"""Synthetic catalog generation: validation, determinism, and the golden-set hold-out."""

from __future__ import annotations

import numpy as np
import pytest

from drillkit.errors import InputError
from drillkit.stacks.recommender.data import (
    EVENTS_PER_USER,
    GOLDEN_PER_USER,
    CatalogSpec,
    Dataset,
    generate,
    popular_items,
)

TINY = CatalogSpec(items=500, dim=16, seed=3)


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    return generate(TINY)


def test_same_seed_gives_identical_arrays(tiny: Dataset) -> None:
    again = generate(CatalogSpec(items=500, dim=16, seed=3))
    assert again.digest() == tiny.digest()
    for name, array in tiny.arrays().items():
        assert array.tobytes() == again.arrays()[name].tobytes(), name


def test_different_seed_gives_different_data(tiny: Dataset) -> None:
    assert generate(CatalogSpec(items=500, dim=16, seed=4)).digest() != tiny.digest()


def test_generation_leaves_global_numpy_state_alone() -> None:
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    generate(TINY)
    assert np.random.random() == expected


def test_shapes_and_ranges(tiny: Dataset) -> None:
    spec = tiny.spec
    assert spec == TINY.resolved()
    assert (tiny.n_items, tiny.n_users, tiny.n_categories) == (
        spec.items,
        spec.users,
        spec.categories,
    )
    assert tiny.golden_items.shape == (tiny.n_users, GOLDEN_PER_USER)
    assert tiny.train_indptr.shape == (tiny.n_users + 1,)
    assert tiny.train_users.shape == tiny.train_items.shape == (int(tiny.train_indptr[-1]),)
    assert tiny.item_price.dtype == np.float32 and (tiny.item_price > 0).all()
    assert np.isclose(tiny.item_popularity.sum(), 1.0)
    assert set(np.unique(tiny.item_category)) == set(range(tiny.n_categories))
    assert tiny.train_items.min() >= 0 and tiny.train_items.max() < tiny.n_items
    per_user = np.diff(tiny.train_indptr) + GOLDEN_PER_USER
    assert per_user.min() >= EVENTS_PER_USER[0] and per_user.max() <= EVENTS_PER_USER[1]
    np.testing.assert_array_equal(
        tiny.train_users, np.repeat(np.arange(tiny.n_users), np.diff(tiny.train_indptr))
    )
    favourites = (tiny.user_pref > 0).sum(axis=1)
    assert favourites.min() >= 2 and np.allclose(tiny.user_pref.sum(axis=1), 1.0)


def test_golden_items_are_held_out_and_distinct(tiny: Dataset) -> None:
    for user in range(tiny.n_users):
        train = tiny.train_items[tiny.train_indptr[user] : tiny.train_indptr[user + 1]]
        golden = tiny.golden_items[user]
        assert len(set(train.tolist())) == train.size
        assert len(set(golden.tolist())) == golden.size
        assert not set(golden.tolist()) & set(train.tolist())


def test_users_prefer_their_favourite_categories(tiny: Dataset) -> None:
    favourite = tiny.user_pref > 0
    in_favourites = favourite[tiny.train_users, tiny.item_category[tiny.train_items]].mean()
    assert in_favourites > 0.6


def test_popular_items_counts_training_interactions(tiny: Dataset) -> None:
    top = popular_items(tiny, 20)
    counts = np.bincount(tiny.train_items, minlength=tiny.n_items)
    assert [score for _, score in top] == sorted((float(c) for c in counts), reverse=True)[:20]
    assert all(counts[item] == score for item, score in top)
    assert len(popular_items(tiny, 10**6)) == tiny.n_items
    with pytest.raises(InputError):
        popular_items(tiny, 0)


def test_resolved_derives_users_and_categories() -> None:
    spec = CatalogSpec().resolved()
    assert (spec.items, spec.dim, spec.seed, spec.users, spec.categories) == (
        20_000,
        64,
        42,
        10_000,
        50,
    )
    assert CatalogSpec(items=500, users=77, categories=9).resolved().users == 77


def test_key_is_stable_and_depends_on_every_field() -> None:
    key = CatalogSpec().key()
    assert key == CatalogSpec().key() == CatalogSpec(users=10_000, categories=50).key()
    assert len(key) == 16 and int(key, 16) >= 0
    variants = [
        CatalogSpec(items=20_001),
        CatalogSpec(dim=32),
        CatalogSpec(seed=43),
        CatalogSpec(users=9_999),
        CatalogSpec(categories=49),
    ]
    assert len({key, *(spec.key() for spec in variants)}) == len(variants) + 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"items": 99}, "catalog.items"),
        ({"items": 10**9}, "catalog.items"),
        ({"dim": 7}, "catalog.dim"),
        ({"dim": 2048}, "catalog.dim"),
        ({"seed": -1}, "catalog.seed"),
        ({"users": 5}, "catalog.users"),
        ({"categories": 1}, "catalog.categories"),
        ({"items": 100, "categories": 11}, "catalog.categories"),
        ({"items": True}, "catalog.items"),
        ({"dim": 64.0}, "catalog.dim"),
    ],
    ids=[
        "too-few-items",
        "too-many-items",
        "dim-too-small",
        "dim-too-large",
        "negative-seed",
        "too-few-users",
        "one-category",
        "categories-exceed-items",
        "bool-items",
        "float-dim",
    ],
)
def test_invalid_spec_is_an_input_error(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        CatalogSpec(**fields)  # type: ignore[arg-type]


def test_smallest_catalog_still_holds_out_distinct_golden_items() -> None:
    # Users here exhaust their favourite categories, which exercises the exact
    # without-replacement top-up of the generator.
    data = generate(CatalogSpec(items=100, dim=8))
    assert data.golden_items.shape == (data.n_users, GOLDEN_PER_USER)
    for user in range(data.n_users):
        train = data.train_items[data.train_indptr[user] : data.train_indptr[user + 1]]
        sequence = np.concatenate([train, data.golden_items[user]])
        assert np.unique(sequence).size == sequence.size
