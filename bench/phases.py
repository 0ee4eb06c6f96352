"""Interleaved A/B comparisons: each round measures every target on every workload, in an order that turns by one
place each round; a ratio is the median over rounds of the ratio measured within each round."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.stats import fmt, median, ratio
from bench.workloads import WORKLOADS, Fixture, Target, measure_latency, measure_throughput, transfer, warm_up


@dataclass(frozen=True)
class Plan:
    rounds: int
    latency_counts: dict[str, int]  # per workload, at c=1
    throughput_seconds: float  # per measurement, at c=8
    warmup: int
    concurrency: int = 8


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"{time.monotonic() - _T0:6.0f}s {message}", file=sys.stderr, flush=True)


def compare(
    phase: str,
    baseline: Target,
    candidate: Target,
    fixtures: Callable[[Target], Fixture],
    plan: Plan,
    references: tuple[Target, ...] = (),
) -> dict[str, Any]:
    """Latency at c=1 and throughput at c=`plan.concurrency` for every workload, A and B interleaved.

    `references` are measured in the same rounds as A and B, and summarised against A like B is; they carry no
    target (see bench/floor_proxy.py). The order of the targets turns by one place each round, so that none is always
    measured first, or always right after another's c=8 load.
    """
    targets = (baseline, candidate, *references)
    out: dict[str, Any] = {
        "baseline": baseline.name,
        "candidate": candidate.name,
        "references": [target.name for target in references],
        "plan": plan.__dict__,
    }
    for target in targets:
        fixtures(target)
    warm_errors: dict[str, dict[str, int]] = {name: {} for name in WORKLOADS}
    for name, op in WORKLOADS.items():
        for target in targets:
            tally = warm_up(target, op, fixtures(target), plan.warmup)
            warm_errors[name][target.name] = tally.errors
            if tally.errors:
                log(f"  [{phase}] warm-up {name} on {target.name}: {tally.errors} errors, e.g. {tally.samples[0]}")
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in WORKLOADS}
    for round_index in range(plan.rounds):
        turn = round_index % len(targets)
        in_turn = targets[turn:] + targets[:turn]
        for name, op in WORKLOADS.items():
            measured: dict[str, dict[str, Any]] = {target.name: {} for target in targets}
            for target in in_turn:
                result = measure_latency(target, op, fixtures(target), plan.latency_counts[name])
                measured[target.name]["c1"] = result
                log(
                    f"  [{phase}] round {round_index + 1} {name:8} c=1 {target.name:10} "
                    f"p50 {fmt(result['p50_ms'])} ms  p99 {fmt(result['p99_ms'])} ms  errors {result['errors']}"
                )
            for target in in_turn:
                result = measure_throughput(target, op, fixtures(target), plan.concurrency, plan.throughput_seconds)
                measured[target.name]["c8"] = result
                log(
                    f"  [{phase}] round {round_index + 1} {name:8} c={plan.concurrency} {target.name:10} "
                    f"{fmt(result['ops_per_s'], 1)} ops/s  errors {result['errors']}"
                )
            rounds[name].append(measured)
    names = [target.name for target in targets]
    out["workloads"] = {name: _summarise(per_round, names, warm_errors[name]) for name, per_round in rounds.items()}
    return out


def _cpu(per_round: list[dict[str, Any]], target: str, level: str) -> dict[str, float]:
    labels = {label for r in per_round for label in r[target][level]["cpu_ms_per_op"]}
    return {
        label: median([r[target][level]["cpu_ms_per_op"].get(label, math.nan) for r in per_round]) for label in labels
    }


def round_ratios(per_round: list[dict[str, Any]], baseline: str, candidate: str, level: str, key: str) -> list[float]:
    """`candidate` over `baseline` within each round: what the `single rounds` column shows, and what a ratio is the
    median of. Measured seconds apart, so a slow drift of the whole machine during a run cannot move it."""
    return [ratio(measured[candidate][level][key], measured[baseline][level][key]) for measured in per_round]


def _summarise(per_round: list[dict[str, Any]], names: list[str], warm_errors: dict[str, int]) -> dict[str, Any]:
    """Medians over rounds per target; the candidate's (`names[1]`) and each reference's ratios to `names[0]`, each
    the median of the per-round ratios."""
    summary: dict[str, dict[str, Any]] = {}
    for target in names:
        summary[target] = {
            "p50_ms": median([r[target]["c1"]["p50_ms"] for r in per_round]),
            "p99_ms": median([r[target]["c1"]["p99_ms"] for r in per_round]),
            "ops_per_s": median([r[target]["c8"]["ops_per_s"] for r in per_round]),
            "c8_p50_ms": median([r[target]["c8"]["p50_ms"] for r in per_round]),
            "cpu_ms_per_op_c1": _cpu(per_round, target, "c1"),
            "cpu_ms_per_op_c8": _cpu(per_round, target, "c8"),
            "errors": warm_errors.get(target, 0)
            + sum(r[target]["c1"]["errors"] + r[target]["c8"]["errors"] for r in per_round),
            "error_samples": [s for r in per_round for lv in ("c1", "c8") for s in r[target][lv]["error_samples"]][:5],
        }
    a, b, *references = names

    def ratios(target: str) -> dict[str, float]:
        return {
            "p50": median(round_ratios(per_round, a, target, "c1", "p50_ms")),
            "p99": median(round_ratios(per_round, a, target, "c1", "p99_ms")),
            "ops_per_s": median(round_ratios(per_round, a, target, "c8", "ops_per_s")),
        }

    return {
        "rounds": per_round,
        "summary": summary,
        "ratios": ratios(b),
        "reference_ratios": {reference: ratios(reference) for reference in references},
    }


def transfer_ratios(per_round: list[dict[str, Any]], baseline: str, candidate: str, key: str) -> list[float]:
    """`candidate` over `baseline` within each round in which both measured `key` (a failed transfer has none)."""
    return [
        ratio(measured[candidate][key], measured[baseline][key])
        for measured in per_round
        if key in measured[baseline] and key in measured[candidate]
    ]


def compare_transfers(
    direct: Target,
    gateway: Target,
    fixtures: Callable[[Target], Fixture],
    size: int,
    rounds: int,
    references: tuple[Target, ...] = (),
) -> dict[str, Any]:
    """Large upload + download, direct, through the gateway and through each reference; the gateway's RSS growth.

    The order turns by one place each round, so no target always follows the same one (the page cache, MLflow's
    idle threads and the pooled connections are left as the one before left them).
    """
    targets = (direct, gateway, *references)
    per_round: list[dict[str, dict[str, Any]]] = []
    for target in targets:
        fixtures(target)
    for round_index in range(rounds):
        measured = {}
        turn = round_index % len(targets)
        for target in targets[turn:] + targets[:turn]:
            result: dict[str, Any] = transfer(target, fixtures(target), size, f"large-{target.name}.bin")
            measured[target.name] = result
            rss = ""
            if target is gateway:
                rss = (
                    f"  RSS +{fmt(result.get('upload_rss_growth_mb', math.nan), 1)} / "
                    f"+{fmt(result.get('download_rss_growth_mb', math.nan), 1)} MB"
                )
            log(
                f"  [artifacts] round {round_index + 1} {target.name:10} "
                f"PUT {fmt(result.get('upload_mb_s', math.nan), 1)} MB/s  "
                f"GET {fmt(result.get('download_mb_s', math.nan), 1)} MB/s{rss}  errors {result['errors']}"
            )
        per_round.append(measured)

    def med(target: Target, key: str) -> float:
        return median([r[target.name].get(key, math.nan) for r in per_round])

    growth = [
        r[gateway.name].get(key, math.nan)
        for r in per_round
        for key in ("upload_rss_growth_mb", "download_rss_growth_mb")
    ]
    summary: dict[str, dict[str, Any]] = {
        target.name: {
            "upload_mb_s": med(target, "upload_mb_s"),
            "download_mb_s": med(target, "download_mb_s"),
            "errors": sum(r[target.name]["errors"] for r in per_round),
            "error_samples": [s for r in per_round for s in r[target.name]["error_samples"]][:5],
        }
        for target in targets
    }
    summary[gateway.name]["upload_rss_growth_mb"] = med(gateway, "upload_rss_growth_mb")
    summary[gateway.name]["download_rss_growth_mb"] = med(gateway, "download_rss_growth_mb")
    for middle in (gateway, *references):  # the process in the middle is charged as "gateway" (bench/run.py)
        for direction in ("upload", "download"):
            per_gb = [
                r[middle.name].get(f"{direction}_cpu_s", {}).get("gateway", math.nan) / (size / 1e9) for r in per_round
            ]
            summary[middle.name][f"{direction}_gateway_cpu_s_per_gb"] = median(per_gb)
    summary[gateway.name]["max_rss_growth_mb"] = max((g for g in growth if not math.isnan(g)), default=math.nan)

    def ratios(target: Target) -> dict[str, float]:
        return {
            direction: median(transfer_ratios(per_round, direct.name, target.name, f"{direction}_mb_s"))
            for direction in ("upload", "download")
        }

    return {
        "baseline": direct.name,
        "candidate": gateway.name,
        "references": [target.name for target in references],
        "bytes": size,
        "rounds": per_round,
        "summary": summary,
        "ratios": ratios(gateway),
        "reference_ratios": {target.name: ratios(target) for target in references},
    }
