"""The benchmark's interleaved comparison (`bench.phases.compare`): the order turns each round, ratios are paired."""

from __future__ import annotations

from typing import Any

import pytest
from bench import phases
from bench.phases import Plan, compare
from bench.workloads import Fixture, Tally, Target

# Ops/s per round: the machine's drift moves both sides; the gateway's ratio within each round is 0.98, 0.85, 0.80.
_OPS = {"mlflow": (100.0, 200.0, 150.0), "gateway": (98.0, 170.0, 120.0), "floor": (100.0, 190.0, 150.0)}
_TARGETS = tuple(Target(name, f"http://127.0.0.1:9/{name}") for name in ("mlflow", "gateway", "floor"))


def _measured(**values: float) -> dict[str, Any]:
    return {**values, "errors": 0, "error_samples": [], "cpu_ms_per_op": {}}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every measurement `compare` asks for, in order, as (level, target); each answered from `_OPS`."""
    made: list[tuple[str, str]] = []
    rounds_seen: dict[str, int] = {}

    def latency(target: Target, *_: object) -> dict[str, Any]:
        made.append(("c1", target.name))
        return _measured(p50_ms=1000.0 / _OPS[target.name][rounds_seen.get(target.name, 0)], p99_ms=1.0)

    def throughput(target: Target, *_: object) -> dict[str, Any]:
        made.append(("c8", target.name))
        round_index = rounds_seen.get(target.name, 0)
        rounds_seen[target.name] = round_index + 1
        return _measured(ops_per_s=_OPS[target.name][round_index], p50_ms=1.0)

    monkeypatch.setattr(phases, "WORKLOADS", {"artifact": lambda *_: None})
    monkeypatch.setattr(phases, "warm_up", lambda *_: Tally())
    monkeypatch.setattr(phases, "measure_latency", latency)
    monkeypatch.setattr(phases, "measure_throughput", throughput)
    return made


def _compare() -> dict[str, Any]:
    plan = Plan(rounds=3, latency_counts={"artifact": 1}, throughput_seconds=0.0, warmup=0)
    mlflow, gateway, floor = _TARGETS
    return compare("gateway", mlflow, gateway, lambda _: Fixture("1", "run"), plan, references=(floor,))


def test_the_order_of_the_targets_turns_by_one_place_each_round(calls: list[tuple[str, str]]) -> None:
    _compare()

    turns = [("mlflow", "gateway", "floor"), ("gateway", "floor", "mlflow"), ("floor", "mlflow", "gateway")]
    expected = [(level, name) for turn in turns for level in ("c1", "c8") for name in turn]
    assert calls == expected


@pytest.mark.usefixtures("calls")
def test_ratios_are_medians_of_the_ratios_within_each_round() -> None:
    workload = _compare()["workloads"]["artifact"]

    # Within rounds: 0.98, 0.85, 0.80 -> 0.85. The medians over the run (120 / 150) would say 0.80.
    assert workload["ratios"]["ops_per_s"] == pytest.approx(0.85)
    assert workload["summary"]["gateway"]["ops_per_s"] / workload["summary"]["mlflow"]["ops_per_s"] == 0.8
    # p50 is 1000 / ops: the gateway's within-round latency ratios are 1/0.98, 1/0.85, 1/0.80 -> 1/0.85.
    assert workload["ratios"]["p50"] == pytest.approx(1 / 0.85)
    # The floor: 1.0, 0.95, 1.0 -> 1.0.
    assert workload["reference_ratios"]["floor"]["ops_per_s"] == pytest.approx(1.0)
