"""Scripts for the stock `mlflow` client, run in a fresh interpreter by the live tests, and the summary they print."""

from __future__ import annotations

import json
import subprocess
import textwrap
from typing import Any

SUMMARY_MARK = "SUMMARY "
CLIENT_TIMEOUT = 240.0

FULL_WORKFLOW = textwrap.dedent(
    """
    import json, os, sys, tempfile
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LinearRegression

    stem = sys.argv[1]
    out = {}
    experiment_id = mlflow.set_experiment(stem + "-exp").experiment_id
    out["experiment_id"] = experiment_id
    X = np.arange(20, dtype=float).reshape(-1, 2)
    y = X @ np.array([1.5, -2.0]) + 0.5
    model = LinearRegression().fit(X, y)
    with mlflow.start_run() as run:
        mlflow.log_params({"alpha": 0.1, "solver": "lsq"})
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "notes.txt")
            with open(path, "w") as handle:
                handle.write("hello artifact " + stem)
            mlflow.log_artifact(path, artifact_path="docs")
        info = mlflow.sklearn.log_model(model, name="model", input_example=X[:2])
    out["run_id"] = run.info.run_id
    out["user_id"] = run.info.user_id
    version = mlflow.register_model(info.model_uri, stem + "-model")
    out["version"] = str(version.version)
    loaded = mlflow.pyfunc.load_model("models:/" + stem + "-model/1")
    out["prediction"] = [round(float(v), 6) for v in loaded.predict(X[:2])]
    out["expected"] = [round(float(v), 6) for v in model.predict(X[:2])]
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="docs/notes.txt", dst_path=tmp
        )
        out["artifact_text"] = open(local).read()
    runs = mlflow.search_runs(experiment_ids=[experiment_id], output_format="list")
    out["searched_run_ids"] = [r.info.run_id for r in runs]
    client = MlflowClient()
    fetched = client.get_run(run.info.run_id)
    out["params"] = fetched.data.params
    out["loss_history"] = [m.value for m in client.get_metric_history(run.info.run_id, "loss")]

    @mlflow.trace(name=stem + "-span")
    def traced(x):
        return x * 2

    out["traced"] = traced(21)
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces(locations=[experiment_id], return_type="list")
    out["trace_span_names"] = sorted({span.name for trace in traces for span in trace.data.spans})
    print("SUMMARY " + json.dumps(out), flush=True)
    """
)


def client_summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON a script printed last after `SUMMARY `; the script must have succeeded."""
    lines = [line for line in result.stdout.splitlines() if line.startswith(SUMMARY_MARK)]
    assert result.returncode == 0 and lines, f"client failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return json.loads(lines[-1][len(SUMMARY_MARK) :])
