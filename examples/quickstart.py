"""Train a tiny model, log it to MLflow and register it as a tokenized model.

Usage::

    python examples/quickstart.py [MODEL_NAME] [TOKEN_ID]

Against the platform, set HOKUSAI_API_KEY and HOKUSAI_API_URL (or run `hokusai login`); MLflow then logs
through the Hokusai API with the same key. Without a server, set HOKUSAI_MOCK_MODE=true: runs and models go
to a local SQLite store under $HOKUSAI_HOME/mock, their artifacts to $HOKUSAI_HOME/mock/artifacts.
Running it twice with the same name and token registers a new version of the same model. Model names and token
ids are platform-wide: a second user passes names of their own.
"""

from __future__ import annotations

import os
import sys

import mlflow
import sklearn
from mlflow.models import infer_signature
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

import hokusai
from hokusai import ModelRegistry


def main(argv: list[str]) -> None:
    model_name = argv[1] if len(argv) > 1 else os.environ.get("QUICKSTART_MODEL_NAME", "quickstart-classifier")
    token_id = argv[2] if len(argv) > 2 else os.environ.get("QUICKSTART_TOKEN_ID", "QUICKSTART")

    # Points MLflow at the platform (or at the local store in mock mode) before the first MLflow call.
    hokusai.setup()
    # No experiment is named: on the platform a bare run lands in the caller's own "Default (<owner>)" experiment.
    # A named one is found by its name, whoever created it, and only its creator may write to it, so a fixed name
    # here would work for the first user and refuse everyone after.

    features, labels = make_classification(n_samples=200, n_features=8, random_state=0)
    x_train, x_test, y_train, y_test = train_test_split(features, labels, random_state=0)
    with mlflow.start_run() as run:
        model = LogisticRegression(max_iter=200).fit(x_train, y_train)
        accuracy = float(accuracy_score(y_test, model.predict(x_test)))
        mlflow.log_metric("accuracy", accuracy)
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x_train, model.predict(x_train)),
            # Stated, not inferred: inference loads the model in a subprocess and takes seconds.
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
        )

    with ModelRegistry() as registry:
        registered = registry.register_tokenized_model(
            model_uri=f"runs:/{run.info.run_id}/model",
            model_name=model_name,
            token_id=token_id,
            metric_name="accuracy",
            baseline_value=accuracy,
        )
    print(f"Registered {registered.model_name} version {registered.version} for token {registered.token_id}")
    print(f"  accuracy baseline: {registered.baseline_value:.4f}")
    print(f"  model uri: {registered.model_uri} (source {registered.source})")
    for warning in registered.warnings:
        print(f"  warning: {warning}")


if __name__ == "__main__":
    main(sys.argv)
