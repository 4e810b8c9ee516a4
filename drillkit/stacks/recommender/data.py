"""Seeded synthetic e-commerce data for the reference recommender.

The generator is the ground truth the two-tower model is trained and judged against. It needs
only numpy, so any process (the drill engine, the gateway, a quality probe) can rebuild or
inspect a catalog without importing torch.

How the data is made, so that a model has something to learn that popularity cannot give it:

* every item has a category, a log-normal price (each category has its own price level) and a
  Zipf-like popularity, plus a hidden latent "style" vector;
* every user has a few favourite categories (sparse weights) and a hidden latent taste;
* each interaction comes either from global popularity or, more often, from one of the user's
  favourite categories, where items are drawn in proportion to popularity and to how well the
  item's style matches the user's taste;
* a user's interactions are distinct items in time order (draws without replacement); the
  last :data:`GOLDEN_PER_USER` are held out as the golden set and never appear in training.

The same :class:`CatalogSpec` always yields byte-identical arrays: every random draw comes from
one ``numpy.random.default_rng(seed)`` in a fixed order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from drillkit.errors import InputError
from drillkit.stacks.recommender.spec import CatalogSpec

__all__ = [
    "EVENTS_PER_USER",
    "GOLDEN_PER_USER",
    "CatalogSpec",
    "Dataset",
    "generate",
    "popular_items",
]

#: Interactions per user (inclusive range), golden ones included.
EVENTS_PER_USER = (20, 40)

#: Interactions per user held out, in time order the last ones, as the golden set.
GOLDEN_PER_USER = 5

# Hidden dimensions of item style and user taste; small on purpose so that a few dozen
# interactions per user are enough to recover it.
_LATENT_DIM = 8
# Share of interactions drawn from global popularity rather than the user's own preferences.
_POPULARITY_SHARE = 0.1
# How strongly taste concentrates a user's choices inside a category. Much sharper, and in a
# small catalog users use up their favourites early (draws are without replacement), so the
# held-out items are left to popularity and the golden set stops measuring personalisation.
_TASTE_SHARPNESS = 6.0
# Popularity still matters inside a favourite category, but less than globally.
_POPULARITY_EXPONENT_IN_CATEGORY = 0.5
_ZIPF_EXPONENT = 0.9
_FAVOURITES = (2, 3)
# Bound on the users x items affinity block computed at once, to bound memory on big catalogs.
_MAX_BLOCK = 4_000_000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A generated catalog, its users, their training interactions and the golden set.

    Training interactions are grouped by user and in time order within a user;
    ``train_indptr`` is the CSR row pointer, so user ``u``'s items are
    ``train_items[train_indptr[u]:train_indptr[u + 1]]``. ``golden_items[u]`` are the user's
    last :data:`GOLDEN_PER_USER` interactions, which are not among the training ones.
    """

    spec: CatalogSpec
    item_category: IntArray  # [items]
    item_price: FloatArray  # [items], in currency units, rounded to cents
    item_popularity: npt.NDArray[np.float64]  # [items], generative popularity, sums to 1
    item_latent: FloatArray  # [items, latent], hidden style
    user_pref: FloatArray  # [users, categories], hidden favourite-category weights
    user_taste: FloatArray  # [users, latent], hidden taste
    train_indptr: IntArray  # [users + 1]
    train_users: IntArray  # [interactions]
    train_items: IntArray  # [interactions]
    golden_items: IntArray  # [users, GOLDEN_PER_USER]

    _ARRAYS: ClassVar[tuple[str, ...]] = (
        "item_category",
        "item_price",
        "item_popularity",
        "item_latent",
        "user_pref",
        "user_taste",
        "train_indptr",
        "train_users",
        "train_items",
        "golden_items",
    )

    @property
    def n_items(self) -> int:
        """Number of items in the catalog."""
        return int(self.item_category.shape[0])

    @property
    def n_users(self) -> int:
        """Number of users."""
        return int(self.user_pref.shape[0])

    @property
    def n_categories(self) -> int:
        """Number of item categories."""
        return int(self.user_pref.shape[1])

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """All arrays by name, in the fixed order :meth:`digest` hashes them."""
        return {name: getattr(self, name) for name in self._ARRAYS}

    def digest(self) -> str:
        """SHA-256 (hex) over every array's name, dtype, shape and bytes, in a fixed order."""
        hasher = hashlib.sha256()
        for name, array in self.arrays().items():
            contiguous = np.ascontiguousarray(array)
            header = f"{name}:{contiguous.dtype.str}:{contiguous.shape};"
            hasher.update(header.encode())
            hasher.update(contiguous.tobytes())
        return hasher.hexdigest()


def generate(spec: CatalogSpec) -> Dataset:
    """Generate the catalog, users, interactions and golden set described by ``spec``.

    Deterministic: the same spec gives byte-identical arrays (see :meth:`Dataset.digest`).
    """
    spec = spec.resolved()
    rng = np.random.default_rng(spec.seed)
    n_items, n_users, n_cats = spec.items, spec.users, spec.categories

    # Catalog. Category sizes vary (Dirichlet) but every category gets at least one item.
    cat_share = rng.dirichlet(np.full(n_cats, 2.0))
    item_category = rng.choice(n_cats, size=n_items, p=cat_share)
    item_category[:n_cats] = np.arange(n_cats)
    item_category = rng.permutation(item_category).astype(np.int64)

    price_level = rng.normal(3.0, 1.0, size=n_cats)
    price_spread = rng.uniform(0.3, 0.8, size=n_cats)
    log_price = rng.normal(price_level[item_category], price_spread[item_category])
    item_price = np.round(np.exp(log_price), 2).clip(0.01).astype(np.float32)

    rank = rng.permutation(n_items)
    weight = 1.0 / np.power(rank + 1.0, _ZIPF_EXPONENT)
    item_popularity = weight / weight.sum()

    item_latent = _unit_rows(rng.normal(size=(n_items, _LATENT_DIM)))

    # Users: a few favourite categories, chosen with a bias toward big ones (Gumbel top-k
    # draws without replacement for all users at once).
    low_fav, high_fav = _FAVOURITES
    n_fav = np.minimum(rng.integers(low_fav, high_fav + 1, size=n_users), n_cats)
    keys = np.log(cat_share) + rng.gumbel(size=(n_users, n_cats))
    rank_in_row = np.argsort(np.argsort(-keys, axis=1), axis=1)
    favourite = rank_in_row < n_fav[:, None]
    raw_pref = rng.gamma(1.0, size=(n_users, n_cats)) * favourite
    user_pref = (raw_pref / raw_pref.sum(axis=1, keepdims=True)).astype(np.float32)
    user_taste = _unit_rows(rng.normal(size=(n_users, _LATENT_DIM)))

    lengths = rng.integers(EVENTS_PER_USER[0], EVENTS_PER_USER[1] + 1, size=n_users)
    lengths = np.minimum(lengths, n_items // 2)
    sequences = _draw_events(
        rng, item_category, item_popularity, item_latent, user_pref, user_taste, lengths
    )

    train_lengths = lengths - GOLDEN_PER_USER
    train_indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(train_lengths, out=train_indptr[1:])
    train_items = np.empty(int(train_indptr[-1]), dtype=np.int64)
    golden_items = np.empty((n_users, GOLDEN_PER_USER), dtype=np.int64)
    event_indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=event_indptr[1:])
    position = np.arange(sequences.size) - np.repeat(event_indptr[:-1], lengths)
    is_train = position < np.repeat(train_lengths, lengths)
    train_items[:] = sequences[is_train]
    golden_items[:] = sequences[~is_train].reshape(n_users, GOLDEN_PER_USER)
    train_users = np.repeat(np.arange(n_users, dtype=np.int64), train_lengths)

    return Dataset(
        spec=spec,
        item_category=item_category,
        item_price=item_price,
        item_popularity=item_popularity,
        item_latent=item_latent,
        user_pref=user_pref,
        user_taste=user_taste,
        train_indptr=train_indptr,
        train_users=train_users,
        train_items=train_items,
        golden_items=golden_items,
    )


def popular_items(dataset: Dataset, k: int) -> list[tuple[int, float]]:
    """The ``k`` items with the most training interactions, as ``(item_id, count)``.

    Ties go to the lower item id, so the list is deterministic.
    """
    if k < 1:
        raise InputError(f"k: expected a positive integer, got {k}")
    counts = np.bincount(dataset.train_items, minlength=dataset.n_items)
    order = np.argsort(-counts, kind="stable")[:k]
    return [(int(item), float(counts[item])) for item in order]


def _unit_rows(matrix: npt.NDArray[np.float64]) -> FloatArray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: FloatArray = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


def _draw_events(
    rng: np.random.Generator,
    item_category: IntArray,
    item_popularity: npt.NDArray[np.float64],
    item_latent: FloatArray,
    user_pref: FloatArray,
    user_taste: FloatArray,
    lengths: IntArray,
) -> IntArray:
    """Draw each user's distinct interactions, in time order, concatenated user by user.

    Vectorised over users: a per-user Python loop costs seconds at the default size. Keeping
    the first occurrences of i.i.d. draws is exactly sampling without replacement, in order.
    """
    n_users, n_cats = user_pref.shape
    n_items = item_category.shape[0]
    # Oversample, then keep each user's first occurrences: distinct items in draw order.
    draws = 3 * int(lengths.max())
    from_popularity = rng.random((n_users, draws)) < _POPULARITY_SHARE
    picks = np.empty((n_users, draws), dtype=np.int64)

    global_cdf = np.cumsum(item_popularity)
    global_cdf /= global_cdf[-1]
    picks[from_popularity] = np.minimum(
        np.searchsorted(global_cdf, rng.random(int(from_popularity.sum())), side="right"),
        n_items - 1,
    )

    own_user, own_slot = np.nonzero(~from_popularity)
    own_category = _sample_rows(np.cumsum(user_pref, axis=1, dtype=np.float64), own_user, rng)
    pop_weight = np.power(item_popularity, _POPULARITY_EXPONENT_IN_CATEGORY)
    for category in range(n_cats):
        members = np.flatnonzero(item_category == category)
        fans = np.flatnonzero(user_pref[:, category] > 0)
        chosen = np.flatnonzero(own_category == category)
        block = max(1, _MAX_BLOCK // members.size)
        for start in range(0, fans.size, block):
            group = fans[start : start + block]
            # Fans are sorted, so this group's draws are those of users in its id range.
            mine = chosen[(own_user[chosen] >= group[0]) & (own_user[chosen] <= group[-1])]
            if mine.size == 0:
                continue
            # Within the category: popularity x taste match, one distribution per fan.
            affinity = user_taste[group] @ item_latent[members].T
            weight = np.exp(_TASTE_SHARPNESS * affinity.astype(np.float64)) * pop_weight[members]
            row_of_fan = np.full(n_users, -1, dtype=np.int64)
            row_of_fan[group] = np.arange(group.size)
            picked = _sample_rows(np.cumsum(weight, axis=1), row_of_fan[own_user[mine]], rng)
            picks[own_user[mine], own_slot[mine]] = members[picked]

    order = np.argsort(picks, axis=1, kind="stable")
    ordered = np.take_along_axis(picks, order, axis=1)
    first_sorted = np.ones_like(ordered, dtype=bool)
    first_sorted[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = np.empty_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    keep = first & (np.cumsum(first, axis=1) <= lengths[:, None])

    short = np.flatnonzero(keep.sum(axis=1) < lengths)
    if short.size == 0:
        return picks[keep]
    # A user with sharp taste in a small catalog can repeat items so often that the
    # oversampled draws hold too few distinct ones. Continue their sequences exactly:
    # Gumbel top-k over the user's full distribution is sampling without replacement.
    rows = [picks[user][keep[user]] for user in range(n_users)]
    for user in short:
        have = rows[user]
        need = int(lengths[user]) - have.size
        mixture = _POPULARITY_SHARE * item_popularity
        favs = np.flatnonzero(user_pref[user])
        for fav in favs:
            members = np.flatnonzero(item_category == fav)
            affinity = item_latent[members] @ user_taste[user]
            weight = np.exp(_TASTE_SHARPNESS * affinity.astype(np.float64)) * pop_weight[members]
            share = (1.0 - _POPULARITY_SHARE) * float(user_pref[user, fav])
            mixture[members] += share * weight / weight.sum()
        keys = np.log(mixture) + rng.gumbel(size=n_items)
        keys[have] = -np.inf
        extra = np.argsort(-keys, kind="stable")[:need]
        rows[user] = np.concatenate([have, extra])
    return np.concatenate(rows)


def _sample_rows(
    cumulative: npt.NDArray[np.float64], rows: IntArray, rng: np.random.Generator
) -> IntArray:
    """For each entry of ``rows``, draw a column of ``cumulative[row]`` (an unnormalised CDF).

    One searchsorted over all rows at once: row ``r``'s CDF is normalised to [0, 1] and shifted
    by ``r``, which makes the flattened matrix non-decreasing.
    """
    n_rows, n_cols = cumulative.shape
    normalised = cumulative / cumulative[:, -1:]
    normalised[:, -1] = 1.0
    shifted = (normalised + np.arange(n_rows)[:, None]).ravel()
    targets = rows + rng.random(rows.size)
    flat = np.searchsorted(shifted, targets, side="right")
    columns: IntArray = np.minimum(flat - rows * n_cols, n_cols - 1).astype(np.int64)
    return columns
