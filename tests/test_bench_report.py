"""The benchmark's report (`bench.report`): medians judged against the targets, single rounds shown beside them."""

from __future__ import annotations

from typing import Any

from bench.report import checks_for, render

_META = {
    "started": "2026-11-29T00:00:00+00:00",
    "commit": "abc1234",
    "mlflow": "3.17.2",
    "cpus": 2,
    "loadavg_start": [0.1],
    "loadavg_end": [0.2],
    "quick": False,
    "seconds": 10.0,
}


def _measured(p50_ms: float, ops_per_s: float) -> dict[str, Any]:
    cpu: dict[str, float] = {}
    return {
        "c1": {"p50_ms": p50_ms, "p99_ms": p50_ms * 2, "cpu_ms_per_op": cpu, "errors": 0},
        "c8": {"ops_per_s": ops_per_s, "p50_ms": p50_ms * 4, "cpu_ms_per_op": cpu, "errors": 0},
    }


def _summary(p50_ms: float, ops_per_s: float) -> dict[str, Any]:
    return {
        "p50_ms": p50_ms,
        "p99_ms": p50_ms * 2,
        "ops_per_s": ops_per_s,
        "c8_p50_ms": p50_ms * 4,
        "cpu_ms_per_op_c1": {},
        "cpu_ms_per_op_c8": {},
        "errors": 0,
        "error_samples": [],
    }


def _gateway_result() -> dict[str, Any]:
    """Three rounds in which the gateway took 1.1x, 1.3x and 1.2x the direct p50, and 0.95x, 0.85x, 0.9x the ops/s."""
    rounds = [
        {"mlflow": _measured(10.0, 100.0), "gateway": _measured(11.0, 95.0)},
        {"mlflow": _measured(10.0, 100.0), "gateway": _measured(13.0, 85.0)},
        {"mlflow": _measured(10.0, 100.0), "gateway": _measured(12.0, 90.0)},
    ]
    workload = {
        "rounds": rounds,
        "summary": {"mlflow": _summary(10.0, 100.0), "gateway": _summary(12.0, 90.0)},
        "ratios": {"p50": 1.2, "p99": 1.2, "ops_per_s": 0.9},
        "reference_ratios": {},
    }
    return {
        "baseline": "mlflow",
        "candidate": "gateway",
        "references": [],
        "plan": {"rounds": 3, "concurrency": 8},
        "workloads": {"search": workload},
    }


def test_targets_are_judged_on_the_median_and_the_single_rounds_are_shown_beside_it() -> None:
    results = {"gateway": _gateway_result()}
    checks = checks_for(results)

    p50 = next(check for check in checks if check["metric"] == "p50 ms c=1")
    throughput = next(check for check in checks if check["metric"] == "ops/s c=8")
    assert (p50["met"], throughput["met"]) == (False, True)  # 1.2x against <=1.15x; 0.9x against >=0.9x
    assert p50["spread"] == (1.1, 1.3)
    assert throughput["spread"] == (0.85, 0.95)
    report = render(_META, results, checks)
    p50_line = next(line for line in report.splitlines() if "p50 ms c=1" in line)
    assert "1.20x" in p50_line
    assert "1.10x-1.30x" in p50_line
    assert "0.85x-0.95x" in next(line for line in report.splitlines() if "ops/s c=8" in line)


def test_a_single_round_has_no_spread_to_show() -> None:
    result = _gateway_result()
    workload = result["workloads"]["search"]
    workload["rounds"] = workload["rounds"][:1]

    checks = checks_for({"gateway": result})

    assert all(check["spread"] is None for check in checks)


def test_each_large_transfer_ratio_carries_its_single_rounds() -> None:
    """Three rounds of 500 MB, direct and through the gateway; one download failed and is left out of its spread."""

    def transfer(upload_mb_s: float, download_mb_s: float | None) -> dict[str, Any]:
        measured: dict[str, Any] = {"upload_mb_s": upload_mb_s, "errors": 0}
        if download_mb_s is not None:
            measured["download_mb_s"] = download_mb_s
        return measured

    rounds = [
        {"mlflow": transfer(100.0, 200.0), "gateway": transfer(80.0, 220.0)},
        {"mlflow": transfer(100.0, 200.0), "gateway": transfer(95.0, None)},
        {"mlflow": transfer(100.0, 200.0), "gateway": transfer(90.0, 180.0)},
    ]
    side = {"errors": 0, "error_samples": [], "upload_gateway_cpu_s_per_gb": 1.0, "download_gateway_cpu_s_per_gb": 1.0}
    result = {
        "baseline": "mlflow",
        "candidate": "gateway",
        "references": [],
        "bytes": 500_000_000,
        "rounds": rounds,
        "summary": {
            "mlflow": {**side, "upload_mb_s": 100.0, "download_mb_s": 200.0},
            "gateway": {
                **side,
                "upload_mb_s": 90.0,
                "download_mb_s": 200.0,
                "upload_rss_growth_mb": 1.0,
                "download_rss_growth_mb": 1.0,
                "max_rss_growth_mb": 1.0,
            },
        },
        "ratios": {"upload": 0.9, "download": 1.0},
        "reference_ratios": {},
    }

    checks = checks_for({"artifacts": result})

    spreads = {check["workload"]: check["spread"] for check in checks if check["metric"] == "MB/s"}
    assert spreads == {"500 MB PUT": (0.8, 0.95), "500 MB GET": (0.9, 1.1)}
