"""The HTTP workloads: small requests (latency at c=1, throughput at c=8) and large artifact transfers.

Every request is checked (status 200, and the artifact bytes that come back); failures are counted, never raised.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from bench.stats import percentile

ARTIFACT_SMALL_BYTES = 64 * 1024
CHUNK_BYTES = 1024 * 1024
REQUEST_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=300.0, pool=30.0)
_MAX_ERROR_SAMPLES = 5


class OpError(Exception):
    """A request answered, but not as expected."""


@dataclass(frozen=True)
class Target:
    """One way to reach MLflow: `base` is what an MLflow client would use as its tracking URI."""

    name: str
    base: str
    headers: dict[str, str] = field(default_factory=dict)
    pid: int | None = None  # the process whose RSS is watched during large transfers
    # (label, pid, with descendants): the server processes whose CPU time is charged to this target's requests
    cpu: tuple[tuple[str, int, bool], ...] = ()

    def client(self) -> httpx.Client:
        # One keep-alive connection per client; each worker thread gets its own client.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=60)
        return httpx.Client(
            base_url=self.base, headers=self.headers, timeout=REQUEST_TIMEOUT, limits=limits, trust_env=False
        )


@dataclass
class Fixture:
    experiment_id: str
    run_id: str


def cpu_seconds(target: Target) -> dict[str, float]:
    """User + system CPU seconds used so far by each labelled server process (and its descendants if asked).

    Also this process's own, as `client`: the load generator runs on the same cores as the servers it measures.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    totals: dict[str, float] = {"client": own.ru_utime + own.ru_stime}
    for label, pid, recursive in target.cpu:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)] if recursive else [root]
        except psutil.Error:
            continue
        for proc in family:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            totals[label] = totals.get(label, 0.0) + times.user + times.system
    return totals


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {label: after[label] - before.get(label, 0.0) for label in after}


def cpu_ms_per_op(before: dict[str, float], after: dict[str, float], ops: int) -> dict[str, float]:
    if ops <= 0:
        return {}
    return {label: seconds * 1000 / ops for label, seconds in cpu_delta(before, after).items()}


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code != 200:
        raise OpError(f"{what}: {response.status_code} {response.text[:200]!r}")
    return response


def prepare(target: Target) -> Fixture:
    """An experiment and a run owned by the target's identity, for the run and artifact workloads."""
    with target.client() as client:
        name = f"bench-{target.name}-{uuid.uuid4().hex[:8]}"
        created = _check(client.post("/api/2.0/mlflow/experiments/create", json={"name": name}), "experiments/create")
        experiment_id = str(created.json()["experiment_id"])
        run = _check(
            client.post(
                "/api/2.0/mlflow/runs/create",
                json={"experiment_id": experiment_id, "start_time": int(time.time() * 1000)},
            ),
            "runs/create",
        )
        return Fixture(experiment_id, run.json()["run"]["info"]["run_id"])


def artifact_path(fixture: Fixture, name: str) -> str:
    return f"/api/2.0/mlflow-artifacts/artifacts/{fixture.experiment_id}/{fixture.run_id}/artifacts/{name}"


# --- small-request workloads ---------------------------------------------------------------------------------

Op = Callable[[httpx.Client, Fixture, int, int], None]
_SMALL_PAYLOAD = os.urandom(ARTIFACT_SMALL_BYTES)


def op_search(client: httpx.Client, _fixture: Fixture, _worker: int, _i: int) -> None:
    response = _check(client.post("/api/2.0/mlflow/experiments/search", json={"max_results": 50}), "search")
    if "experiments" not in response.json():
        raise OpError("search: no experiments in the answer")


def op_run(client: httpx.Client, fixture: Fixture, _worker: int, i: int) -> None:
    now = int(time.time() * 1000)
    created = _check(
        client.post("/api/2.0/mlflow/runs/create", json={"experiment_id": fixture.experiment_id, "start_time": now}),
        "runs/create",
    )
    run_id = created.json()["run"]["info"]["run_id"]
    metric = {"run_id": run_id, "key": "loss", "value": 1.0 / (i + 1), "timestamp": now, "step": i}
    _check(client.post("/api/2.0/mlflow/runs/log-metric", json=metric), "runs/log-metric")


def op_artifact(client: httpx.Client, fixture: Fixture, worker: int, _i: int) -> None:
    path = artifact_path(fixture, f"small-w{worker}.bin")
    _check(client.put(path, content=_SMALL_PAYLOAD), "artifact PUT")
    got = _check(client.get(path), "artifact GET")
    if got.content != _SMALL_PAYLOAD:
        raise OpError(f"artifact GET: {len(got.content)} bytes differ from the {len(_SMALL_PAYLOAD)} sent")


WORKLOADS: dict[str, Op] = {"search": op_search, "run": op_run, "artifact": op_artifact}
WORKLOAD_TITLES = {
    "search": "experiments/search",
    "run": "runs/create + runs/log-metric",
    "artifact": "64 KiB artifact PUT + GET",
}


@dataclass
class Tally:
    errors: int = 0
    samples: list[str] = field(default_factory=list)

    def record(self, exc: Exception) -> None:
        self.errors += 1
        if len(self.samples) < _MAX_ERROR_SAMPLES:
            self.samples.append(f"{type(exc).__name__}: {exc}"[:300])


def warm_up(target: Target, op: Op, fixture: Fixture, count: int) -> Tally:
    tally = Tally()
    with target.client() as client:
        for i in range(count):
            try:
                op(client, fixture, 0, i)
            except (httpx.HTTPError, OpError, KeyError, ValueError) as exc:
                tally.record(exc)
    return tally


def measure_latency(target: Target, op: Op, fixture: Fixture, count: int) -> dict[str, Any]:
    """`count` sequential operations on one keep-alive connection: p50/p99/mean in ms."""
    tally = Tally()
    latencies: list[float] = []
    with target.client() as client:
        _check(client.get("/health"), "health")  # open the connection outside the measurement
        cpu_before = cpu_seconds(target)
        for i in range(count):
            started = time.perf_counter()
            try:
                op(client, fixture, 0, i)
            except (httpx.HTTPError, OpError, KeyError, ValueError) as exc:
                tally.record(exc)
                continue
            latencies.append((time.perf_counter() - started) * 1000)
        cpu = cpu_ms_per_op(cpu_before, cpu_seconds(target), len(latencies))
    return {
        "n": len(latencies),
        "cpu_ms_per_op": cpu,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": sum(latencies) / len(latencies) if latencies else float("nan"),
        "errors": tally.errors,
        "error_samples": tally.samples,
    }


def measure_throughput(target: Target, op: Op, fixture: Fixture, concurrency: int, duration: float) -> dict[str, Any]:
    """`concurrency` threads, one keep-alive client each, looping for `duration` seconds: completed ops/s."""
    tally = Tally()
    lock = threading.Lock()
    done = [0] * concurrency
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    window: dict[str, float] = {}
    cpu_before: dict[str, float] = {}

    def open_window() -> None:  # run by the last thread to reach the barrier, before any is released
        cpu_before.update(cpu_seconds(target))
        window["started"] = time.perf_counter()
        window["deadline"] = window["started"] + duration

    ready = threading.Barrier(concurrency + 1, action=open_window)

    def worker(index: int) -> None:
        with target.client() as client:
            try:
                _check(client.get("/health"), "health")  # connect before the clock starts
            except (httpx.HTTPError, OpError) as exc:
                with lock:
                    tally.record(exc)
            ready.wait()
            deadline = window["deadline"]
            i = 1
            while True:
                started = time.perf_counter()
                if started >= deadline:
                    break
                try:
                    op(client, fixture, index, i)
                except (httpx.HTTPError, OpError, KeyError, ValueError) as exc:
                    with lock:
                        tally.record(exc)
                else:
                    done[index] += 1
                    latencies[index].append((time.perf_counter() - started) * 1000)
                i += 1

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - window["started"]
    cpu = cpu_ms_per_op(cpu_before, cpu_seconds(target), sum(done))
    flat = [value for per_worker in latencies for value in per_worker]
    return {
        "ops": sum(done),
        "seconds": elapsed,
        "ops_per_s": sum(done) / elapsed if elapsed > 0 else float("nan"),
        "cpu_ms_per_op": cpu,
        "p50_ms": percentile(flat, 50),
        "p99_ms": percentile(flat, 99),
        "errors": tally.errors,
        "error_samples": tally.samples,
    }


# --- large transfers -------------------------------------------------------------------------------------------


class RssSampler:
    """Samples one process's RSS every `interval` seconds in a thread; `growth_mb` is peak minus baseline."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self._process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1e6


_BLOCK = os.urandom(CHUNK_BYTES)


def _body(size: int) -> Iterator[bytes]:
    view = memoryview(_BLOCK)
    remaining = size
    while remaining > 0:
        step = min(remaining, CHUNK_BYTES)
        yield bytes(view[:step]) if step < CHUNK_BYTES else _BLOCK
        remaining -= step


def _sampler(target: Target) -> RssSampler | None:
    return RssSampler(target.pid) if target.pid is not None else None


def _record_transfer(
    result: dict[str, Any], direction: str, size: int, seconds: float, cpu_s: dict[str, float]
) -> None:
    result[f"{direction}_s"] = seconds
    result[f"{direction}_mb_s"] = size / 1e6 / seconds
    result[f"{direction}_cpu_s"] = cpu_s


def transfer(target: Target, fixture: Fixture, size: int, name: str) -> dict[str, Any]:
    """Upload `size` bytes (streamed, Content-Length set), then download them to /dev/null; MB/s and RSS growth."""
    result: dict[str, Any] = {"bytes": size}
    errors = Tally()
    path = artifact_path(fixture, name)
    with target.client() as client:
        _check(client.get("/health"), "warm-up")
        sampler = _sampler(target)
        cpu_before = cpu_seconds(target)
        try:
            with sampler or contextlib.nullcontext():
                started = time.perf_counter()
                response = client.put(path, content=_body(size), headers={"Content-Length": str(size)})
                seconds = time.perf_counter() - started
            _check(response, "large PUT")
            _record_transfer(result, "upload", size, seconds, cpu_delta(cpu_before, cpu_seconds(target)))
        except (httpx.HTTPError, OpError) as exc:
            errors.record(exc)
        if sampler:
            result["upload_rss_growth_mb"] = sampler.growth_mb
        sampler = _sampler(target)
        received = 0
        cpu_before = cpu_seconds(target)
        try:
            with sampler or contextlib.nullcontext(), open(os.devnull, "wb") as sink:
                started = time.perf_counter()
                with client.stream("GET", path) as response:
                    if response.status_code != 200:
                        response.read()
                        _check(response, "large GET")
                    for chunk in response.iter_raw():
                        received += len(chunk)
                        sink.write(chunk)
                seconds = time.perf_counter() - started
            if received != size:
                raise OpError(f"large GET: received {received} of {size} bytes")
            _record_transfer(result, "download", size, seconds, cpu_delta(cpu_before, cpu_seconds(target)))
        except (httpx.HTTPError, OpError) as exc:
            errors.record(exc)
        if sampler:
            result["download_rss_growth_mb"] = sampler.growth_mb
    result["errors"] = errors.errors
    result["error_samples"] = errors.samples
    return result
