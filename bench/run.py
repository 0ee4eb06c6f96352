"""`python -m bench.run [--quick] [--only PHASE[,PHASE]]`: the Hokusai benchmarks, as ratios against direct MLflow.

Phases (in this order): keys, gateway, artifacts, identity, basic-auth. Servers are started when a phase first needs
them and stopped as soon as no later phase does; all of them are stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.phases import Plan, compare, compare_transfers, log
from bench.report import checks_for, render
from bench.servers import (
    Server,
    start_basic_auth,
    start_floor_proxy,
    start_hokusai,
    start_plain_mlflow,
    start_tcp_relay,
)
from bench.workloads import Fixture, Target, prepare

PHASES = ("keys", "gateway", "artifacts", "identity", "basic-auth")
NEEDS: dict[str, set[str]] = {
    "keys": set(),
    "gateway": {"mlflow", "gateway", "floor"},
    "artifacts": {"mlflow", "gateway", "relay"},
    "identity": {"mlflow", "hokusai"},
    "basic-auth": {"hokusai", "basic-auth"},
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
_STOP_ORDER = ("gateway", "floor", "relay", "hokusai", "basic-auth", "mlflow")


class Servers:
    """Lazily started servers, keyed by role; `release` stops the ones no remaining phase needs."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self.running: dict[str, Server] = {}
        self.startup: dict[str, dict[str, str]] = {}
        self._fixtures: dict[str, Fixture] = {}

    def get(self, role: str) -> Server:
        if role not in self.running:
            log(f"starting {role} ...")
            server = self._start(role)
            self.running[role] = server
            server.info["idle_rss_mb"] = f"{server.family_rss_mb():.0f}"
            self.startup[role] = {k: v for k, v in server.info.items() if k not in ("key", "authorization")}
            log(f"  {role} ready on {server.url} in {server.info.get('startup_seconds')} s")
        return self.running[role]

    def _start(self, role: str) -> Server:
        if role == "mlflow":
            return start_plain_mlflow(self._workdir / "mlflow-plain")
        if role == "gateway":
            return start_hokusai(self._workdir / "hokusai-none", "hokusai-none", mlflow_url=self.get("mlflow").url)
        if role == "floor":
            return start_floor_proxy(self._workdir / "floor", self.get("mlflow").url)
        if role == "relay":
            return start_tcp_relay(self._workdir / "relay", self.get("mlflow"))
        if role == "hokusai":
            return start_hokusai(self._workdir / "hokusai-embedded", "hokusai-embedded")
        if role == "basic-auth":
            return start_basic_auth(self._workdir / "mlflow-basic-auth")
        raise ValueError(role)

    def target(self, role: str) -> Target:
        server = self.get(role)
        if role == "mlflow":
            return Target("mlflow", server.url, cpu=(("mlflow", server.pid, True),))
        if role == "basic-auth":
            return Target(
                role, server.url, {"Authorization": server.info["authorization"]}, cpu=(("mlflow", server.pid, True),)
            )
        if role in ("floor", "relay"):  # the process in the middle, like the gateway's: charged as "gateway"
            cpu = (("gateway", server.pid, False), ("mlflow", self.get("mlflow").pid, True))
            base = server.url + ("/api/mlflow" if role == "floor" else "")
            return Target(role, base, pid=server.pid, cpu=cpu)
        headers = {"Authorization": f"Bearer {server.info['key']}"}
        if role == "gateway":
            upstream = self.get("mlflow").pid
            cpu = (("gateway", server.pid, False), ("mlflow", upstream, True))
        else:  # the embedded MLflow is the child of `hokusai server`
            cpu = (("gateway", server.pid, False), *(("mlflow", pid, True) for pid in server.child_pids()))
        return Target(role, server.url + "/api/mlflow", headers, pid=server.pid, cpu=cpu)

    def fixture(self, target: Target) -> Fixture:
        if target.name not in self._fixtures:
            self._fixtures[target.name] = prepare(target)
        return self._fixtures[target.name]

    def release(self, keep: set[str]) -> None:
        # The gateway and the floor front the plain MLflow: stop them first.
        for role in _STOP_ORDER:
            if role in self.running and role not in keep:
                self.stop(role)

    def stop(self, role: str) -> None:
        server = self.running.pop(role)
        log(f"stopping {role} (pid {server.pid})")
        server.stop()

    def stop_all(self) -> None:
        for role in _STOP_ORDER:
            if role in self.running:
                with contextlib.suppress(Exception):
                    self.stop(role)


# One 500 MB download runs up to ~30% faster or slower than the next over the same path, direct or relayed: MLflow's
# CPU per byte follows how the scheduler places its two threads beside the reader (docs/architecture.md, "Large
# artifacts"). Resampling 59 measured rounds put a 7-round median below 0.85x one time in ten at a true 0.97x;
# 15 rounds (about 11 s each, with the relay) bring that to about 3%.
TRANSFER_ROUNDS = 15
# Single c=8 rounds of the gateway phase move by far more than the gateway costs: over the 30 rounds of six runs on
# 2026-11-29, the 64 KiB round trip's per-round ratio had a median of 0.93x (the bare hop's: 0.93x) and a standard
# deviation of 0.08. Resampling those rounds put a 5-round median below 0.9x 15% of the time, a 15-round one 5%.
GATEWAY_ROUNDS = 15


def plans(quick: bool, rounds: int) -> dict[str, Any]:
    # basic-auth spends ~70 ms of scrypt per hash and 1-4 hashes per request: few requests there.
    if quick:
        small = Plan(rounds, {"search": 30, "run": 15, "artifact": 25}, throughput_seconds=1.5, warmup=5)
        tiny = Plan(rounds, {"search": 3, "run": 2, "artifact": 3}, throughput_seconds=1.0, warmup=1)
        return {
            "small": small,
            "gateway": small,
            "basic-auth": tiny,
            "artifact_bytes": 100 * 1000 * 1000,
            "transfer_rounds": rounds,
        }
    small = Plan(rounds, {"search": 100, "run": 50, "artifact": 80}, throughput_seconds=2.5, warmup=15)
    tiny = Plan(rounds, {"search": 5, "run": 3, "artifact": 5}, throughput_seconds=1.5, warmup=2)
    return {
        "small": small,
        "gateway": replace(small, rounds=max(rounds, GATEWAY_ROUNDS)),
        "basic-auth": tiny,
        "artifact_bytes": 500 * 1000 * 1000,
        "transfer_rounds": max(rounds, TRANSFER_ROUNDS),
    }


def run_phase(phase: str, servers: Servers, args: argparse.Namespace, plan: dict[str, Any]) -> dict[str, Any]:
    if phase == "keys":
        from bench.keys import run_keys

        result = run_keys(quick=args.quick, rounds=args.rounds)
        log(
            f"  [keys] cached {result['cached_per_cpu_s']:,.0f}/CPU-s ({result['cached_us']:.2f} us), "
            f"uncached {result['uncached_per_cpu_s']:,.0f}/CPU-s ({result['uncached_us']:.0f} us)"
        )
        return result
    fixture: Callable[[Target], Fixture] = servers.fixture
    if phase == "gateway":
        direct, gateway, floor = servers.target("mlflow"), servers.target("gateway"), servers.target("floor")
        return compare(phase, direct, gateway, fixture, plan["gateway"], references=(floor,))
    if phase == "artifacts":
        direct, gateway, relay = servers.target("mlflow"), servers.target("gateway"), servers.target("relay")
        return compare_transfers(
            direct, gateway, fixture, plan["artifact_bytes"], plan["transfer_rounds"], references=(relay,)
        )
    if phase == "identity":
        return compare(phase, servers.target("mlflow"), servers.target("hokusai"), fixture, plan["small"])
    if phase == "basic-auth":
        return compare(phase, servers.target("hokusai"), servers.target("basic-auth"), fixture, plan["basic-auth"])
    raise ValueError(phase)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests, 100 MB instead of 500 MB")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PHASE",
        help=f"run only these phases (repeat or comma-separate): {', '.join(PHASES)}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help=(
            f"interleaved rounds per comparison (default 3; the gateway phase at least {GATEWAY_ROUNDS}, "
            f"500 MB transfers at least {TRANSFER_ROUNDS})"
        ),
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, databases)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    only = [p.strip() for item in args.only for p in item.split(",") if p.strip()]
    unknown = [p for p in only if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {unknown}; choose from {', '.join(PHASES)}")
    args.phases = [p for p in PHASES if not only or p in only]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10).stdout
        return out + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _raise_on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    plan = plans(args.quick, args.rounds)
    started = datetime.now(UTC)
    meta: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "rounds": args.rounds,
        "phases": args.phases,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "mlflow": importlib.metadata.version("mlflow"),
        "commit": _git_commit(),
    }
    results: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="hokusai-bench-"))
    servers = Servers(workdir)
    clock = time.monotonic()
    failed: str | None = None
    try:
        for index, phase in enumerate(args.phases):
            log(f"== {phase} ==")
            phase_started = time.monotonic()
            try:
                results[phase] = run_phase(phase, servers, args, plan)
            except Exception as exc:
                failed = f"{phase}: {type(exc).__name__}: {exc}"
                log(f"phase {phase} failed: {failed}")
                results[phase] = {"failed": failed}
            results[phase]["seconds"] = round(time.monotonic() - phase_started, 1)
            later = set().union(*(NEEDS[p] for p in args.phases[index + 1 :]))
            servers.release(later)
    finally:
        servers.stop_all()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["seconds"] = round(time.monotonic() - clock, 1)
    meta["loadavg_end"] = os.getloadavg()
    meta["servers"] = servers.startup
    checks = checks_for(results)
    document = {"meta": meta, "results": results, "checks": checks}
    print(render(meta, results, checks))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2, default=str, allow_nan=True) + "\n")
    print(f"\nJSON: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
