"""A replica's cache tier against a real redis-server: cache-aside, keyed by model digest, and
answers without Redis when it is frozen or gone."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Coroutine, Iterator
from typing import Any

import numpy as np
import pytest

from drillkit.observe.records import Records, RequestRecord
from drillkit.scoring.analyze import cache_recovery
from drillkit.stacks.recommender.cache import CacheConfig, ReplicaCache
from tests.redis_server import redis_server

DIGEST = "d" * 64


@pytest.fixture
def redis_port() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with redis_server("--appendonly", "no") as found:
        yield found


def run(coro: Coroutine[Any, Any, list[str]]) -> list[str]:
    return asyncio.run(coro)


@pytest.mark.zones
def test_cache_aside_hits_after_a_miss_and_never_across_models(
    redis_port: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, _ = redis_port

    async def scenario() -> list[str]:
        cache = ReplicaCache(CacheConfig(f"redis://127.0.0.1:{port}", budget=1.0))
        seen: list[str] = []
        first = await cache.lookup(DIGEST, 7, 10)
        seen.append(first.outcome)
        vector = np.arange(4, dtype=np.float32)
        cache.store(DIGEST, 7, 10, {"items": [[3, 0.5]], "cold_start": False}, vector)
        await asyncio.sleep(0.2)  # the write-back runs in the background
        again = await cache.lookup(DIGEST, 7, 10)
        seen.append(again.outcome)
        assert again.recommendation == {"items": [[3, 0.5]], "cold_start": False}
        other_k = await cache.lookup(DIGEST, 7, 20)  # features cached, answer not
        seen.append(other_k.outcome)
        assert other_k.vector is not None and other_k.vector.tolist() == [0, 1, 2, 3]
        other_model = await cache.lookup("e" * 64, 7, 10)
        seen.append(other_model.outcome)
        assert cache.status()["hit_ratio"] == pytest.approx(1 / 4)
        await cache.close()
        return seen

    assert run(scenario()) == ["miss", "hit", "miss", "miss"]


@pytest.mark.zones
def test_a_frozen_or_dead_redis_is_bypassed_within_the_budget(
    redis_port: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = redis_port

    async def scenario() -> list[str]:
        cache = ReplicaCache(CacheConfig(f"redis://127.0.0.1:{port}", budget=0.05, cooldown=0.2))
        outcomes: list[str] = [(await cache.lookup(DIGEST, 1, 10)).outcome]
        proc.send_signal(signal.SIGSTOP)  # frozen: connections stay open, nothing answers
        # Without the budget this lookup would wait for Redis forever.
        outcomes.append((await cache.lookup(DIGEST, 2, 10)).outcome)
        outcomes.append((await cache.lookup(DIGEST, 3, 10)).outcome)  # cooling down: skipped
        assert cache.status()["state"] == "down"
        proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.3)
        outcomes.append((await cache.lookup(DIGEST, 4, 10)).outcome)
        assert cache.status()["state"] == "up"
        proc.kill()
        proc.wait()
        await asyncio.sleep(0.3)
        outcomes.append((await cache.lookup(DIGEST, 5, 10)).outcome)
        await cache.close()
        return outcomes

    assert run(scenario()) == ["miss", "bypass", "bypass", "miss", "bypass"]


def _records(cache: list[tuple[float, str]]) -> Records:
    rows = [RequestRecord(t, 1.0, 200, zone="a", cache=c) for t, c in cache]
    return Records.build(rows, t0=0.0, verified_digests=None)


def test_the_cache_recovers_when_its_hit_ratio_is_back_to_ninety_percent_of_before() -> None:
    # Before the fault (t < 10): 60 % hits. Healed at 12; from 14 on 60 % hits again.
    rows = []
    for i in range(2000):
        t = i * 0.01
        hit = (i % 10) < 6 if (t < 10 or t >= 14) else False
        rows.append((t, "hit" if hit else "miss"))
    before, back = cache_recovery(_records(rows), injected=10.0, healed=12.0, duration=20.0)
    assert before == pytest.approx(0.6)
    # The first 2 s window from the heal on that reaches 54 %: it starts just past 14 - 0.2.
    assert back is not None and 15.7 <= back <= 16.0


def test_a_cache_that_never_comes_back_has_no_recovery_and_no_cache_has_none() -> None:
    rows = [(i * 0.01, "hit" if i < 1000 else "miss") for i in range(2000)]
    assert cache_recovery(_records(rows), injected=10.0, healed=12.0, duration=20.0) == (1.0, None)
    plain = Records.build([RequestRecord(1.0, 1.0, 200)], t0=0.0, verified_digests=None)
    assert cache_recovery(plain, injected=0.5, healed=0.8, duration=2.0) == (None, None)
