"""What a reference recommender stack is made of: its catalog, its gateway's failover
settings, its replicas. The one place their defaults and limits live: the scenario format,
the CLI's options, the gateway process and the preset all read them from here.

Standard library only, so that validating a scenario imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drillkit.errors import InputError

__all__ = [
    "CATALOG_LIMITS",
    "GENERATOR_VERSION",
    "MAX_REPLICAS",
    "ROLE_MODEL_STORE",
    "CatalogSpec",
    "GatewaySettings",
    "RecommenderSpec",
]

#: Most replicas one stack may have.
MAX_REPLICAS = 16

#: The pseudo-target of ``corrupt_model`` meaning every copy of the model store.
ROLE_MODEL_STORE = "model-store"

#: Bumped whenever the data generator changes, so cached artifacts keyed by
#: :meth:`CatalogSpec.key` are rebuilt rather than silently reused.
GENERATOR_VERSION = 1

#: Inclusive bounds of the catalog's numbers.
CATALOG_LIMITS: dict[str, tuple[int, int]] = {
    "items": (100, 2_000_000),
    "dim": (8, 1024),
    "seed": (0, 2**63 - 1),
    "users": (10, 2_000_000),
}


def _check_int(name: str, value: object, low: int, high: int, *, zero_ok: bool = False) -> int:
    # bool is an int subclass, and `items: true` in YAML must not become one item.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"catalog.{name}: expected an integer, got {value!r}")
    number = int(value)
    if zero_ok and number == 0:
        return number
    if not low <= number <= high:
        derived = " (or 0 to derive it from items)" if zero_ok else ""
        raise InputError(
            f"catalog.{name}: expected an integer from {low} to {high}{derived}, got {number}"
        )
    return number


@dataclass(frozen=True)
class CatalogSpec:
    """What synthetic catalog to generate.

    ``users`` and ``categories`` may be 0, meaning "derive from ``items``": half as many
    users as items (at most 50,000) and one category per 40 items (4 to 50). Use
    :meth:`resolved` to get the spec with those filled in. Invalid values raise
    :class:`~drillkit.errors.InputError` on construction.
    """

    items: int = 20_000
    dim: int = 64
    seed: int = 42
    users: int = 0
    categories: int = 0

    def __post_init__(self) -> None:
        for name in ("items", "dim", "seed"):
            low, high = CATALOG_LIMITS[name]
            _check_int(name, getattr(self, name), low, high)
        low, high = CATALOG_LIMITS["users"]
        _check_int("users", self.users, low, high, zero_ok=True)
        # Each category needs a handful of items or the per-category price and taste
        # structure degenerates.
        _check_int("categories", self.categories, 2, max(2, self.items // 10), zero_ok=True)

    def resolved(self) -> CatalogSpec:
        """Return this spec with ``users`` and ``categories`` derived where they are 0."""
        users = self.users or min(self.items // 2, 50_000)
        categories = self.categories or max(4, min(50, self.items // 40))
        return dataclasses.replace(self, users=users, categories=categories)

    def key(self) -> str:
        """A short, stable hex digest of the resolved spec and the generator version.

        Two specs that resolve to the same catalog share a key, so it is safe as a cache key.
        """
        fields = dataclasses.asdict(self.resolved())
        fields["generator"] = GENERATOR_VERSION
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GatewaySettings:
    """Failover settings of the gateway; a drill may turn each off to show its effect.

    Times are seconds. See the gateway's module docstring for what each one does.
    """

    check_interval: float = 0.2
    check_timeout: float = 0.2
    fall: int = 2
    rise: int = 2
    passive_ejection: bool = True
    retries: int = 2
    try_timeout: float = 0.3
    deadline: float = 1.0
    max_outstanding: int = 32  # per replica; beyond it the gateway sheds load (0: no cap)
    fallback: bool = True  # popular-items answers (degraded) when no replica can answer

    def args(self) -> list[str]:
        """The gateway process's command-line options for these settings (the fallback
        list itself is passed separately: it is a file)."""
        out = [
            "--check-interval", str(self.check_interval),
            "--check-timeout", str(self.check_timeout),
            "--fall", str(self.fall),
            "--rise", str(self.rise),
            "--retries", str(self.retries),
            "--try-timeout", str(self.try_timeout),
            "--deadline", str(self.deadline),
            "--max-outstanding", str(self.max_outstanding),
        ]  # fmt: skip
        if not self.passive_ejection:
            out.append("--no-passive-ejection")
        return out


@dataclass(frozen=True)
class RecommenderSpec:
    """A reference recommender stack: ``replicas`` model servers behind one gateway."""

    replicas: int = 3
    catalog: CatalogSpec = field(default_factory=CatalogSpec)
    gpu: str = "auto"  # auto | on | off
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    store: Path | None = None  # serve this store instead of a copy of the built artifacts

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not 1 <= self.replicas <= MAX_REPLICAS:
            raise InputError(f"replicas: expected 1..{MAX_REPLICAS}, got {self.replicas}")
        if self.gpu not in ("auto", "on", "off"):
            raise InputError(f"gpu: expected auto, on or off, got {self.gpu!r}")

    def service_names(self) -> list[str]:
        return [*(f"replica-{i}" for i in range(1, self.replicas + 1)), "gateway"]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["store"] = str(self.store) if self.store is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecommenderSpec:
        return cls(
            replicas=int(data["replicas"]),
            catalog=CatalogSpec(**data["catalog"]),
            gpu=str(data["gpu"]),
            gateway=GatewaySettings(**data["gateway"]),
            store=Path(data["store"]) if data.get("store") else None,
        )
