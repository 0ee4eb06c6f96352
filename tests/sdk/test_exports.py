from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import hokusai
import hokusai.errors

EXPECTED = [
    "BaselineEntry",
    "ErrorCode",
    "HokusaiAPIError",
    "HokusaiAuthError",
    "HokusaiConfigurationError",
    "HokusaiConflictError",
    "HokusaiConnectionError",
    "HokusaiError",
    "HokusaiInvalidRequestError",
    "HokusaiKeyMismatchWarning",
    "HokusaiNotFoundError",
    "HokusaiPermissionError",
    "HokusaiRateLimitError",
    "HokusaiRegistrationWarning",
    "HokusaiValidationError",
    "ModelRegistry",
    "TokenClaim",
    "TokenizedModel",
    "__version__",
    "setup",
]


def test_all_is_the_sorted_public_surface() -> None:
    assert hokusai.__all__ == EXPECTED == sorted(EXPECTED)


def test_every_error_class_is_exported() -> None:
    classes = {name for name in hokusai.errors.__all__ if isinstance(getattr(hokusai.errors, name), type)}
    assert classes <= set(hokusai.__all__)
    for name in classes:
        assert getattr(hokusai, name) is getattr(hokusai.errors, name)


def test_the_layer_names_an_error_may_carry_are_in_hokusai_errors() -> None:
    layers = {name: getattr(hokusai.errors, name) for name in hokusai.errors.__all__ if name.startswith("LAYER_")}
    assert layers == {"LAYER_API": "hokusai-api", "LAYER_LOCAL": "local", "LAYER_MLFLOW": "mlflow", "LAYER_SDK": "sdk"}


@pytest.mark.parametrize("name", EXPECTED)
def test_every_name_resolves(name: str) -> None:
    assert getattr(hokusai, name) is not None


def test_supported_import_paths() -> None:
    from hokusai import ModelRegistry, setup
    from hokusai._registry import ModelRegistry as Implementation
    from hokusai.config import get_mlflow_auth_status, setup as config_setup, setup_mlflow_auth
    from hokusai.models import BaselineEntry, TokenizedModel

    assert ModelRegistry is Implementation and setup is config_setup
    assert callable(get_mlflow_auth_status) and callable(setup_mlflow_auth)
    assert hokusai.TokenizedModel is TokenizedModel and hokusai.BaselineEntry is BaselineEntry


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'hokusai' has no attribute 'init'"):
        hokusai.init  # noqa: B018


def test_version_matches_the_package_metadata() -> None:
    assert hokusai.__version__ == "0.1.0" == importlib.metadata.version("hokusai-model-registry")


def test_import_is_light() -> None:
    code = "import sys, hokusai; print(sorted(m for m in ('mlflow', 'httpx', 'pydantic') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_error_code_is_explained_in_the_troubleshooting_table() -> None:
    table = (Path(__file__).parents[2] / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    missing = [code for code in hokusai.ErrorCode if not any(f"`{code}`" in row.split("|")[1] for row in rows)]
    assert missing == []
    assert all(code == code.name for code in hokusai.ErrorCode)  # what the server sends is what a caller compares
