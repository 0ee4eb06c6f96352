"""Which experiment each run belongs to, remembered for MLflow's permission checks; part of `hokusai.mlflow_auth`.

Before any call on a run (log-metric, log-batch, set-tag, ...) MLflow's auth app fetches the whole run (params,
metrics, tags, inputs) with `_fetch_or_none(tracking_store.get_run, run_id)`, only to read `run.info.experiment_id`
(the one use of that fetch in 3.17.2); the fetch cost about as much as logging the metric. A run never moves to
another experiment and run ids are never reused, so the answer is kept per run id: later checks get a `Run` that
carries the first fetch's `info` and no data. Runs that do not exist are never remembered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# A `RunInfo` takes about 600 bytes (tracemalloc): at most ~6 MB per MLflow worker. A full cache is emptied and
# refills from the runs in use.
RUN_CACHE_MAX_ENTRIES = 10_000


def remember_run_experiments(original: Callable[[Callable[[str], Any], str], Any]) -> Callable[..., Any]:
    from mlflow.entities import Run, RunData

    run_infos: dict[str, Any] = {}

    def fetch_or_none(fetch: Callable[[str], Any], resource_id: str) -> Any:
        if getattr(fetch, "__name__", None) != "get_run":
            return original(fetch, resource_id)
        info = run_infos.get(resource_id)
        if info is not None:
            return Run(run_info=info, run_data=RunData())
        run = original(fetch, resource_id)
        if run is not None:
            if len(run_infos) >= RUN_CACHE_MAX_ENTRIES:
                run_infos.clear()
            run_infos[resource_id] = run.info
        return run

    fetch_or_none._hokusai_wrapped = True  # type: ignore[attr-defined]
    return fetch_or_none


def install_run_cache(mlflow_auth_app: Any) -> None:
    original = mlflow_auth_app._fetch_or_none
    if not getattr(original, "_hokusai_wrapped", False):
        mlflow_auth_app._fetch_or_none = remember_run_experiments(original)
