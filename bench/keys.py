"""The `keys` benchmark: KeyStore verifications per second, in this process, on one thread, SQLite in a temp dir.

This is the only benchmark that imports `hokusai.server` (the HTTP benchmarks talk to separate processes).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.stats import median

KEY_COUNT = 100


def _rate(func: Callable[[str], object], keys: list[str], iterations: int) -> tuple[float, float, int]:
    """Calls of `func(key)` per wall second and per CPU second of this thread (the machine is shared: CPU time
    is what "one core" means), over `iterations` calls cycling through `keys`; and how many failed."""
    failures = 0
    count = len(keys)
    wall, cpu = time.perf_counter(), time.thread_time()
    for i in range(iterations):
        if func(keys[i % count]) is None:
            failures += 1
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return iterations / wall, iterations / cpu, failures


def run_keys(*, quick: bool, rounds: int) -> dict[str, object]:
    from hokusai.server.db import Database
    from hokusai.server.keys import KeyStore

    cached_iterations = 50_000 if quick else 300_000
    uncached_iterations = 500 if quick else 3_000
    with tempfile.TemporaryDirectory(prefix="hokusai-bench-keys-") as tmp:
        database = Database(f"sqlite:///{Path(tmp) / 'keys.db'}")
        try:
            pepper = os.urandom(32)
            # A long TTL keeps the cache warm for the whole measurement: this is the hot path alone.
            warm = KeyStore(database, pepper, cache_ttl=3600.0)
            keys = [
                warm.create(owner=f"user{i}", name="bench", scopes=frozenset({"read", "write"})).secret
                for i in range(KEY_COUNT)
            ]
            for key in keys:
                warm.verify(key)
            # TTL 0: every verify misses the cache and looks the key up in the database.
            cold = KeyStore(database, pepper, cache_ttl=0.0)
            cached, cached_cpu, uncached, uncached_cpu, failures = [], [], [], [], 0
            for _ in range(rounds):
                rate, cpu_rate, failed = _rate(warm.verify_cached, keys, cached_iterations)
                cached.append(rate)
                cached_cpu.append(cpu_rate)
                failures += failed
                rate, cpu_rate, failed = _rate(cold.verify, keys, uncached_iterations)
                uncached.append(rate)
                uncached_cpu.append(cpu_rate)
                failures += failed
        finally:
            database.close()
    return {
        "keys": KEY_COUNT,
        "cached_iterations": cached_iterations,
        "uncached_iterations": uncached_iterations,
        "cached_per_s_rounds": cached,
        "uncached_per_s_rounds": uncached,
        "cached_per_cpu_s_rounds": cached_cpu,
        "uncached_per_cpu_s_rounds": uncached_cpu,
        "cached_per_s": median(cached),
        "uncached_per_s": median(uncached),
        "cached_per_cpu_s": median(cached_cpu),
        "uncached_per_cpu_s": median(uncached_cpu),
        "cached_us": 1e6 / median(cached_cpu),
        "uncached_us": 1e6 / median(uncached_cpu),
        "errors": failures,
    }
